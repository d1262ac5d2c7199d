// Command asmgen generates the AVX2 and AVX-512 kernels of package
// compute/cpu with avo. It is a separate module so that the main module
// does not depend on avo; run it through go generate in compute/cpu.
package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// isa is one vector instruction set the kernels are generated for. Its
// kernels move float parameters and results with the SSE moves that avo's
// Load and Store emit only while the vector registers' upper halves are
// clean (before the first 256- or 512-bit instruction, after VZEROUPPER):
// on this project's Xeon an SSE move between AVX-512 loops made a softmax
// step four times slower.
type isa struct {
	name  string
	lanes int // float32 lanes per vector
	vec   func() reg.VecVirtual
	maxM  int // activation rows per tile kernel, bounded by the register file
	// splitM more rows are taken by kernels of two passes (see tile).
	splitM int
}

var isas = []isa{
	// AVX-512: 32 registers hold 4·6 accumulators, 4 weight vectors and x.
	{name: "AVX512", lanes: 16, vec: ZMM, maxM: 6, splitM: 2},
	// AVX2: 16 registers hold 4·2 accumulators, 4 weight vectors and x;
	// the reduction needs a few more, so 3 rows do not fit.
	{name: "AVX2", lanes: 8, vec: YMM, maxM: 2},
}

func log2(n int) int {
	l := 0
	for ; n > 1; n >>= 1 {
		l++
	}
	return l
}

// wkind is an element type of weights: float32 loaded as is, or a 16-bit
// type widened to float32 in registers as it is loaded.
type wkind struct {
	name   string // F32, BF16, F16
	gotype string // the Go pointer type of the weights
	size   int    // bytes per element
}

var (
	wF32  = wkind{"F32", "*float32", 4}
	wBF16 = wkind{"BF16", "*uint16", 2}
	wF16  = wkind{"F16", "*uint16", 2}
	// wkinds are every weight type the tile and pack kernels take.
	wkinds = []wkind{wF32, wBF16, wF16}
)

// loadW loads one vector of weights at src into dst as float32: BF16 is
// zero-extended to 32 bits and shifted left 16 (exact), F16 converted by
// VCVTPH2PS (F16C, exact).
func loadW(k wkind, src Mem, dst reg.VecVirtual) {
	switch k {
	case wBF16:
		VPMOVZXWD(src, dst)
		VPSLLD(U8(16), dst, dst)
	case wF16:
		VCVTPH2PS(src, dst)
	default:
		VMOVUPS(src, dst)
	}
}

func main() {
	ConstraintExpr("amd64")
	for _, is := range isas {
		for m := 1; m <= is.maxM+is.splitM; m++ {
			for _, k := range wkinds {
				tile(is, k, m)
			}
		}
		for _, k := range wkinds {
			gemvBands(is, k)
		}
		if is.lanes == 16 {
			for m := 2; m <= is.maxM+is.splitM; m++ {
				for _, k := range append(wkinds, wBF16Pairs) {
					gemvBandsRows(is, k, m, batchBands)
				}
			}
			for _, k := range []wkind{wF32, wBF16, wF16} {
				for m := 1; m <= gemmMaxM; m++ {
					gemm(is, k, m)
				}
			}
			for m := 1; m <= gemmMaxM; m++ {
				gemmPairs(is, m)
			}
			pairsPeak(is)
			for _, k := range wkinds {
				pack(is, k)
			}
			toBF16(is)
			toF16(is)
		}
		for _, k := range wkinds {
			accum(is, k)
		}
		sigmoidMul(is, false)
		sigmoidMul(is, true)
		expSum(is)
		softmaxSpan(is)
		maxLoop(is)
		scale(is)
		add(is)
		moments(is)
		scaleMul(is)
		layerNormApply(is)
		rotate(is)
		prefetch(is)
		readStreams(is)
		fmaLoop(is)
	}
	Generate()
}
