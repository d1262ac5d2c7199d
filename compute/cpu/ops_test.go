package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/tandemllm/tandem/compute"
)

// opTol is the relative tolerance of elementwise and norm ops against
// float64 references (a few float32 ulp plus expf's error).
const opTol = 2e-6

// opSizes has rows×width shapes below and above parallelMin.
var opSizes = []struct{ m, n int }{{1, 1}, {1, 7}, {3, 64}, {5, 33}, {17, 1024}, {300, 97}}

func checkClose(t *testing.T, what string, got []float32, want []float64, tol float64) {
	t.Helper()
	if len(got) < len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i, w := range want {
		if !closeTo(got[i], w, math.Abs(w), tol) {
			t.Fatalf("%s[%d] = %v, want %v", what, i, got[i], w)
		}
	}
}

func TestElementwise(t *testing.T) {
	silu := func(g, u float64) float64 { return g / (1 + math.Exp(-g)) * u }
	gelu := func(x float64) float64 {
		return 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x)))
	}
	tests := []struct {
		name string
		run  func(b *Backend, dst, a, c compute.Buf, n int)
		want func(a, c float64) float64
	}{
		{"Add", func(b *Backend, dst, a, c compute.Buf, n int) { b.Add(dst, a, c, n) },
			func(a, c float64) float64 { return a + c }},
		{"AddAliased", func(b *Backend, dst, a, c compute.Buf, n int) { b.Add(a, a, c, n); b.Add(dst, a, b.Alloc(n), n) },
			func(a, c float64) float64 { return a + c }},
		{"SiLUMul", func(b *Backend, dst, a, c compute.Buf, n int) { b.SiLUMul(dst, a, c, n) }, silu},
		{"SiLUMulAliased", func(b *Backend, dst, a, c compute.Buf, n int) { b.SiLUMul(a, a, c, n); b.Add(dst, a, b.Alloc(n), n) }, silu},
		{"GELU", func(b *Backend, dst, a, c compute.Buf, n int) { b.Add(dst, a, b.Alloc(n), n); b.GELU(dst, n) },
			func(a, _ float64) float64 { return gelu(a) }},
	}
	eachBackend(t, func(t *testing.T, b *Backend) {
		r := rand.New(rand.NewPCG(3, 4))
		for _, tt := range tests {
			for _, s := range opSizes {
				n := s.m * s.n
				a, c := randVec(r, n), randVec(r, n)
				for i := range a {
					a[i] *= 4 // reach the tails of the activations
				}
				dst := b.Alloc(n)
				tt.run(b, dst, bufOf(b, a), bufOf(b, c), n)
				want := make([]float64, n)
				for i := range want {
					want[i] = tt.want(float64(a[i]), float64(c[i]))
				}
				checkClose(t, fmt.Sprintf("%s n=%d", tt.name, n), readAll(b, dst), want, opTol)
			}
		}
	})
}

func TestExpf(t *testing.T) {
	for _, x := range []float32{-100, -87.5, -87, -20, -1, -1e-3, 0, 1e-7, 0.5, 1, 10, 50, 87.9, 88.5, 90} {
		want := math.Exp(float64(x))
		if want > math.MaxFloat32 {
			want = math.Inf(1)
		}
		if got := expf(x); !closeTo(got, want, want, 4e-7) && !(math.IsInf(want, 1) && math.IsInf(float64(got), 1)) {
			t.Errorf("expf(%v) = %v, want %v", x, got, want)
		}
	}
	if got := expf(float32(math.NaN())); got == got {
		t.Errorf("expf(NaN) = %v", got)
	}
}

func TestNorms(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *Backend) {
		r := rand.New(rand.NewPCG(5, 6))
		for _, s := range opSizes {
			for _, alias := range []bool{false, true} {
				x, w, bias := randVec(r, s.m*s.n), randVec(r, s.n), randVec(r, s.n)
				for i := range x {
					x[i] += 3 // a non-zero mean for LayerNorm
				}
				const eps = 1e-5
				wantRMS := make([]float64, len(x))
				wantLN := make([]float64, len(x))
				for i := range s.m {
					row := x[i*s.n : (i+1)*s.n]
					var ss, sum float64
					for _, v := range row {
						ss += float64(v) * float64(v)
						sum += float64(v)
					}
					mean := sum / float64(s.n)
					var vr float64
					for _, v := range row {
						vr += (float64(v) - mean) * (float64(v) - mean)
					}
					rms := math.Sqrt(ss/float64(s.n) + eps)
					std := math.Sqrt(vr/float64(s.n) + eps)
					for j, v := range row {
						wantRMS[i*s.n+j] = float64(v) / rms * float64(w[j])
						wantLN[i*s.n+j] = (float64(v)-mean)/std*float64(w[j]) + float64(bias[j])
					}
				}
				for _, op := range []string{"RMSNorm", "LayerNorm"} {
					xb := bufOf(b, x)
					dst := xb
					if !alias {
						dst = b.Alloc(len(x))
					}
					want := wantRMS
					if op == "RMSNorm" {
						b.RMSNorm(dst, xb, bufOf(b, w), s.m, s.n, eps)
					} else {
						b.LayerNorm(dst, xb, bufOf(b, w), bufOf(b, bias), s.m, s.n, eps)
						want = wantLN
					}
					// Absolute error is bounded by the row scale, not each value.
					got := readAll(b, dst)
					for i, wv := range want {
						if math.Abs(float64(got[i])-wv) > 1e-5*(1+math.Abs(float64(w[i%s.n]))) {
							t.Fatalf("%s %dx%d alias=%v: [%d] = %v, want %v", op, s.m, s.n, alias, i, got[i], wv)
						}
					}
				}
			}
		}
	})
}

// TestRoPE checks RoPE against float64 rotations, each shape in three
// calls: new positions, the same ones again (the backend reuses its
// angles) and the same with one changed (it must not).
func TestRoPE(t *testing.T) {
	shapes := []struct{ m, heads, hd int }{{1, 1, 2}, {3, 2, 8}, {5, 12, 64}, {40, 4, 128}, {70, 8, 64}}
	eachBackend(t, func(t *testing.T, b *Backend) {
		r := rand.New(rand.NewPCG(7, 8))
		for _, s := range shapes {
			w := s.heads * s.hd
			pos := make([]int32, s.m)
			for i := range pos {
				pos[i] = int32(r.IntN(4096))
			}
			inv := make([]float32, s.hd/2)
			for j := range inv {
				inv[j] = float32(math.Pow(10000, -2*float64(j)/float64(s.hd)))
			}
			for call := range 3 {
				if call == 2 {
					pos[s.m-1]++
				}
				x := randVec(r, s.m*w)
				xb := bufOf(b, x)
				b.RoPE(xb, s.m, s.heads, s.hd, pos, inv)
				want := make([]float64, len(x))
				for i := range s.m {
					for h := range s.heads {
						o := i*w + h*s.hd
						for j := range s.hd / 2 {
							sn, cs := math.Sincos(float64(float32(pos[i]) * inv[j]))
							a, c := float64(x[o+j]), float64(x[o+j+s.hd/2])
							want[o+j] = a*cs - c*sn
							want[o+j+s.hd/2] = c*cs + a*sn
						}
					}
				}
				got := readAll(b, xb)
				for i, wv := range want {
					if math.Abs(float64(got[i])-wv) > 1e-6*(1+math.Abs(wv)) {
						t.Fatalf("RoPE %+v, call %d: [%d] = %v, want %v", s, call, i, got[i], wv)
					}
				}
			}
		}
	})
}

func TestEmbedGatherAddBias(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *Backend) {
		r := rand.New(rand.NewPCG(9, 10))
		for _, dt := range []compute.DType{compute.F32, compute.BF16, compute.F16} {
			for _, s := range []struct{ vocab, n, ids int }{{5, 3, 1}, {50, 64, 7}, {300, 100, 400}} {
				raw, w := encode(dt, randVec(r, s.vocab*s.n))
				wm, err := b.LoadMat(dt, s.vocab, s.n, raw)
				if err != nil {
					t.Fatal(err)
				}
				ids := make([]int32, s.ids)
				for i := range ids {
					ids[i] = int32(r.IntN(s.vocab))
				}
				dst := b.Alloc(s.ids * s.n)
				b.Embed(dst, wm, ids)
				bias := randVec(r, s.n)
				b.AddBias(dst, bufOf(b, bias), s.ids)
				rows := []int32{int32(s.ids - 1), 0}
				g := b.Alloc(2 * s.n)
				b.Gather(g, dst, rows, s.n)
				got := readAll(b, g)
				for gi, row := range rows {
					for j := range s.n {
						want := w[int(ids[row])*s.n+j] + bias[j]
						if got[gi*s.n+j] != want {
							t.Fatalf("%v %+v: gathered row %d [%d] = %v, want %v", dt, s, gi, j, got[gi*s.n+j], want)
						}
					}
				}
			}
		}
	})
}

func TestViewWriteRead(t *testing.T) {
	b, err := New(Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	x := b.Alloc(10)
	v := b.View(x, 3, 4)
	if v.Len() != 4 {
		t.Fatalf("view Len = %d", v.Len())
	}
	b.Write(v, 1, []float32{7, 8})
	got := readAll(b, x)
	want := []float32{0, 0, 0, 0, 7, 8, 0, 0, 0, 0}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("after write through view: %v, want %v", got, want)
		}
	}
	tail := make([]float32, 2)
	b.Read(tail, v, 1)
	if tail[0] != 7 || tail[1] != 8 {
		t.Fatalf("Read through view = %v", tail)
	}
	// HostView is the same values in place: later writes show through,
	// and it cannot be appended into its neighbours.
	hv := b.HostView(v, 1, 2)
	b.Write(v, 2, []float32{9})
	if len(hv) != 2 || cap(hv) != 2 || hv[0] != 7 || hv[1] != 9 {
		t.Fatalf("HostView after a write = %v (cap %d), want [7 9] (cap 2)", hv, cap(hv))
	}
}
