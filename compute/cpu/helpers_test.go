package cpu

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/tandemllm/tandem/compute"
	"github.com/tandemllm/tandem/internal/half"
)

// eachBackend runs f on a backend of every kernel set this machine
// supports, each with one and with three threads (three exercises the pool
// even on a two-core machine).
func eachBackend(t *testing.T, f func(t *testing.T, b *Backend)) {
	t.Helper()
	for _, k := range kernelSets() {
		for _, threads := range []int{1, 3} {
			t.Run(fmt.Sprintf("%s/t%d", k.name, threads), func(t *testing.T) {
				b, err := New(Options{Threads: threads, Kernels: k.name})
				if err != nil {
					t.Fatal(err)
				}
				defer b.Close()
				f(t, b)
			})
		}
	}
}

// withSmall16Transposed runs f on b as it is and, where b's kernels have
// gemmBF16 and gemmF16, again with every BF16 and F16 matrix on the
// transposed path (the production threshold only sends matrices of
// megabytes there).
func withSmall16Transposed(t *testing.T, b *Backend, f func(t *testing.T)) {
	t.Helper()
	f(t)
	if b.k.gemmBF16[1] == nil {
		return
	}
	k := *b.k
	k.transposed16Min = 0
	orig := b.k
	b.k = &k
	defer func() { b.k = orig }()
	t.Run("16-transposed", f)
}

func randVec(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

// encode stores vals as little-endian bytes of dtype, and returns the
// values as that dtype actually represents them (rounded for BF16/F16).
func encode(dt compute.DType, vals []float32) ([]byte, []float32) {
	out := make([]byte, len(vals)*dt.Size())
	exact := make([]float32, len(vals))
	for i, v := range vals {
		switch dt {
		case compute.F32:
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
			exact[i] = v
		case compute.BF16:
			h := half.BF16FromFloat32(v)
			binary.LittleEndian.PutUint16(out[2*i:], h)
			exact[i] = half.BF16ToFloat32(h)
		case compute.F16:
			h := half.F16FromFloat32(v)
			binary.LittleEndian.PutUint16(out[2*i:], h)
			exact[i] = half.F16ToFloat32(h)
		}
	}
	return out, exact
}

// onPairs reports whether t's MatMul runs on the pairs kernels.
func (t *matmulTask) onPairs() bool {
	return t.usePairs() || t.usePacked() && t.usePairsGemm()
}

// activations is the activations MatMul multiplies by a dt matrix of n×k
// on b with m rows: x itself, or x rounded to bfloat16 on the AMX and
// pairs paths.
func activations(b *Backend, dt compute.DType, m, n, k int, x []float32) []float32 {
	t := matmulTask{k: b.k, w: &mat{rows: n, cols: k, dtype: dt}, m: m}
	if !t.useAMX() && !t.useAMXStream() && !t.onPairs() {
		return x
	}
	r := make([]float32, len(x))
	for i, v := range x {
		r[i] = half.BF16ToFloat32(half.BF16FromFloat32(v))
	}
	return r
}

// closeTo reports whether got is within tol·scale+tol of want, where scale
// is the magnitude of the terms that were summed (so cancellation does not
// make a correct answer look wrong).
func closeTo(got float32, want, scale, tol float64) bool {
	return math.Abs(float64(got)-want) <= tol*scale+tol
}

func readAll(b *Backend, x compute.Buf) []float32 {
	out := make([]float32, x.Len())
	b.Read(out, x, 0)
	return out
}

func bufOf(b *Backend, v []float32) compute.Buf {
	x := b.Alloc(len(v))
	b.Write(x, 0, v)
	return x
}
