package cpu

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/tandemllm/tandem/compute"
)

// matTol is the tolerance of MatMul relative to Σ|x·w|: float32 sums of up
// to a few thousand terms in any association order stay well inside it.
const matTol = 1e-5

func TestMatMul(t *testing.T) {
	shapes := []struct{ m, n, k int }{
		{1, 1, 1}, {1, 4, 16}, {1, 37, 33}, {2, 9, 100}, {3, 64, 64}, {4, 5, 7},
		{5, 12, 129}, {6, 40, 48}, {7, 3, 1000}, {8, 64, 1024}, {9, 17, 31}, {13, 100, 256},
		{8, 37, 2100}, {7, 9, 48}, {7, 5, 1500}, {16, 33, 520}, {15, 8, 64},
		{33, 70, 96}, {64, 36, 200}, {40, 20, 2100}, {25, 64, 48}, {100, 130, 1030},
		// Whole AMX tiles and panels, and partial ones of each.
		{32, 32, 32}, {64, 96, 64}, {65, 100, 96}, {40, 33, 2080}, {24, 50, 1024}, {72, 37, 2048}, {73, 40, 100},
		// The packed path on rows a multiple of 4 KiB long, read in place.
		{80, 40, 1024}, {90, 70, 2048},
		// One row by bands of rows (runBands) with rows and inputs past them,
		// and inputs past decodeXBudget.
		{1, 203, 97}, {1, 300, 2048}, {1, 40, 9000},
		// Batch 8 by bands (a band of rows each, or none), with rows past
		// the bands and inputs past the vectors.
		{8, 9, 31}, {8, 24, 16}, {8, 203, 97}, {8, 300, 2048}, {8, 40, 9000},
		// BF16 batches on the pairs kernels: whole 32-wide steps, rows past
		// the bands, activations past decodeXBudget.
		{2, 33, 32}, {3, 203, 96}, {5, 37, 160}, {7, 77, 512}, {14, 45, 96}, {16, 70, 64}, {8, 70, 4096},
	}
	dtypes := []compute.DType{compute.F32, compute.BF16, compute.F16}
	eachBackend(t, func(t *testing.T, b *Backend) {
		withSmall16Transposed(t, b, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			for _, s := range shapes {
				for _, dt := range dtypes {
					t.Run(fmt.Sprintf("%v/m%d_n%d_k%d", dt, s.m, s.n, s.k), func(t *testing.T) {
						raw, w := encode(dt, randVec(r, s.n*s.k))
						xv := randVec(r, s.m*s.k)
						wm, err := b.LoadMat(dt, s.n, s.k, raw)
						if err != nil {
							t.Fatal(err)
						}
						// Pre-fill dst with garbage: MatMul must overwrite, not add.
						dst := bufOf(b, randVec(r, s.m*s.n))
						b.MatMul(dst, bufOf(b, xv), wm, s.m)
						got := readAll(b, dst)
						x := activations(b, dt, s.m, s.n, s.k, xv)
						for i := range s.m {
							for j := range s.n {
								var want, scale float64
								for k := range s.k {
									p := float64(x[i*s.k+k]) * float64(w[j*s.k+k])
									want += p
									scale += math.Abs(p)
								}
								if g := got[i*s.n+j]; !closeTo(g, want, scale, matTol) {
									t.Fatalf("dst[%d,%d] = %v, want %v", i, j, g, want)
								}
							}
						}
					})
				}
			}
		})
	})
}

func TestLoadMat(t *testing.T) {
	b, err := New(Options{Threads: 1, Kernels: "go"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	tests := []struct {
		name       string
		dt         compute.DType
		rows, cols int
		bytes      int
		wantErr    error
	}{
		{"f32 ok", compute.F32, 2, 3, 24, nil},
		{"bf16 ok", compute.BF16, 2, 3, 12, nil},
		{"f16 ok", compute.F16, 3, 1, 6, nil},
		{"f32 short", compute.F32, 2, 3, 20, ErrBadMatrix},
		{"bf16 long", compute.BF16, 2, 3, 14, ErrBadMatrix},
		{"zero rows", compute.F32, 0, 3, 0, ErrBadMatrix},
		{"bad dtype", compute.DType(9), 1, 1, 4, compute.ErrUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := b.LoadMat(tt.dt, tt.rows, tt.cols, make([]byte, tt.bytes))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err == nil && (m.Rows() != tt.rows || m.Cols() != tt.cols) {
				t.Fatalf("shape [%d, %d]", m.Rows(), m.Cols())
			}
		})
	}
}

// TestLoadMatZeroCopy checks that aligned data is used in place and
// misaligned data copied, and that F16 becomes F32 only for the kernel set
// that widens it at load (the Go set).
func TestLoadMatZeroCopy(t *testing.T) {
	for _, k := range kernelSets() {
		t.Run(k.name, func(t *testing.T) {
			b, err := New(Options{Threads: 1, Kernels: k.name})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			f16 := !k.widenF16
			f16Type := compute.F32
			if f16 {
				f16Type = compute.F16
			}
			backing := make([]byte, 4*8+1)
			tests := []struct {
				dt       compute.DType
				data     []byte
				inPlace  bool
				reported compute.DType
			}{
				{compute.F32, backing[:32], true, compute.F32},
				{compute.F32, backing[1:33], false, compute.F32},
				{compute.BF16, backing[:16], true, compute.BF16},
				{compute.BF16, backing[1:17], false, compute.BF16},
				{compute.F16, backing[:16], f16, f16Type},
				{compute.F16, backing[1:17], false, f16Type},
			}
			for _, tt := range tests {
				m, err := b.LoadMat(tt.dt, 2, len(tt.data)/tt.dt.Size()/2, tt.data)
				if err != nil {
					t.Fatal(err)
				}
				mm := m.(*mat)
				var p unsafe.Pointer
				if mm.f32 != nil {
					p = unsafe.Pointer(&mm.f32[0])
				} else {
					p = unsafe.Pointer(&mm.u16[0])
				}
				if inPlace := p == unsafe.Pointer(&tt.data[0]); inPlace != tt.inPlace {
					t.Errorf("%v at %p: in place = %v, want %v", tt.dt, &tt.data[0], inPlace, tt.inPlace)
				}
				if m.DType() != tt.reported {
					t.Errorf("%v: DType() = %v, want %v", tt.dt, m.DType(), tt.reported)
				}
			}
		})
	}
}

// TestMatMul16Widened checks the 16-bit weight paths (tile kernels and
// the packed path, which widen in registers) against the same kernel set
// on the weights widened to F32 first: widening is exact and the order of
// additions is the same, so the results must be equal bit for bit. The
// shapes have batch 1, 3, 8, 32, 40 and 80 (decode by bands, with rows
// past them on the tile kernels, the transposed path and the packed
// path), inputs that are not a multiple of the vector width, and rows
// that leave part of a panel, each on the 16-bit transposed paths too
// (see withSmall16Transposed). (16-bit weights below transposed16Min take
// the packed path where F32 takes the transposed one, and there the sums'
// order differs in the rows past the last panel, so those batches are the
// 16-bit transposed paths' alone; and decode batches whose activations
// overflow decodeXBudget take the bands with F32 weights, the tile
// kernels with F16 ones and BF16 ones off the pairs kernels.)
func TestMatMul16Widened(t *testing.T) {
	shapes := []struct{ m, n, k int }{
		{1, 37, 33}, {3, 64, 100}, {8, 45, 1000}, {8, 203, 48}, {80, 70, 96}, {80, 129, 200}, {80, 96, 48}, {80, 96, 64},
		{32, 70, 96}, {40, 37, 200},
	}
	eachBackend(t, func(t *testing.T, b *Backend) {
		withSmall16Transposed(t, b, func(t *testing.T) {
			r := rand.New(rand.NewPCG(7, 8))
			for _, dt := range []compute.DType{compute.BF16, compute.F16} {
				for _, s := range shapes {
					t.Run(fmt.Sprintf("%v/m%d_n%d_k%d", dt, s.m, s.n, s.k), func(t *testing.T) {
						f32 := &matmulTask{k: b.k, w: &mat{rows: s.n, cols: s.k, dtype: compute.F32}, m: s.m}
						t16 := &matmulTask{k: b.k, w: &mat{rows: s.n, cols: s.k, dtype: dt}, m: s.m}
						if f32.usePacked() && s.m <= transposedMaxM && !t16.transposed16() {
							t.Skipf("F32 takes the transposed path here, %v the packed one", dt)
						}
						raw, widened := encode(dt, randVec(r, s.n*s.k))
						raw32, _ := encode(compute.F32, widened)
						w16, err := b.LoadMat(dt, s.n, s.k, raw)
						if err != nil {
							t.Fatal(err)
						}
						w32, err := b.LoadMat(compute.F32, s.n, s.k, raw32)
						if err != nil {
							t.Fatal(err)
						}
						xv := randVec(r, s.m*s.k)
						d16, d32 := b.Alloc(s.m*s.n), b.Alloc(s.m*s.n)
						b.MatMul(d16, bufOf(b, xv), w16, s.m)
						if xr := activations(b, dt, s.m, s.n, s.k, xv); &xr[0] != &xv[0] {
							// The AMX and pairs paths round the activations
							// and sum in their own order: the widened matrix
							// times the rounded activations agrees to rounding.
							b.MatMul(d32, bufOf(b, xr), w32, s.m)
							g16, g32 := readAll(b, d16), readAll(b, d32)
							for i := range g16 {
								var scale float64
								for k := range s.k {
									scale += math.Abs(float64(xr[i/s.n*s.k+k]) * float64(widened[i%s.n*s.k+k]))
								}
								if !closeTo(g16[i], float64(g32[i]), scale, matTol) {
									t.Fatalf("dst[%d,%d] = %v from %v weights on the AMX path, %v from the same widened to F32",
										i/s.n, i%s.n, g16[i], dt, g32[i])
								}
							}
							return
						}
						b.MatMul(d32, bufOf(b, xv), w32, s.m)
						g16, g32 := readAll(b, d16), readAll(b, d32)
						for i := range g16 {
							if math.Float32bits(g16[i]) != math.Float32bits(g32[i]) {
								t.Fatalf("dst[%d,%d] = %v from %v weights, %v from the same widened to F32",
									i/s.n, i%s.n, g16[i], dt, g32[i])
							}
						}
					})
				}
			}
		})
	})
}

// TestMatMulPathsAgree checks every kernel set against the Go kernels on
// the same data (odd shapes; batch 1, 3, 8 and 33), within the
// association-order tolerance of TestMatMul.
func TestMatMulPathsAgree(t *testing.T) {
	ref, err := New(Options{Threads: 1, Kernels: "go"})
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	shapes := []struct{ m, n, k int }{{1, 67, 129}, {3, 33, 47}, {8, 130, 1041}, {8, 130, 1000}, {33, 97, 272}, {33, 97, 288}}
	eachBackend(t, func(t *testing.T, b *Backend) {
		withSmall16Transposed(t, b, func(t *testing.T) {
			r := rand.New(rand.NewPCG(9, 10))
			for _, dt := range []compute.DType{compute.F32, compute.BF16, compute.F16} {
				for _, s := range shapes {
					t.Run(fmt.Sprintf("%v/m%d_n%d_k%d", dt, s.m, s.n, s.k), func(t *testing.T) {
						raw, w := encode(dt, randVec(r, s.n*s.k))
						xv := randVec(r, s.m*s.k)
						got := matMulOn(t, b, dt, s.m, s.n, s.k, raw, xv)
						xv = activations(b, dt, s.m, s.n, s.k, xv)
						want := matMulOn(t, ref, dt, s.m, s.n, s.k, raw, xv)
						for i := range got {
							var scale float64
							for k := range s.k {
								scale += math.Abs(float64(xv[i/s.n*s.k+k]) * float64(w[i%s.n*s.k+k]))
							}
							if !closeTo(got[i], float64(want[i]), scale, matTol) {
								t.Fatalf("dst[%d,%d] = %v, the Go kernels give %v", i/s.n, i%s.n, got[i], want[i])
							}
						}
					})
				}
			}
		})
	})
}

func matMulOn(t *testing.T, b *Backend, dt compute.DType, m, n, k int, raw []byte, x []float32) []float32 {
	t.Helper()
	w, err := b.LoadMat(dt, n, k, raw)
	if err != nil {
		t.Fatal(err)
	}
	dst := b.Alloc(m * n)
	b.MatMul(dst, bufOf(b, x), w, m)
	return readAll(b, dst)
}
