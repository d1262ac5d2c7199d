package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// panelWidth is the number of weight rows (outputs) of one packed panel:
// two AVX-512 vectors.
const panelWidth = 32

// gemmMaxM is the most activation rows of one gemm kernel: 2·12
// accumulators, 2 weight vectors and a broadcast fill 27 of the 32
// registers.
const gemmMaxM = 12

// rowAt addresses row i of a matrix whose rows are at bases[i/4] + (i%4)·ld
// (ld3 = 3·ld).
func rowAt(i int, bases []reg.Register, ld, ld3 reg.Register) Mem {
	base := bases[i/4]
	switch i % 4 {
	case 0:
		return Mem{Base: base}
	case 3:
		return Mem{Base: base, Index: ld3, Scale: 1}
	}
	return Mem{Base: base, Index: ld, Scale: uint8(i % 4)}
}

// gemm generates gemmF32<ISA>M<m>(x *float32, ldx int, p *float32, kn int,
// dst *float32, ldd int, add int, next *byte): dst[i*ldd+j] = Σ_{k<kn}
// x[i*ldx+k]·p[k*32+j] for i < m, j < 32 (or adds the sums when add ≠ 0),
// kn a multiple of 4, while it prefetches into L2 the m·kn elements of x's
// type from next on, the transposed path's next group of weight rows.
// p is a packed panel of 32 weight rows (see pack): each step loads its two
// vectors of weights once and multiplies them by m broadcast activations,
// so a loaded weight is used m times and a loaded activation 32 times,
// against 6 and 4 in the dot-product tile. The accumulators are whole
// rows of dst: no horizontal reduction.
//
// With k = wBF16 it generates gemmBF16<ISA>M<m>, whose broadcast operand
// x is bfloat16 rows (16-bit weights on the transposed path, see
// runTransposed): each pair of them is broadcast as one 32-bit word, the
// first shifted into a float32's upper half and the second masked in
// place, two integer operations for four FMAs instead of a pass that
// packs the weights. With k = wF16, gemmF16<ISA>M<m>: each half is
// broadcast (VPBROADCASTW) and widened (VCVTPH2PS), which has no
// broadcast form of its own.
func gemm(is isa, k wkind, m int) {
	name := fmt.Sprintf("gemm%s%sM%d", k.name, is.name, m)
	TEXT(name, NOSPLIT, fmt.Sprintf("func(x %s, ldx int, p *float32, kn int, dst *float32, ldd int, add int, next *byte)", k.gotype))
	Pragma("noescape")
	fn := "gemmF32Func"
	if k.size == 2 {
		fn = "gemm16Func"
	}
	Doc(fmt.Sprintf("%s multiplies %d %s rows by a packed panel of %d rows with %s (see %s).", name, m, k.name, panelWidth, is.name, fn))
	bases, ldx, ldx3 := gemmRows(m, k.size)
	p := Load(Param("p"), GP64())
	next := Load(Param("next"), GP64())
	iters := Load(Param("kn"), GP64())
	const unroll = 4
	// next advances by as many bytes a step as x's m rows take.
	nextStep := m * unroll * k.size
	SHRQ(U8(log2(unroll)), iters)

	acc := zeroAcc(is, m, 2)
	var hiMask Mem
	if k == wBF16 {
		hiMask = vecConst(name+"_hi", is.lanes, 0xffff0000)
	}
	step := 4 * panelWidth
	gemmLoopHead(name, iters, next, nextStep)
	loadPanel := func(u int) (reg.VecVirtual, reg.VecVirtual) {
		w0, w1 := is.vec(), is.vec()
		VMOVUPS(Mem{Base: p, Disp: u * step}, w0)
		VMOVUPS(Mem{Base: p, Disp: u*step + 4*is.lanes}, w1)
		return w0, w1
	}
	fma := func(w0, w1, xv reg.VecVirtual, i int) {
		VFMADD231PS(w0, xv, acc[i][0])
		VFMADD231PS(w1, xv, acc[i][1])
	}
	if k == wBF16 {
		for u := 0; u < unroll; u += 2 {
			a0, a1 := loadPanel(u)
			b0, b1 := loadPanel(u + 1)
			for i := range m {
				pair, lo := is.vec(), is.vec()
				VPBROADCASTD(rowAt(i, bases, ldx, ldx3).Offset(2*u), pair)
				VPSLLD(U8(16), pair, lo)
				fma(a0, a1, lo, i)
				VPANDD(hiMask, pair, pair)
				fma(b0, b1, pair, i)
			}
		}
	} else {
		for u := range unroll {
			w0, w1 := loadPanel(u)
			for i := range m {
				xv, src := is.vec(), rowAt(i, bases, ldx, ldx3).Offset(k.size*u)
				if k == wF16 {
					VPBROADCASTW(src, xv.AsY())
					VCVTPH2PS(xv.AsY(), xv)
				} else {
					VBROADCASTSS(src, xv)
				}
				fma(w0, w1, xv, i)
			}
		}
	}
	gemmLoopTail(name, iters, p, next, bases, unroll*step, nextStep, k.size*unroll)

	gemmStore(name, is, acc)
	VZEROUPPER()
	RET()
}

// pack generates pack{F32,BF16,F16}<ISA>(dst *float32, w *T, ldw, kn int):
// dst[k*32+j] = w[j*ldw+k] as float32 for j < 16, k < kn rounded down to
// 16 — half of a packed panel (see gemm). 16-bit weights are widened as
// they are loaded (see loadW), so the gemm kernels only ever see float32.
// Each 16×16 block is transposed in registers: two rounds of in-lane
// unpacks, two of 128-bit lane shuffles.
func pack(is isa, k wkind) {
	name := "pack" + k.name + is.name
	TEXT(name, NOSPLIT, fmt.Sprintf("func(dst *float32, w %s, ldw, kn int)", k.gotype))
	Pragma("noescape")
	Doc(name + " packs 16 weight rows into half of a gemm panel (see gemmF32Func).")
	dst := Load(Param("dst"), GP64())
	bases := []reg.Register{Load(Param("w"), GP64())}
	ldw := Load(Param("ldw"), GP64())
	SHLQ(U8(log2(k.size)), ldw)
	ldw3 := GP64()
	LEAQ(Mem{Base: ldw, Index: ldw, Scale: 2}, ldw3)
	for b := 4; b < 16; b += 4 {
		nb := GP64()
		LEAQ(Mem{Base: bases[len(bases)-1], Index: ldw, Scale: 4}, nb)
		bases = append(bases, nb)
	}
	// The next 16 rows (the caller's next half panel), prefetched into L2
	// a column a step as these are read.
	next := []reg.Register{GP64()}
	LEAQ(Mem{Base: bases[3], Index: ldw, Scale: 4}, next[0])
	for b := 4; b < 16; b += 4 {
		nb := GP64()
		LEAQ(Mem{Base: next[len(next)-1], Index: ldw, Scale: 4}, nb)
		next = append(next, nb)
	}
	iters := Load(Param("kn"), GP64())
	SHRQ(U8(4), iters)
	JZ(LabelRef(name + "_done"))
	Label(name + "_loop")
	for i := range 16 {
		PREFETCHT1(rowAt(i, next, ldw, ldw3))
	}
	r := make([]reg.VecVirtual, 16)
	for i := range r {
		r[i] = is.vec()
		loadW(k, rowAt(i, bases, ldw, ldw3), r[i])
	}
	// t[2i], t[2i+1]: rows 2i and 2i+1 interleaved, per 128-bit lane.
	t := make([]reg.VecVirtual, 16)
	for i := 0; i < 16; i += 2 {
		t[i], t[i+1] = is.vec(), is.vec()
		VUNPCKLPS(r[i+1], r[i], t[i])
		VUNPCKHPS(r[i+1], r[i], t[i+1])
	}
	// u[4g+q]: lane l holds rows 4g..4g+3 at k = 4l+q.
	u := make([]reg.VecVirtual, 16)
	for g := range 4 {
		a, b, c, d := t[4*g], t[4*g+1], t[4*g+2], t[4*g+3]
		u[4*g], u[4*g+1], u[4*g+2], u[4*g+3] = is.vec(), is.vec(), is.vec(), is.vec()
		VUNPCKLPD(c, a, u[4*g])
		VUNPCKHPD(c, a, u[4*g+1])
		VUNPCKLPD(d, b, u[4*g+2])
		VUNPCKHPD(d, b, u[4*g+3])
	}
	// For each q: gather lane l of the four groups into the row of k = 4l+q.
	for q := range 4 {
		lo01, hi01, lo23, hi23 := is.vec(), is.vec(), is.vec(), is.vec()
		VSHUFF32X4(U8(0x88), u[4+q], u[q], lo01) // [g0.l0, g0.l2, g1.l0, g1.l2]
		VSHUFF32X4(U8(0xdd), u[4+q], u[q], hi01) // [g0.l1, g0.l3, g1.l1, g1.l3]
		VSHUFF32X4(U8(0x88), u[12+q], u[8+q], lo23)
		VSHUFF32X4(U8(0xdd), u[12+q], u[8+q], hi23)
		for l := range 4 {
			src, imm := lo01, uint8(0x88)
			other := lo23
			if l%2 == 1 {
				src, other = hi01, hi23
			}
			if l >= 2 {
				imm = 0xdd
			}
			o := is.vec()
			VSHUFF32X4(U8(imm), other, src, o)
			VMOVUPS(o, Mem{Base: dst, Disp: (4*l + q) * 4 * panelWidth})
		}
	}
	ADDQ(U32(16*4*panelWidth), dst)
	for _, b := range append(bases, next...) {
		ADDQ(U8(16*k.size), b)
	}
	DECQ(iters)
	JNZ(LabelRef(name + "_loop"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// to16 generates name(dst *uint16, src *float32, n int), a loop over n
// rounded down to 16 float32s: round loads the 16 at src and returns them
// rounded to 16 bits in a YMM register, which the loop stores at dst.
func to16(name, doc string, round func(src Mem) reg.VecVirtual) {
	TEXT(name, NOSPLIT, "func(dst *uint16, src *float32, n int)")
	Pragma("noescape")
	Doc(doc)
	dst := Load(Param("dst"), GP64())
	src := Load(Param("src"), GP64())
	n := Load(Param("n"), GP64())
	SHRQ(U8(4), n)
	JZ(LabelRef(name + "_done"))
	Label(name + "_loop")
	VMOVDQU(round(Mem{Base: src}), Mem{Base: dst})
	ADDQ(U8(64), src)
	ADDQ(U8(32), dst)
	DECQ(n)
	JNZ(LabelRef(name + "_loop"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// toBF16 generates toBF16<ISA>(dst *uint16, src *float32, n int): dst[i] =
// src[i] rounded to the nearest bfloat16, ties to even, for i < n rounded
// down to 16, as half.BF16FromFloat32 does (a NaN keeps its upper bits,
// made quiet). The AMX path feeds its tiles with these.
func toBF16(is isa) {
	name := "toBF16" + is.name
	to16(name, name+" rounds float32s to bfloat16 (see kernels.toBF16).", func(src Mem) reg.VecVirtual {
		one := vecConst(name+"_one", is.lanes, 1)
		bias := vecConst(name+"_bias", is.lanes, 0x7fff)
		quiet := vecConst(name+"_quiet", is.lanes, 0x40)
		v, t, q := is.vec(), is.vec(), is.vec()
		VMOVDQU32(src, v)
		// v + 0x7fff + (bit 16 of v), shifted down: round to nearest, ties
		// to the even bfloat16.
		VPSRLD(U8(16), v, t)
		VPORD(quiet, t, q)
		VPANDD(one, t, t)
		VPADDD(bias, t, t)
		VPADDD(v, t, t)
		VPSRLD(U8(16), t, t)
		nan := K()
		VCMPPS(U8(3), v, v, nan) // unordered: v is a NaN
		VPBLENDMD(q, t, nan, t)
		h := YMM()
		VPMOVDW(t, h)
		return h
	})
}

// toF16 generates toF16<ISA>(dst *uint16, src *float32, n int): dst[i] =
// src[i] rounded to the nearest IEEE half, ties to even (VCVTPS2PH with
// its rounding in the instruction, whatever MXCSR says), for i < n
// rounded down to 16, as half.F16FromFloat32 does. An F16 KV cache stores
// these.
func toF16(is isa) {
	name := "toF16" + is.name
	to16(name, name+" rounds float32s to IEEE halves (see kernels.toF16).", func(src Mem) reg.VecVirtual {
		v, h := is.vec(), YMM()
		VMOVUPS(src, v)
		VCVTPS2PH(U8(0), v, h)
		return h
	})
}

// gemmRows loads a gemm kernel's broadcast operand: m rows of elements of
// size bytes from x, ldx elements apart, addressed by rowAt.
func gemmRows(m, size int) (bases []reg.Register, ldx, ldx3 reg.Register) {
	bases = []reg.Register{Load(Param("x"), GP64())}
	if m > 1 {
		ldx = Load(Param("ldx"), GP64())
		SHLQ(U8(log2(size)), ldx)
	}
	if m > 3 {
		ldx3 = GP64()
		LEAQ(Mem{Base: ldx, Index: ldx, Scale: 2}, ldx3)
	}
	for b := 4; b < m; b += 4 {
		nb := GP64()
		LEAQ(Mem{Base: bases[len(bases)-1], Index: ldx, Scale: 4}, nb)
		bases = append(bases, nb)
	}
	return bases, ldx, ldx3
}

// gemmStore ends a gemm kernel: each row's two vectors of sums acc[i]
// stored to dst's row i (ldd apart), or added to it when add ≠ 0.
func gemmStore(name string, is isa, acc [][]vecReg) {
	m := len(acc)
	Label(name + "_store")
	dst := Load(Param("dst"), GP64())
	ldd := Load(Param("ldd"), GP64())
	SHLQ(U8(2), ldd)
	add := Load(Param("add"), GP64())
	TESTQ(add, add)
	JZ(LabelRef(name + "_set"))
	for i := range m {
		for h := range 2 {
			VADDPS(Mem{Base: dst, Disp: 4 * is.lanes * h}, acc[i][h], acc[i][h])
		}
		if i < m-1 {
			ADDQ(ldd, dst)
		}
	}
	Load(Param("dst"), dst)
	Label(name + "_set")
	for i := range m {
		for h := range 2 {
			VMOVUPS(acc[i][h], Mem{Base: dst, Disp: 4 * is.lanes * h})
		}
		if i < m-1 {
			ADDQ(ldd, dst)
		}
	}
}

// gemmLoopHead starts a gemm kernel's loop of iters steps (none: on to
// the store), each prefetching nextStep bytes from next on.
func gemmLoopHead(name string, iters, next reg.Register, nextStep int) {
	TESTQ(iters, iters)
	JZ(LabelRef(name + "_store"))
	Label(name + "_loop")
	for d := 0; d < nextStep; d += 64 {
		PREFETCHT1(Mem{Base: next, Disp: d})
	}
}

// gemmLoopTail ends a step of a gemm kernel's loop: the panel p, the
// prefetch address next and x's rows advanced by their bytes a step.
func gemmLoopTail(name string, iters, p, next reg.Register, bases []reg.Register, pStep, nextStep, xStep int) {
	ADDQ(U32(pStep), p)
	ADDQ(U32(nextStep), next)
	for _, b := range bases {
		ADDQ(U8(xStep), b)
	}
	DECQ(iters)
	JNZ(LabelRef(name + "_loop"))
}
