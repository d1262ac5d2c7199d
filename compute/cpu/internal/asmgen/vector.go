package main

import (
	"fmt"
	"math"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// accum generates accum<ISA> (accumBF16<ISA>, accumF16<ISA> for 16-bit
// values): dst[0:d] += Σ_{j<n} p[j]·v[j*ldv : j*ldv+d] for d rounded down
// to a multiple of the vector width. Four vectors of dst are accumulated
// at a time so four FMA chains are in flight. 16-bit values (a 16-bit KV
// cache's) are widened in registers as the tile kernels widen weights.
func accum(is isa, k wkind) {
	name, doc := "accum"+is.name, "accumFunc"
	if k != wF32 {
		name, doc = "accum"+k.name+is.name, "accum16Func (values in "+k.name+")"
	}
	TEXT(name, NOSPLIT, fmt.Sprintf("func(dst, p *float32, v %s, ldv, n, d int)", k.gotype))
	Pragma("noescape")
	Doc(name + " is the " + is.name + " " + doc + ".")
	dst := Load(Param("dst"), GP64())
	p := Load(Param("p"), GP64())
	v := Load(Param("v"), GP64())
	ldv := Load(Param("ldv"), GP64())
	SHLQ(U8(log2(k.size)), ldv)
	n := Load(Param("n"), GP64())
	d := Load(Param("d"), GP64())
	ANDQ(I32(^(is.lanes - 1)), d)
	SHLQ(U8(2), d)
	end := GP64()
	LEAQ(Mem{Base: dst, Index: d, Scale: 1}, end)
	bytes := 4 * is.lanes
	vbytes := k.size * is.lanes

	for _, width := range []int{4, 1} {
		loop := fmt.Sprintf("%s_w%d", name, width)
		Label(loop)
		// Stop when fewer than width vectors of dst are left.
		rest := GP64()
		MOVQ(end, rest)
		SUBQ(dst, rest)
		CMPQ(rest, I32(width*bytes))
		JL(LabelRef(loop + "_done"))
		acc := make([]reg.VecVirtual, width)
		for c := range acc {
			acc[c] = is.vec()
			VMOVUPS(Mem{Base: dst, Disp: c * bytes}, acc[c])
		}
		vp, j := GP64(), GP64()
		MOVQ(v, vp)
		XORQ(j, j)
		Label(loop + "_j")
		CMPQ(j, n)
		JGE(LabelRef(loop + "_store"))
		pj := is.vec()
		VBROADCASTSS(Mem{Base: p, Index: j, Scale: 4}, pj)
		for c := range acc {
			src := Mem{Base: vp, Disp: c * vbytes}
			if k == wF32 {
				VFMADD231PS(src, pj, acc[c])
				continue
			}
			w := is.vec()
			loadW(k, src, w)
			VFMADD231PS(w, pj, acc[c])
		}
		ADDQ(ldv, vp)
		INCQ(j)
		JMP(LabelRef(loop + "_j"))
		Label(loop + "_store")
		for c := range acc {
			VMOVUPS(acc[c], Mem{Base: dst, Disp: c * bytes})
		}
		ADDQ(I32(width*bytes), dst)
		ADDQ(I32(width*vbytes), v)
		JMP(LabelRef(loop))
		Label(loop + "_done")
	}
	VZEROUPPER()
	RET()
}

// maxLoop generates max<ISA>(x *float32, n int) float32: the largest of
// x[i] for i < n rounded down to the vector width (n ≥ the width), in two
// independent running maxima — the softmax's first pass over the scores.
func maxLoop(is isa) {
	name := "max" + is.name
	TEXT(name, NOSPLIT, "func(x *float32, n int) float32")
	Pragma("noescape")
	Doc(name + " is the largest of x[:n], n rounded down to the vector width (see maxLoop in the generator).")
	x := Load(Param("x"), GP64())
	n := Load(Param("n"), GP64())
	SHRQ(U8(log2(is.lanes)), n)
	m := horizontal(is, maxPass(is, name, x, n), VMAXPS, VMAXSS)
	VZEROUPPER()
	Store(m, ReturnIndex(0))
	RET()
}

// maxPass emits the loop of maxLoop over n ≥ 1 vectors at x, moving x and
// n, and returns the vector of lane maxima.
func maxPass(is isa, name string, x, n reg.Register) reg.VecVirtual {
	m0, m1 := is.vec(), is.vec()
	VMOVUPS(Mem{Base: x}, m0)
	VMOVAPS(m0, m1)
	ADDQ(U8(4*is.lanes), x)
	DECQ(n)
	JZ(LabelRef(name + "_max_done"))
	Label(name + "_max")
	VMAXPS(Mem{Base: x}, m0, m0)
	ADDQ(U8(4*is.lanes), x)
	DECQ(n)
	JZ(LabelRef(name + "_max_done"))
	VMAXPS(Mem{Base: x}, m1, m1)
	ADDQ(U8(4*is.lanes), x)
	DECQ(n)
	JNZ(LabelRef(name + "_max"))
	Label(name + "_max_done")
	VMAXPS(m1, m0, m0)
	return m0
}

// horizontal folds the lanes of v into lane 0 of the result with op
// (VADDPS, VMAXPS) and its scalar form (VADDSS, VMAXSS): the upper half
// onto the lower one until one lane is left.
func horizontal(is isa, v reg.VecVirtual, op, scalar func(...Op)) reg.VecVirtual {
	y := v
	if is.lanes == 16 {
		y = YMM()
		VEXTRACTF64X4(U8(1), v, y)
		op(y, v.AsY(), y)
	}
	xh, xs := XMM(), XMM()
	if is.lanes == 16 {
		VEXTRACTF32X4(U8(1), y, xh)
	} else {
		VEXTRACTF128(U8(1), y, xh) // VEX: AVX2 machines lack EVEX
	}
	op(xh, y.AsX(), xs)
	VMOVHLPS(xs, xs, xh)
	op(xh, xs, xs)
	VMOVSHDUP(xs, xh)
	scalar(xh, xs, xs)
	return xs
}

// vecConst defines a read-only vector of lanes copies of the float32 f.
func vecConst(name string, lanes int, bits uint32) Mem {
	m := GLOBL(name, RODATA|NOPTR)
	for i := range lanes {
		DATA(4*i, U32(bits))
	}
	return m
}

// sigmoidMul generates siluMul<ISA>(dst, gate, up *float32, n int), which
// sets dst = gate·σ(gate)·up, and gelu<ISA>(x *float32, n int), which sets
// x = x·σ(2u) with u = √(2/π)·(x + 0.044715x³) — GPT-2's tanh GELU, since
// ½(1+tanh u) = σ(2u). Both handle n rounded down to the vector width.
// σ(z) = 1/(1+e^-z) with e^t computed as expf in kernels.go does: t
// clamped to [-87, 88], t = n·ln2 + r, a degree-6 polynomial in r, times 2^n.
func sigmoidMul(is isa, gelu bool) {
	name, sig := "siluMul"+is.name, "func(dst, gate, up *float32, n int)"
	if gelu {
		name, sig = "gelu"+is.name, "func(x *float32, n int)"
	}
	TEXT(name, NOSPLIT, sig)
	Pragma("noescape")
	Doc(name + " is the " + is.name + " vector form of the Go loop (see sigmoidMul in the generator).")
	e := newExpConsts(is, name)
	var geluA, geluB Mem
	if gelu {
		geluA, geluB = e.c("a", 0.044715), e.c("b", -2*0.7978845608028654)
	}

	var dst, gate, up reg.Register
	if gelu {
		dst = Load(Param("x"), GP64())
		gate = dst
	} else {
		dst, gate, up = Load(Param("dst"), GP64()), Load(Param("gate"), GP64()), Load(Param("up"), GP64())
	}
	n := Load(Param("n"), GP64())
	SHRQ(U8(log2(is.lanes)), n)
	JZ(LabelRef(name + "_done"))
	i := GP64()
	XORQ(i, i)
	Label(name + "_loop")
	a := is.vec()
	VMOVUPS(Mem{Base: gate, Index: i, Scale: 1}, a)
	// t: the exponent, -gate or -2u.
	t := is.vec()
	if gelu {
		VMULPS(a, a, t)
		VMULPS(geluA, t, t)
		VADDPS(e.one, t, t) // 1 + 0.044715x²
		VMULPS(a, t, t)
		VMULPS(geluB, t, t)
	} else {
		VXORPS(t, t, t)
		VSUBPS(a, t, t)
	}
	p := e.exp(t)
	// a / (1 + e^t), times up for SiLU.
	VADDPS(e.one, p, p)
	VDIVPS(p, a, a)
	if !gelu {
		VMULPS(Mem{Base: up, Index: i, Scale: 1}, a, a)
	}
	VMOVUPS(a, Mem{Base: dst, Index: i, Scale: 1})
	ADDQ(U8(4*is.lanes), i)
	DECQ(n)
	JNZ(LabelRef(name + "_loop"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// expConsts are the vector constants of one function's exp.
type expConsts struct {
	is                   isa
	name                 string
	lo, hi, log2e, ln2hi Mem
	ln2lo, one, bias     Mem
	poly                 []Mem
}

func newExpConsts(is isa, name string) *expConsts {
	e := &expConsts{is: is, name: name}
	e.lo, e.hi = e.c("lo", -87), e.c("hi", 88)
	e.log2e, e.ln2hi, e.ln2lo = e.c("log2e", 1.44269504088896341), e.c("ln2hi", 0.693359375), e.c("ln2lo", -2.12194440e-4)
	e.poly = []Mem{e.c("p0", 1.9875691500e-4), e.c("p1", 1.3981999507e-3), e.c("p2", 8.3334519073e-3),
		e.c("p3", 4.1665795894e-2), e.c("p4", 1.6666665459e-1), e.c("p5", 5.0000001201e-1)}
	e.one = e.c("one", 1)
	if is.lanes == 8 {
		e.bias = vecConst(name+"_bias", is.lanes, 127)
	}
	return e
}

// c defines a vector constant of this function.
func (e *expConsts) c(what string, f float32) Mem {
	return vecConst(fmt.Sprintf("%s_%s", e.name, what), e.is.lanes, math.Float32bits(f))
}

// exp returns a new register holding e^t, t clamped to [-87, 88] in place.
func (e *expConsts) exp(t reg.VecVirtual) reg.VecVirtual {
	VMAXPS(e.lo, t, t)
	VMINPS(e.hi, t, t)
	k, r := e.is.vec(), e.is.vec()
	VMULPS(e.log2e, t, k)
	if e.is.lanes == 16 {
		VRNDSCALEPS(U8(0), k, k)
	} else {
		VROUNDPS(U8(0), k, k)
	}
	VMOVAPS(t, r)
	VFNMADD231PS(e.ln2hi, k, r)
	VFNMADD231PS(e.ln2lo, k, r)
	p := e.is.vec()
	VMOVUPS(e.poly[0], p)
	for _, pc := range e.poly[1:] {
		VFMADD213PS(pc, r, p)
	}
	r2 := e.is.vec()
	VMULPS(r, r, r2)
	VFMADD213PS(r, r2, p)
	VADDPS(e.one, p, p)
	if e.is.lanes == 16 {
		VSCALEFPS(k, p, p)
	} else {
		VCVTPS2DQ(k, k)
		VPADDD(e.bias, k, k)
		VPSLLD(U8(23), k, k)
		VMULPS(k, p, p)
	}
	return p
}

// softmaxSpan generates softmaxSpan<ISA>(x *float32, n int, ref, margin
// float32) (float32, float32), one online-softmax step over a span of
// scores in one call (see softmaxSpan in attention.go): the largest of
// x[:n] (n a multiple of the vector width, at least one vector), the
// reference maximum moved to it only if it exceeds ref by more than
// margin, then x[i] = e^(x[i]-reference) and their sum. It returns the
// reference and the sum. The Go steps between a max pass and an exp pass
// cost a third as much as the exponentials in prefill attention.
func softmaxSpan(is isa) {
	name := "softmaxSpan" + is.name
	TEXT(name, NOSPLIT, "func(x *float32, n int, ref, margin float32) (float32, float32)")
	Pragma("noescape")
	Doc(name + " is the " + is.name + " online-softmax step over one span of scores (see softmaxSpan in the generator).")
	e := newExpConsts(is, name)
	x := Load(Param("x"), GP64())
	n := Load(Param("n"), GP64())
	// Floats in and out while the upper halves are clean (see isa).
	ref, thr := XMM(), XMM()
	Load(Param("ref"), ref)
	Load(Param("margin"), thr)
	SHRQ(U8(log2(is.lanes)), n)
	p, cnt := GP64(), GP64()
	MOVQ(x, p)
	MOVQ(n, cnt)
	mx := horizontal(is, maxPass(is, name, p, cnt), VMAXPS, VMAXSS)
	VADDSS(ref, thr, thr)
	// The reference moves only when the span's maximum is above ref+margin
	// (not for a NaN maximum).
	VUCOMISS(thr, mx)
	JBE(LabelRef(name + "_keep"))
	VMOVAPS(mx, ref)
	Label(name + "_keep")
	refv, sum := is.vec(), is.vec()
	VBROADCASTSS(ref, refv)
	VXORPS(sum, sum, sum)
	expPass(is, e, name, x, n, refv, sum)
	total := horizontal(is, sum, VADDPS, VADDSS)
	VZEROUPPER()
	Store(ref, ReturnIndex(0))
	Store(total, ReturnIndex(1))
	RET()
}

// expSum generates expSum<ISA>(x *float32, n int, shift float32) float32:
// x[i] = e^(x[i]-shift) for i < n rounded down to the vector width, and
// the sum of those values — the softmax step of attention.
func expSum(is isa) {
	name := "expSum" + is.name
	TEXT(name, NOSPLIT, "func(x *float32, n int, shift float32) float32")
	Pragma("noescape")
	Doc(name + " is the " + is.name + " softmax exponentiation (see expSum in the generator).")
	e := newExpConsts(is, name)
	x := Load(Param("x"), GP64())
	n := Load(Param("n"), GP64())
	sh := XMM()
	Load(Param("shift"), sh)
	shv, sum := is.vec(), is.vec()
	VBROADCASTSS(sh, shv)
	VXORPS(sum, sum, sum)
	SHRQ(U8(log2(is.lanes)), n)
	JZ(LabelRef(name + "_done"))
	expPass(is, e, name, x, n, shv, sum)
	Label(name + "_done")
	total := horizontal(is, sum, VADDPS, VADDSS)
	VZEROUPPER()
	Store(total, ReturnIndex(0))
	RET()
}

// expPass emits the loop of expSum over n ≥ 1 vectors at x, moving x and
// n: x[i] = e^(x[i]-shift) with shift broadcast in shv, each added to the
// lane sums in sum.
func expPass(is isa, e *expConsts, name string, x, n reg.Register, shv, sum reg.VecVirtual) {
	Label(name + "_exp")
	t := is.vec()
	VMOVUPS(Mem{Base: x}, t)
	VSUBPS(shv, t, t)
	p := e.exp(t)
	VMOVUPS(p, Mem{Base: x})
	VADDPS(p, sum, sum)
	ADDQ(U8(4*is.lanes), x)
	DECQ(n)
	JNZ(LabelRef(name + "_exp"))
}
