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
			vdpbf16ps(i*len(w)+q, pairWeights+q, x)
		}
	}
}

// zmm is the AVX-512 register Z<n>.
func zmm(n int) reg.VecPhysical {
	return []reg.VecPhysical{reg.Z0, reg.Z1, reg.Z2, reg.Z3, reg.Z4, reg.Z5, reg.Z6, reg.Z7,
		reg.Z8, reg.Z9, reg.Z10, reg.Z11, reg.Z12, reg.Z13, reg.Z14, reg.Z15,
		reg.Z16, reg.Z17, reg.Z18, reg.Z19, reg.Z20, reg.Z21, reg.Z22, reg.Z23,
		reg.Z24, reg.Z25, reg.Z26, reg.Z27, reg.Z28, reg.Z29, reg.Z30, reg.Z31}[n]
}

// vdpbf16ps emits VDPBF16PS Z<b>, Z<a>, Z<dst> (dst += Σ pairs of a·b) in
// its EVEX encoding (Intel SDM vol. 2: EVEX.512.F3.0F38.W0 52 /r).
func vdpbf16ps(dst, a, b int) {
	inv := func(v, bit int) byte { return byte(^(v >> bit) & 1) }
	bytes := []byte{
		0x62,
		inv(dst, 3)<<7 | inv(b, 4)<<6 | inv(b, 3)<<5 | inv(dst, 4)<<4 | 0b10, // R X B R' 00 mm=0F38
		byte(^a&0xf)<<3 | 1<<2 | 0b10,                                        // W=0 vvvv 1 pp=F3
		0b10<<5 | inv(a, 4)<<3,                                               // z=0 L'L=512 b=0 V' aaa=0
		0x52,
		0b11<<6 | byte(dst&7)<<3 | byte(b&7),
	}
	Comment(fmt.Sprintf("VDPBF16PS Z%d, Z%d, Z%d", b, a, dst))
	for _, v := range bytes {
		Instruction(&ir.Instruction{Opcode: "BYTE", Operands: []Op{U8(v)}})
	}
}
