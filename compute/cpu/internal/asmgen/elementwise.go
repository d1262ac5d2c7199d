package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// The elementwise kernels below handle n rounded down to the vector width;
// their Go callers finish the rest. Each loop walks one index register
// over its arrays.

// loopOver emits the loop shell: n (a register holding the element count)
// becomes whole vectors, and body is emitted once per vector with i the
// byte offset of the vector.
func loopOver(is isa, name string, n reg.Register, body func(i reg.Register)) {
	SHRQ(U8(log2(is.lanes)), n)
	JZ(LabelRef(name + "_done"))
	i := GP64()
	XORQ(i, i)
	Label(name + "_loop")
	body(i)
	ADDQ(U8(4*is.lanes), i)
	DECQ(n)
	JNZ(LabelRef(name + "_loop"))
	Label(name + "_done")
}

// broadcastParam loads the float32 parameter name into every lane of a
// new vector.
func broadcastParam(is isa, name string) reg.VecVirtual {
	b, err := Param(name).Resolve()
	if err != nil {
		panic(err)
	}
	v := is.vec()
	VBROADCASTSS(b.Addr, v)
	return v
}

// at addresses element vector i of the array at base.
func at(base, i reg.Register) Mem { return Mem{Base: base, Index: i, Scale: 1} }

// scale generates scale<ISA>(dst, src *float32, n int, s float32):
// dst[i] = src[i]·s — attention's query scaling, its running sums'
// rescaling when the maximum grows, and the final division by the sum.
func scale(is isa) {
	name := "scale" + is.name
	TEXT(name, NOSPLIT, "func(dst, src *float32, n int, s float32)")
	Pragma("noescape")
	Doc(name + " sets dst[i] = src[i]·s for n rounded down to the vector width (see scale in the generator).")
	dst, src, n := Load(Param("dst"), GP64()), Load(Param("src"), GP64()), Load(Param("n"), GP64())
	s := broadcastParam(is, "s")
	loopOver(is, name, n, func(i reg.Register) {
		v := is.vec()
		VMULPS(at(src, i), s, v)
		VMOVUPS(v, at(dst, i))
	})
	VZEROUPPER()
	RET()
}

// add generates add<ISA>(dst, a, b *float32, n int): dst[i] = a[i] + b[i]
// — the residual connections.
func add(is isa) {
	name := "add" + is.name
	TEXT(name, NOSPLIT, "func(dst, a, b *float32, n int)")
	Pragma("noescape")
	Doc(name + " sets dst[i] = a[i] + b[i] for n rounded down to the vector width.")
	dst, a, b, n := Load(Param("dst"), GP64()), Load(Param("a"), GP64()), Load(Param("b"), GP64()), Load(Param("n"), GP64())
	loopOver(is, name, n, func(i reg.Register) {
		v := is.vec()
		VMOVUPS(at(a, i), v)
		VADDPS(at(b, i), v, v)
		VMOVUPS(v, at(dst, i))
	})
	VZEROUPPER()
	RET()
}

// moments generates moments<ISA>(x *float32, n int, c float32) (s, ss
// float32): Σ (x[i]−c) and Σ (x[i]−c)², each in two independent
// accumulators — the norms' passes over a row (RMSNorm one with c = 0;
// LayerNorm one for the mean, then one about it).
func moments(is isa) {
	name := "moments" + is.name
	TEXT(name, NOSPLIT, "func(x *float32, n int, c float32) (s, ss float32)")
	Pragma("noescape")
	Doc(name + " is Σ (x[i]−c) and Σ (x[i]−c)² for n rounded down to the vector width (see moments in the generator).")
	x, n := Load(Param("x"), GP64()), Load(Param("n"), GP64())
	c := broadcastParam(is, "c")
	var sum, sq [2]reg.VecVirtual
	for h := range 2 {
		sum[h], sq[h] = is.vec(), is.vec()
		VXORPS(sum[h], sum[h], sum[h])
		VXORPS(sq[h], sq[h], sq[h])
	}
	SHRQ(U8(log2(is.lanes)), n)
	JZ(LabelRef(name + "_done"))
	Label(name + "_loop")
	for h := range 2 {
		v := is.vec()
		VMOVUPS(Mem{Base: x}, v)
		VSUBPS(c, v, v)
		VADDPS(v, sum[h], sum[h])
		VFMADD231PS(v, v, sq[h])
		ADDQ(U8(4*is.lanes), x)
		DECQ(n)
		if h == 0 {
			JZ(LabelRef(name + "_done"))
		}
	}
	JNZ(LabelRef(name + "_loop"))
	Label(name + "_done")
	VADDPS(sum[1], sum[0], sum[0])
	VADDPS(sq[1], sq[0], sq[0])
	s1, s2 := horizontal(is, sum[0], VADDPS, VADDSS), horizontal(is, sq[0], VADDPS, VADDSS)
	VZEROUPPER()
	Store(s1, ReturnIndex(0))
	Store(s2, ReturnIndex(1))
	RET()
}

// scaleMul generates scaleMul<ISA>(dst, x, w *float32, n int, s float32):
// dst[i] = (x[i]·s)·w[i] — RMSNorm's second pass, rounded as Hugging
// Face's normalise-then-weight is.
func scaleMul(is isa) {
	name := "scaleMul" + is.name
	TEXT(name, NOSPLIT, "func(dst, x, w *float32, n int, s float32)")
	Pragma("noescape")
	Doc(name + " sets dst[i] = (x[i]·s)·w[i] for n rounded down to the vector width.")
	dst, x, w, n := Load(Param("dst"), GP64()), Load(Param("x"), GP64()), Load(Param("w"), GP64()), Load(Param("n"), GP64())
	s := broadcastParam(is, "s")
	loopOver(is, name, n, func(i reg.Register) {
		v := is.vec()
		VMULPS(at(x, i), s, v)
		VMULPS(at(w, i), v, v)
		VMOVUPS(v, at(dst, i))
	})
	VZEROUPPER()
	RET()
}

// layerNormApply generates layerNormApply<ISA>(dst, x, w, b *float32,
// n int, mean, r float32): dst[i] = ((x[i]−mean)·r)·w[i] + b[i] —
// LayerNorm's second pass.
func layerNormApply(is isa) {
	name := "layerNormApply" + is.name
	TEXT(name, NOSPLIT, "func(dst, x, w, b *float32, n int, mean, r float32)")
	Pragma("noescape")
	Doc(name + " sets dst[i] = ((x[i]−mean)·r)·w[i] + b[i] for n rounded down to the vector width.")
	dst, x, w, b := Load(Param("dst"), GP64()), Load(Param("x"), GP64()), Load(Param("w"), GP64()), Load(Param("b"), GP64())
	n := Load(Param("n"), GP64())
	mean, r := broadcastParam(is, "mean"), broadcastParam(is, "r")
	loopOver(is, name, n, func(i reg.Register) {
		v, bv := is.vec(), is.vec()
		VMOVUPS(at(x, i), v)
		VSUBPS(mean, v, v)
		VMULPS(r, v, v)
		VMOVUPS(at(b, i), bv)
		VFMADD132PS(at(w, i), bv, v) // v·w + b
		VMOVUPS(v, at(dst, i))
	})
	VZEROUPPER()
	RET()
}

// rotate generates rotate<ISA>(lo, hi, cos, sin *float32, n int): the
// rotate-half RoPE of one head, lo[i], hi[i] = lo·cos − hi·sin,
// hi·cos + lo·sin.
func rotate(is isa) {
	name := "rotate" + is.name
	TEXT(name, NOSPLIT, "func(lo, hi, cos, sin *float32, n int)")
	Pragma("noescape")
	Doc(name + " rotates the pairs (lo[i], hi[i]) by the angles of cos[i], sin[i] for n rounded down to the vector width.")
	lo, hi := Load(Param("lo"), GP64()), Load(Param("hi"), GP64())
	cos, sin, n := Load(Param("cos"), GP64()), Load(Param("sin"), GP64()), Load(Param("n"), GP64())
	loopOver(is, name, n, func(i reg.Register) {
		a, b, c, s := is.vec(), is.vec(), is.vec(), is.vec()
		VMOVUPS(at(lo, i), a)
		VMOVUPS(at(hi, i), b)
		VMOVUPS(at(cos, i), c)
		VMOVUPS(at(sin, i), s)
		bs, as := is.vec(), is.vec()
		VMULPS(s, b, bs)
		VMULPS(s, a, as)
		VFMSUB231PS(c, a, bs) // a·cos − b·sin
		VFMADD231PS(c, b, as) // b·cos + a·sin
		VMOVUPS(bs, at(lo, i))
		VMOVUPS(as, at(hi, i))
	})
	VZEROUPPER()
	RET()
}

// prefetch generates prefetch<ISA>(p *float32, n int): a PREFETCHT0 of
// each 64-byte line of the n bytes at p (n ≥ 1). Attention's tiles fetch
// their query rows, a few hundred bytes every 4 KiB or more, this way
// first, so the misses overlap instead of following each other.
func prefetch(is isa) {
	name := "prefetch" + is.name
	TEXT(name, NOSPLIT, "func(p *float32, n int)")
	Pragma("noescape")
	Doc(name + " prefetches the lines of the n bytes at p.")
	p, n := Load(Param("p"), GP64()), Load(Param("n"), GP64())
	end := GP64()
	LEAQ(Mem{Base: p, Index: n, Scale: 1}, end)
	Label(name + "_loop")
	PREFETCHT0(Mem{Base: p})
	ADDQ(U8(64), p)
	CMPQ(p, end)
	JB(LabelRef(name + "_loop"))
	RET()
}
