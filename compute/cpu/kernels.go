package cpu

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/tandemllm/tandem/compute"
	"github.com/tandemllm/tandem/internal/half"
)

// tileRows is the number of weight rows (outputs) one tile kernel computes.
const tileRows = 4

// maxTileM bounds the activation rows of one tile kernel call.
const maxTileM = 8

// A tile kernel computes dst[i*ldd+r] = Σ_{k<kn} x[i*ldx+k]·w[r*ldw+k] for
// i < mb (fixed per function) and r < tileRows, or adds the sums to dst
// when add ≠ 0 (for callers that split kn). Strides are in elements.
// Assembly versions also prefetch four streams of cache lines at pf,
// pf+pfs, pf+2·pfs and pf+3·pfs (see nextTile); Go versions ignore them.
// Assembly versions only handle kn rounded down to a multiple of
// kernels.kStep; callers add the rest (see dotBlock).
type (
	tileF32Func func(x *float32, ldx int, w *float32, ldw, kn int, dst *float32, ldd int, pf uintptr, pfs int, add int)
	// tile16Func takes 16-bit weights, BF16 or F16 (one function per type),
	// widened to float32 in registers.
	tile16Func func(x *float32, ldx int, w *uint16, ldw, kn int, dst *float32, ldd int, pf uintptr, pfs int, add int)
)

// The gemvBands kernels compute dst[j+q·band] = Σ_{k<kn} x[k]·w[(j+q·band)·ldw+k]
// for j < count and q < tileRows: one activation row against four bands
// of weight rows, the weights read as four long sequential streams (see
// runBands). Assembly only; kn is a multiple of kernels.kStep.
type (
	gemvBandsF32Func func(x *float32, w *float32, ldw, kn, band, count int, dst *float32)
	gemvBands16Func  func(x *float32, w *uint16, ldw, kn, band, count int, dst *float32)
)

// The gemvBandsRows kernels are the gemvBands kernels of a decode batch:
// dst[i·ldd+j+q·band] = Σ_{k<kn} x[i·ldx+k]·w[(j+q·band)·ldw+k] for i < mb
// (fixed per function), j < count and q < batchBands (see runBands).
// Assembly only; kn is a multiple of kernels.kStep.
type (
	gemvBandsRowsF32Func func(x *float32, ldx int, w *float32, ldw, kn, band, count int, dst *float32, ldd int)
	gemvBandsRows16Func  func(x *float32, ldx int, w *uint16, ldw, kn, band, count int, dst *float32, ldd int)
	// gemvBandsRowsPairsFunc takes x rounded to bfloat16 and multiplies
	// pairs with VDPBF16PS (see rowBandsBF16Pairs); kn is a multiple of 32.
	gemvBandsRowsPairsFunc func(x *uint16, ldx int, w *uint16, ldw, kn, band, count int, dst *float32, ldd int)
)

// batchBands is the bands of the gemvBandsRows kernels (the generator's
// batchBands): 8·3 accumulators fill the AVX-512 registers beside the
// weights and x.
const batchBands = 3

// A gemmF32Func computes dst[i*ldd+j] = Σ_{k<kn} x[i*ldx+k]·p[k*panelRows+j]
// for i < mb (fixed per function) and j < panelRows, or adds the sums to
// dst when add ≠ 0. p is a packed panel: panelRows weight rows transposed
// so that each step's weights are contiguous (see packPanelF32). kn is a
// multiple of kernels.kStep. Meanwhile it prefetches into L2 as many bytes
// as x's mb rows hold from next on: the transposed path's next weight rows
// (see runTransposed); callers with nothing to fetch pass x.
type gemmF32Func func(x *float32, ldx int, p *float32, kn int, dst *float32, ldd int, add int, next *byte)

// gemm16Func is gemmF32Func with 16-bit rows x (bfloat16 for gemmBF16,
// IEEE halves for gemmF16), widened in registers: 16-bit weights as the
// broadcast operand of the transposed path.
type gemm16Func func(x *uint16, ldx int, p *float32, kn int, dst *float32, ldd int, add int, next *byte)

// gemmPairsFunc is gemmF32Func for bfloat16: x's rows and p's panel hold
// pairs of neighbouring inputs, p's as 32-bit words laid out as packF32
// lays out float32s, and the sums are of kp pairs' products
// (VDPBF16PS). The rows of the packed path's activations are x; the
// transposed path's weight rows are.
type gemmPairsFunc func(x *uint16, ldx int, p *uint32, kp int, dst *float32, ldd int, add int, next *byte)

// panelRows is the number of weight rows of one packed panel.
const panelRows = 32

// maxGemmM bounds the activation rows of one gemm kernel call.
const maxGemmM = 12

// accumFunc adds Σ_{j<n} p[j]·v[j*ldv : j*ldv+d] to dst[0:d]. Assembly
// versions handle d rounded down to a multiple of kernels.dStep.
type accumFunc func(dst, p, v *float32, ldv, n, d int)

// accum16Func is accumFunc over 16-bit values (a BF16 or F16 KV cache's,
// one function per type), widened in registers.
type accum16Func func(dst, p *float32, v *uint16, ldv, n, d int)

// kernels is one implementation of the inner loops.
type kernels struct {
	name  string
	maxM  int // largest mb with a tile kernel
	kStep int
	dStep int
	f32   [maxTileM + 1]tileF32Func
	bf16  [maxTileM + 1]tile16Func
	f16   [maxTileM + 1]tile16Func
	// widenF16 has LoadMat widen F16 weights to F32 once (the Go set,
	// whose F16 tiles convert every weight in Go as they read it: they
	// serve an F16 KV cache).
	widenF16 bool
	// bandsF32, bandsBF16 and bandsF16 are the one-row kernels of decode
	// (see runBands), nil in the Go set.
	bandsF32  gemvBandsF32Func
	bandsBF16 gemvBands16Func
	bandsF16  gemvBands16Func
	// rowBandsF32[mb], rowBandsBF16[mb] and rowBandsF16[mb] are the
	// kernels of decode batches of 2 to maxM rows (see runBands), nil
	// where there are none.
	rowBandsF32  [maxTileM + 1]gemvBandsRowsF32Func
	rowBandsBF16 [maxTileM + 1]gemvBandsRows16Func
	rowBandsF16  [maxTileM + 1]gemvBandsRows16Func
	// rowBandsBF16Pairs[mb] replaces rowBandsBF16[mb] where the CPU has
	// AVX512_BF16: the activations rounded to bfloat16, as on the AMX
	// path, so each instruction makes 32 products where an FMA makes 16
	// and no weight is widened (see usePairs).
	rowBandsBF16Pairs [maxTileM + 1]gemvBandsRowsPairsFunc
	accum             accumFunc
	// accumBF16 and accumF16 are accum for bfloat16 and IEEE half v; nil
	// in the Go set.
	accumBF16 accum16Func
	accumF16  accum16Func
	// The packed prefill path (see runPacked), nil where there is none:
	// gemmF32[mb] for mb ≤ gemmM, and packF32, which sets dst[k*panelRows+j]
	// = w[j*ldw+k] for j < 16 and k < kn rounded down to 16; packBF16 and
	// packF16 do the same from 16-bit weights, widening them as they go.
	gemmM    int
	gemmF32  [maxGemmM + 1]gemmF32Func
	gemmBF16 [maxGemmM + 1]gemm16Func
	gemmF16  [maxGemmM + 1]gemm16Func // gemmBF16 of IEEE halves
	// gemmPairs, where the CPU has AVX512_BF16, takes BF16 matrices of
	// whole 32-wide steps on the packed and transposed paths instead:
	// activations rounded to bfloat16, weights packed unwidened (see
	// usePairsGemm).
	gemmPairs [maxGemmM + 1]gemmPairsFunc
	// transposed16Min is the least bytes of a BF16 or F16 matrix whose
	// decode batches take the transposed path with gemmBF16 or gemmF16 (see
	// transposed16).
	transposed16Min int
	packF32         func(dst, w *float32, ldw, kn int)
	packBF16        func(dst *float32, w *uint16, ldw, kn int)
	packF16         func(dst *float32, w *uint16, ldw, kn int)
	// The AMX path for BF16 weights (see amx.go), nil where there is none:
	// amxBF16 multiplies amxRows activation rows by packed panels with the
	// AMX tiles.
	amxBF16   amxBF16Func
	amxStream amxStreamFunc
	// toBF16 rounds n values (rounded down to lanes) to bfloat16,
	// nearest-even: activations for the AMX path, keys and values for a
	// BF16 KV cache. Nil where there is no AVX-512.
	toBF16 func(dst *uint16, src *float32, n int)
	// toF16 rounds n values (rounded down to lanes) to IEEE halves,
	// nearest-even: keys and values for an F16 KV cache. Nil where there
	// is no AVX-512.
	toF16 func(dst *uint16, src *float32, n int)
	// tilePeak runs iters×4 independent 16×16×32 BF16 tile products, for
	// the machine measurements; nil without AMX.
	tilePeak func(iters int)
	// pairsPeak runs iters×fmaChains independent VDPBF16PS, for the
	// machine measurements; nil without the pairs kernels.
	pairsPeak func(iters int)
	// siluMul and gelu are vector forms of the SiLUMul and GELU loops for
	// n rounded down to a multiple of lanes; nil in the Go set.
	siluMul func(dst, gate, up *float32, n int)
	gelu    func(x *float32, n int)
	// expSum sets x[i] = e^(x[i]-shift) and returns their sum, for n
	// rounded down to a multiple of lanes; nil in the Go set.
	expSum func(x *float32, n int, shift float32) float32
	// max is the largest of x[:n], n rounded down to a multiple of lanes
	// and at least lanes; nil in the Go set.
	max func(x *float32, n int) float32
	// softmax is one online-softmax step over x[:n], n a multiple of
	// lanes and at least lanes: the largest of x becomes the reference if
	// it exceeds ref by more than margin, then x[i] = e^(x[i]-reference);
	// it returns the reference and the sum. nil in the Go set.
	softmax func(x *float32, n int, ref, margin float32) (float32, float32)
	// Elementwise loops for n rounded down to a multiple of lanes (see the
	// wrappers in elementwise.go), nil in the Go set: scale sets dst =
	// src·s, add dst = a + b, moments is Σ (x−c) and Σ (x−c)², scaleMul
	// sets dst = (x·s)·w, layerNormApply dst = ((x−mean)·r)·w + b, and
	// rotate turns the pairs (lo, hi) by the angles of (cos, sin).
	scale          func(dst, src *float32, n int, s float32)
	add            func(dst, a, b *float32, n int)
	moments        func(x *float32, n int, c float32) (s, ss float32)
	scaleMul       func(dst, x, w *float32, n int, s float32)
	layerNormApply func(dst, x, w, b *float32, n int, mean, r float32)
	rotate         func(lo, hi, cos, sin *float32, n int)
	// prefetch prefetches the lines of n bytes at p; nil in the Go set.
	prefetch func(p *float32, n int)
	// For the machine measurements: read streams n bytes from p (n rounded
	// down to 512) as four streams, fma runs iters×fmaChains independent FMAs of
	// lanes float32 lanes. Nil in the Go set.
	read  func(p *byte, n int)
	fma   func(iters int)
	lanes int
}

// kernelSets lists the kernel sets this machine can run, best first; "go"
// is always last.
func kernelSets() []*kernels {
	return append(archKernels(), goKernels())
}

func selectKernels(name string) (*kernels, error) {
	sets := kernelSets()
	if name == "" || name == "auto" {
		return sets[0], nil
	}
	for _, k := range sets {
		if k.name == name {
			return k, nil
		}
	}
	switch name {
	case "go", "avx2", "avx512", "avx512bf16", "amx":
		return nil, fmt.Errorf("%w: kernels %q on this CPU", compute.ErrUnsupported, name)
	}
	return nil, fmt.Errorf("cpu: unknown kernels %q (want auto, go, avx2, avx512, avx512bf16 or amx)", name)
}

func goKernels() *kernels {
	k := &kernels{name: "go", maxM: 4, kStep: 1, dStep: 1, accum: goAccum, widenF16: true}
	for mb := 1; mb <= k.maxM; mb++ {
		k.f32[mb] = func(x *float32, ldx int, w *float32, ldw, kn int, dst *float32, ldd int, _ uintptr, _ int, add int) {
			goTileF32(mb, x, ldx, w, ldw, kn, dst, ldd, add != 0)
		}
		k.bf16[mb] = func(x *float32, ldx int, w *uint16, ldw, kn int, dst *float32, ldd int, _ uintptr, _ int, add int) {
			goTile16(mb, dotBF16, x, ldx, w, ldw, kn, dst, ldd, add != 0)
		}
		k.f16[mb] = func(x *float32, ldx int, w *uint16, ldw, kn int, dst *float32, ldd int, _ uintptr, _ int, add int) {
			goTile16(mb, dotF16, x, ldx, w, ldw, kn, dst, ldd, add != 0)
		}
	}
	return k
}

func goTileF32(mb int, x *float32, ldx int, w *float32, ldw, kn int, dst *float32, ldd int, add bool) {
	xs := unsafe.Slice(x, (mb-1)*ldx+kn)
	ws := unsafe.Slice(w, (tileRows-1)*ldw+kn)
	ds := unsafe.Slice(dst, (mb-1)*ldd+tileRows)
	for i := range mb {
		xi := xs[i*ldx : i*ldx+kn]
		for r := range tileRows {
			v := dotF32(xi, ws[r*ldw:r*ldw+kn])
			if add {
				v += ds[i*ldd+r]
			}
			ds[i*ldd+r] = v
		}
	}
}

func goTile16(mb int, dot func([]float32, []uint16) float32, x *float32, ldx int, w *uint16, ldw, kn int, dst *float32, ldd int, add bool) {
	xs := unsafe.Slice(x, (mb-1)*ldx+kn)
	ws := unsafe.Slice(w, (tileRows-1)*ldw+kn)
	ds := unsafe.Slice(dst, (mb-1)*ldd+tileRows)
	for i := range mb {
		xi := xs[i*ldx : i*ldx+kn]
		for r := range tileRows {
			v := dot(xi, ws[r*ldw:r*ldw+kn])
			if add {
				v += ds[i*ldd+r]
			}
			ds[i*ldd+r] = v
		}
	}
}

// dotF32 is Σ a[i]·b[i] with four partial sums (len(b) ≥ len(a)).
func dotF32(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// dotBF16 is Σ a[i]·bf16(b[i]) with four partial sums.
func dotBF16(a []float32, b []uint16) float32 { return dotWiden(a, b, half.BF16ToFloat32) }

// dotF16 is Σ a[i]·f16(b[i]) with four partial sums.
func dotF16(a []float32, b []uint16) float32 { return dotWiden(a, b, half.F16ToFloat32) }

func dotWiden(a []float32, b []uint16, widen func(uint16) float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * widen(b[i])
		s1 += a[i+1] * widen(b[i+1])
		s2 += a[i+2] * widen(b[i+2])
		s3 += a[i+3] * widen(b[i+3])
	}
	for ; i < len(a); i++ {
		s0 += a[i] * widen(b[i])
	}
	return (s0 + s1) + (s2 + s3)
}

func goAccum(dst, p, v *float32, ldv, n, d int) {
	if n == 0 || d == 0 {
		return
	}
	ds := unsafe.Slice(dst, d)
	ps := unsafe.Slice(p, n)
	vs := unsafe.Slice(v, (n-1)*ldv+d)
	axpyRows(ds, ps, vs, ldv)
}

// axpyRows adds Σ_j p[j]·v[j*ldv : j*ldv+len(dst)] to dst.
func axpyRows(dst, p, v []float32, ldv int) {
	for j, pj := range p {
		vj := v[j*ldv : j*ldv+len(dst)]
		for i := range dst {
			dst[i] += pj * vj[i]
		}
	}
}

// expf is e^x in float32 with a relative error of a few ulp: a range
// reduction by ln 2 and a degree-6 polynomial (the classic Cephes expf
// coefficients). Arguments whose result would be denormal or overflow take
// the float64 path.
func expf(x float32) float32 {
	if !(x > -87 && x < 88) {
		return float32(math.Exp(float64(x)))
	}
	const (
		log2e = 1.44269504088896341
		ln2hi = 0.693359375
		ln2lo = -2.12194440e-4
	)
	n := float32(math.Floor(float64(x*log2e + 0.5)))
	r := x - n*ln2hi - n*ln2lo
	p := float32(1.9875691500e-4)
	p = p*r + 1.3981999507e-3
	p = p*r + 8.3334519073e-3
	p = p*r + 4.1665795894e-2
	p = p*r + 1.6666665459e-1
	p = p*r + 5.0000001201e-1
	y := p*r*r + r + 1
	return y * math.Float32frombits(uint32(int32(n)+127)<<23)
}

// axpyRows16 is axpyRows over 16-bit values, widened by widen.
func axpyRows16(dst, p []float32, v []uint16, ldv int, widen func(uint16) float32) {
	for j, pj := range p {
		vj := v[j*ldv : j*ldv+len(dst)]
		for i := range dst {
			dst[i] += pj * widen(vj[i])
		}
	}
}
