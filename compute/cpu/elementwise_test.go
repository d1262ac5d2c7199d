package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/tandemllm/tandem/compute"
)

// TestElementwiseKernelsMatchGo runs every wrapper of elementwise.go with
// each assembly kernel set and with the Go set on lengths around the
// vector widths (the kernels take whole vectors, Go the tails), rows of
// 1, 3, 8 and 33 values among them. Adds, scalings and bfloat16 rounding
// must agree bit for bit; the sums and the fused multiply-adds within a
// few float32 ulps of the row's scale.
func TestElementwiseKernelsMatchGo(t *testing.T) {
	ref := goKernels()
	for _, k := range archKernels() {
		for _, n := range []int{1, 3, 7, 8, 15, 16, 17, 31, 33, 64, 100, 1000} {
			t.Run(fmt.Sprintf("%s/n%d", k.name, n), func(t *testing.T) {
				r := rand.New(rand.NewPCG(uint64(n), 9))
				x, y, w, b := randVec(r, n), randVec(r, n), randVec(r, n), randVec(r, n)
				for i := range x {
					x[i] += 3 // a mean away from zero, as LayerNorm's inputs have
				}
				exact := func(what string, f func(k *kernels, dst []float32)) {
					t.Helper()
					got, want := make([]float32, n), make([]float32, n)
					f(k, got)
					f(ref, want)
					for i := range want {
						if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
							t.Fatalf("%s[%d] = %v, the Go set's %v", what, i, got[i], want[i])
						}
					}
				}
				exact("scale", func(k *kernels, d []float32) { scaleF32(k, d, x, 0.37) })
				exact("add", func(k *kernels, d []float32) { addF32(k, d, x, y) })
				exact("scaleMul", func(k *kernels, d []float32) { scaleMulF32(k, d, x, w, 0.61) })
				close := func(what string, got, want, scale float64) {
					t.Helper()
					if math.Abs(got-want) > 1e-6*(scale+1) {
						t.Fatalf("%s = %v, the Go set's %v", what, got, want)
					}
				}
				for _, c := range []float32{0, 3} {
					s, ss := momentsF32(k, x, c)
					rs, rss := momentsF32(ref, x, c)
					close(fmt.Sprintf("Σ(x−%v)", c), float64(s), float64(rs), float64(rss))
					close(fmt.Sprintf("Σ(x−%v)²", c), float64(ss), float64(rss), float64(rss))
				}
				ln := func(k *kernels) []float32 {
					d := make([]float32, n)
					layerNormApplyF32(k, d, x, w, b, 3.1, 0.8)
					return d
				}
				gotLN := ln(k)
				for i, want := range ln(ref) {
					close(fmt.Sprintf("layerNormApply[%d]", i), float64(gotLN[i]), float64(want), math.Abs(float64(want)))
				}
				rot := func(k *kernels) (lo, hi []float32) {
					lo, hi = append([]float32(nil), x...), append([]float32(nil), y...)
					cos, sin := make([]float32, n), make([]float32, n)
					for i := range cos {
						s, c := math.Sincos(float64(i) * 0.1)
						cos[i], sin[i] = float32(c), float32(s)
					}
					rotateF32(k, lo, hi, cos, sin)
					return lo, hi
				}
				glo, ghi := rot(k)
				wlo, whi := rot(ref)
				for i := range wlo {
					close(fmt.Sprintf("rotate lo[%d]", i), float64(glo[i]), float64(wlo[i]), 4)
					close(fmt.Sprintf("rotate hi[%d]", i), float64(ghi[i]), float64(whi[i]), 4)
				}
				for _, dt := range []compute.DType{compute.BF16, compute.F16} {
					got, want := make([]uint16, n), make([]uint16, n)
					k.round16(dt, got, x)
					ref.round16(dt, want, x)
					for i := range want {
						if got[i] != want[i] {
							t.Fatalf("round16 to %v [%d] = %#04x, the Go set's %#04x", dt, i, got[i], want[i])
						}
					}
				}
			})
		}
	}
}
