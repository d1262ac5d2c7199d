package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	"github.com/mmcloughlin/avo/ir"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// wBF16Pairs is bfloat16 weights multiplied by bfloat16 activations with
// AVX512_BF16's VDPBF16PS: each instruction multiplies 16 pairs of
// neighbouring inputs and adds both products to a float32 sum, twice the
// products of an FMA at the same rate and no widening of the weights.
var wBF16Pairs = wkind{"BF16Pairs", "*uint16", 2}

// The Go assembler does not know VDPBF16PS, so the pairs kernels emit it
// as bytes, which the register allocator cannot see: their vectors are
// physical registers, the accumulators from Z0 up, then the weights
// (pairWeights on) and the activations (pairX, pairX+1).
const (
	pairWeights = 24
	pairX       = 27
)

// pairAcc makes the m×nb accumulators of a pairs kernel (m·nb ≤ 24),
// zeroed.
func pairAcc(m, nb int) [][]vecReg {
	acc := make([][]vecReg, m)
	for i := range acc {
		acc[i] = make([]vecReg, nb)
		for q := range acc[i] {
			z := zmm(i*nb + q)
			VXORPS(z, z, z)
			acc[i][q] = z
		}
	}
	return acc
}

// pairsStep is rowsStep for wBF16Pairs: 32 bfloat16 of each weight row
// w[q] and of each activation row, acc[i][q] += their 16 pair products.
func pairsStep(w []Mem, xrow func(i int) Mem, acc [][]vecReg) {
	for q := range w {
		VMOVDQU16(w[q], zmm(pairWeights+q))
	}
	for i := range acc {
		x := pairX + i%2
		VMOVDQU16(xrow(i), zmm(x))
		for q := range w {
			vdpbf16ps(phys(acc[i][q]), pairWeights+q, x)
		}
	}
}

// phys is the number of pairAcc's accumulator v.
func phys(v vecReg) int { return int(v.(reg.Physical).PhysicalIndex()) }

// zmm is the AVX-512 register Z<n>.
func zmm(n int) reg.VecPhysical {
	return []reg.VecPhysical{reg.Z0, reg.Z1, reg.Z2, reg.Z3, reg.Z4, reg.Z5, reg.Z6, reg.Z7,
		reg.Z8, reg.Z9, reg.Z10, reg.Z11, reg.Z12, reg.Z13, reg.Z14, reg.Z15,
		reg.Z16, reg.Z17, reg.Z18, reg.Z19, reg.Z20, reg.Z21, reg.Z22, reg.Z23,
		reg.Z24, reg.Z25, reg.Z26, reg.Z27, reg.Z28, reg.Z29, reg.Z30, reg.Z31}[n]
}

// vdpbf16ps emits VDPBF16PS Z<b>, Z<a>, Z<dst> (dst += Σ pairs of a·b).
func vdpbf16ps(dst, a, b int) {
	Comment(fmt.Sprintf("VDPBF16PS Z%d, Z%d, Z%d", b, a, dst))
	for _, v := range vdpbf16psBytes(dst, a, b) {
		Instruction(&ir.Instruction{Opcode: "BYTE", Operands: []Op{U8(v)}})
	}
}

// vdpbf16psBytes is the EVEX encoding of VDPBF16PS Z<b>, Z<a>, Z<dst>
// (Intel SDM vol. 2: EVEX.512.F3.0F38.W0 52 /r, registers only).
func vdpbf16psBytes(dst, a, b int) []byte {
	inv := func(v, bit int) byte { return byte(^(v >> bit) & 1) }
	return []byte{
		0x62,
		inv(dst, 3)<<7 | inv(b, 4)<<6 | inv(b, 3)<<5 | inv(dst, 4)<<4 | 0b10, // R X B R' 00 mm=0F38
		byte(^a&0xf)<<3 | 1<<2 | 0b10,                                        // W=0 vvvv 1 pp=F3
		0b10<<5 | inv(a, 4)<<3,                                               // z=0 L'L=512 b=0 V' aaa=0
		0x52,
		0b11<<6 | byte(dst&7)<<3 | byte(b&7),
	}
}

// gemmPairs generates gemmBF16Pairs<ISA>M<m>(x *uint16, ldx int, p *uint32,
// kp int, dst *float32, ldd int, add int, next *byte): gemm (see gemm) of
// bfloat16 pairs, dst[i*ldd+j] = Σ_{q<kp} x[i*ldx+2q]·w_j[2q] +
// x[i*ldx+2q+1]·w_j[2q+1] for i < m, j < 32, where p holds the pairs
// (w_j[2q], w_j[2q+1]) as 32-bit words laid out as packF32 lays out
// float32s (pair q of row j at p[q*32+j]) and kp is a multiple of 4.
// Each step broadcasts a pair of x as one 32-bit word and makes 64
// products of it with two VDPBF16PS. It prefetches into L2 the m·2·kp
// bfloat16 from next on, as gemm does.
func gemmPairs(is isa, m int) {
	name := fmt.Sprintf("gemmBF16Pairs%sM%d", is.name, m)
	TEXT(name, NOSPLIT, "func(x *uint16, ldx int, p *uint32, kp int, dst *float32, ldd int, add int, next *byte)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s multiplies %d rows of bfloat16 pairs by a packed panel of %d rows of pairs with %s (see gemmPairsFunc).", name, m, panelWidth, is.name))
	bases, ldx, ldx3 := gemmRows(m, 2)
	p := Load(Param("p"), GP64())
	next := Load(Param("next"), GP64())
	iters := Load(Param("kp"), GP64())
	const unroll = 4
	nextStep := m * unroll * 4
	SHRQ(U8(log2(unroll)), iters)
	acc := pairAcc(m, 2)
	// Registers past the accumulators: the panel's two vectors, then the
	// broadcasts in turn.
	const panel0, bcast0 = 24, 26
	step := 4 * panelWidth
	gemmLoopHead(name, iters, next, nextStep)
	b := 0
	for u := range unroll {
		VMOVUPS(Mem{Base: p, Disp: u * step}, zmm(panel0))
		VMOVUPS(Mem{Base: p, Disp: u*step + 64}, zmm(panel0+1))
		for i := range m {
			x := bcast0 + b%(32-bcast0)
			b++
			VPBROADCASTD(rowAt(i, bases, ldx, ldx3).Offset(4*u), zmm(x))
			vdpbf16ps(phys(acc[i][0]), panel0, x)
			vdpbf16ps(phys(acc[i][1]), panel0+1, x)
		}
	}
	gemmLoopTail(name, iters, p, next, bases, unroll*step, nextStep, 4*unroll)

	gemmStore(name, is, acc)
	VZEROUPPER()
	RET()
}

// pairsPeak generates pairsPeak<ISA>(iters int): iters iterations of
// fmaChains independent VDPBF16PS, for measuring the pairs kernels' peak
// FLOP/s as fmaLoop measures the FMAs'.
func pairsPeak(is isa) {
	name := "pairsPeak" + is.name
	TEXT(name, NOSPLIT, "func(iters int)")
	Doc(fmt.Sprintf("%s runs iters×%d independent VDPBF16PS.", name, fmaChains))
	n := Load(Param("iters"), GP64())
	const a, b = fmaChains, fmaChains + 1
	for r := range fmaChains + 2 {
		VXORPS(zmm(r), zmm(r), zmm(r))
	}
	Label(name + "_loop")
	for c := range fmaChains {
		vdpbf16ps(c, a, b)
	}
	DECQ(n)
	JNZ(LabelRef(name + "_loop"))
	VZEROUPPER()
	RET()
}
