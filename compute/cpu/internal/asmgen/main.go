// Command asmgen generates the AVX2 and AVX-512 kernels of package
// compute/cpu with avo. It is a separate module so that the main module
// does not depend on avo; run it through go generate in compute/cpu.
package main

import (
	"fmt"
	"math"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// isa is one vector instruction set the kernels are generated for.
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
		if is.lanes == 16 {
			for m := 1; m <= gemmMaxM; m++ {
				gemm(is, m)
			}
			for _, k := range wkinds {
				pack(is, k)
			}
			toBF16(is)
		}
		accum(is, false)
		accum(is, true)
		sigmoidMul(is, false)
		sigmoidMul(is, true)
		expSum(is)
		maxLoop(is)
		readStreams(is)
		fmaLoop(is)
	}
	Generate()
}

const tileRows = 4

// rowAddr addresses row i of a matrix whose rows 0-3 are at base with
// stride ld (ld3 = 3·ld) and rows 4-7 at base4 = base + 4·ld.
func rowAddr(i int, base, base4, ld, ld3 reg.Register) Mem {
	if i >= 4 {
		base, i = base4, i-4
	}
	switch i {
	case 0:
		return Mem{Base: base}
	case 3:
		return Mem{Base: base, Index: ld3, Scale: 1}
	}
	return Mem{Base: base, Index: ld, Scale: uint8(i)}
}

// tile generates tile{F32,BF16,F16}<ISA>M<m>: dst[i*ldd+r] = Σ_k x[i*ldx+k]·w[r*ldw+k]
// for i < m, r < 4, k < kn rounded down to a multiple of the vector width.
// Weights in BF16 and F16 are widened in registers (see loadW). Each of the 4·m dot products keeps its own vector accumulator,
// reduced horizontally once at the end.
//
// Every iteration also prefetches one cache line of each of four streams
// at pf, pf+pfs, pf+2·pfs and pf+3·pfs, advancing 64 bytes: the caller
// points them at the rows of the weight tile it will need next (each
// weight row is a short stream that the hardware prefetchers would pick up
// only halfway through), so those misses overlap this tile's FMAs.
// AVX-512 kernels of 16-bit weights prefetch into L2 (PREFETCHT1), not
// L1 (see pfHint).
// Rows are addressed from a few moving pointers with the strides as index
// registers, so even a 6-row tile fits in the general registers.
func tile(is isa, k wkind, m int) {
	dt, wtype, wscale := k.name, k.gotype, k.size
	name := fmt.Sprintf("tile%s%sM%d", dt, is.name, m)
	TEXT(name, NOSPLIT, fmt.Sprintf("func(x *float32, ldx int, w %s, ldw, kn int, dst *float32, ldd int, pf uintptr, pfs int, add int)", wtype))
	Pragma("noescape")
	Doc(fmt.Sprintf("%s computes a %d×%d tile of dot products with %s (see tileF32Func).", name, m, tileRows, is.name))

	xb := Load(Param("x"), GP64())
	var ldx, ldx3, xb4 reg.Register
	if m > 1 {
		ldx = Load(Param("ldx"), GP64())
		SHLQ(U8(2), ldx)
	}
	if m > 3 {
		ldx3 = GP64()
		LEAQ(Mem{Base: ldx, Index: ldx, Scale: 2}, ldx3)
	}
	if m > 4 {
		xb4 = GP64()
		LEAQ(Mem{Base: xb, Index: ldx, Scale: 4}, xb4)
	}
	wb := Load(Param("w"), GP64())
	ldw := Load(Param("ldw"), GP64())
	SHLQ(U8(wscale/2), ldw)
	ldw3 := GP64()
	LEAQ(Mem{Base: ldw, Index: ldw, Scale: 2}, ldw3)
	pf := Load(Param("pf"), GP64())
	pfs := Load(Param("pfs"), GP64())
	pfs3 := GP64()
	LEAQ(Mem{Base: pfs, Index: pfs, Scale: 2}, pfs3)
	iters := Load(Param("kn"), GP64())
	SHRQ(U8(log2(is.lanes)), iters)

	// Up to maxM rows keep all 4·m accumulators in registers. More rows
	// (decode batches of 7-8) take two passes of two weight rows each, so
	// every weight is still loaded (and widened) once for all the rows,
	// where two calls of 4 rows would load it twice.
	passes := [][]int{{0, 1, 2, 3}}
	if m > is.maxM {
		passes = [][]int{{0, 1}, {2, 3}}
	}
	for pi, wrows := range passes {
		if pi > 0 {
			Load(Param("x"), xb)
			if m > 4 {
				LEAQ(Mem{Base: xb, Index: ldx, Scale: 4}, xb4)
			}
			Load(Param("w"), wb)
			Load(Param("pf"), pf)
			Load(Param("kn"), iters)
			SHRQ(U8(log2(is.lanes)), iters)
		}
		tilePass(is, k, m, fmt.Sprintf("%s_p%d", name, pi), wrows, tileRegs{xb, xb4, ldx, ldx3, wb, ldw, ldw3, pf, pfs, pfs3, iters})
	}
	VZEROUPPER()
	RET()
}

// pfHint is the prefetch a tile kernel issues for the next weight tile.
// AVX-512 kernels of 16-bit weights pull it into L2 only: streaming from
// memory on one core of this project's Xeon VM, 5-15% faster than into
// L1 at batch 1 to 8 (bf16 m=1, rows of 1024: 12.7 against 11.0 GB/s,
// the read probe 14.8), while F32 weights streamed the same either way.
// Why is a guess: a 16-bit tile takes twice the instructions per byte of
// an F32 one, and a prefetch into L1 holds one of the core's few L1 miss
// buffers until its line arrives from memory, which the kernel's own L1
// misses then wait for.
func pfHint(is isa, k wkind) func(Op) {
	if is.lanes == 16 && k.size == 2 {
		return func(m Op) { PREFETCHT1(m) }
	}
	return func(m Op) { PREFETCHT0(m) }
}

// tileRegs are the general registers of a tile kernel (see tile).
type tileRegs struct {
	xb, xb4, ldx, ldx3, wb, ldw, ldw3, pf, pfs, pfs3, iters reg.Register
}

// tilePass computes the dot products of m activation rows with weight rows
// wrows (all 4, or 2 of them) and stores them at dst[i*ldd+r] (labels
// prefixed by name).
func tilePass(is isa, k wkind, m int, name string, wrows []int, g tileRegs) {
	wscale := k.size
	xb, xb4, ldx, ldx3, wb, ldw, ldw3 := g.xb, g.xb4, g.ldx, g.ldx3, g.wb, g.ldw, g.ldw3
	acc := make([][]reg.VecVirtual, m)
	for i := range acc {
		acc[i] = make([]reg.VecVirtual, len(wrows))
		for r := range acc[i] {
			acc[i][r] = is.vec()
			VXORPS(acc[i][r], acc[i][r], acc[i][r])
		}
	}
	// One main-loop iteration consumes a 64-byte line of each weight row
	// and prefetches one line of each next-tile row; single steps finish.
	unroll := max(1, 64/(is.lanes*wscale))
	step := is.lanes * wscale
	body := func(u int) {
		wv := make([]reg.VecVirtual, len(wrows))
		for r, wr := range wrows {
			wv[r] = is.vec()
			loadW(k, rowAddr(wr, wb, nil, ldw, ldw3).Offset(u*step), wv[r])
		}
		for i := range m {
			xv := is.vec()
			VMOVUPS(rowAddr(i, xb, xb4, ldx, ldx3).Offset(u*4*is.lanes), xv)
			for r := range wrows {
				VFMADD231PS(wv[r], xv, acc[i][r])
			}
		}
	}
	advance := func(u int) {
		ADDQ(U8(u*step), wb)
		ADDQ(U8(u*4*is.lanes), xb)
		if m > 4 {
			ADDQ(U8(u*4*is.lanes), xb4)
		}
	}
	iters := g.iters
	lines := GP64()
	MOVQ(iters, lines)
	SHRQ(U8(log2(unroll)), lines)
	JZ(LabelRef(name + "_single"))
	Label(name + "_loop")
	for u := range unroll {
		body(u)
	}
	for _, wr := range wrows {
		pfHint(is, k)(rowAddr(wr, g.pf, nil, g.pfs, g.pfs3))
	}
	ADDQ(U8(64), g.pf)
	advance(unroll)
	DECQ(lines)
	JNZ(LabelRef(name + "_loop"))
	Label(name + "_single")
	if unroll > 1 {
		ANDQ(U8(unroll-1), iters)
		JZ(LabelRef(name + "_reduce"))
		Label(name + "_single_loop")
		body(0)
		advance(1)
		DECQ(iters)
		JNZ(LabelRef(name + "_single_loop"))
	}

	Label(name + "_reduce")
	dst := Load(Param("dst"), GP64())
	if wrows[0] > 0 {
		ADDQ(U8(4*wrows[0]), dst)
	}
	ldd := Load(Param("ldd"), GP64())
	SHLQ(U8(2), ldd)
	// add ≠ 0 accumulates into dst, for callers that split kn.
	add := Load(Param("add"), GP64())
	for i := range m {
		a := acc[i]
		if len(a) == 2 {
			// [Σa0, Σa1, Σa0, Σa1]: the low half is stored.
			a = []reg.VecVirtual{a[0], a[1], a[0], a[1]}
		}
		out := reduce4(is, a)
		skip := fmt.Sprintf("%s_store%d", name, i)
		TESTQ(add, add)
		JZ(LabelRef(skip))
		if len(wrows) == 2 {
			old := XMM()
			VMOVSD(Mem{Base: dst}, old)
			VADDPS(old, out, out)
		} else {
			VADDPS(Mem{Base: dst}, out, out)
		}
		Label(skip)
		if len(wrows) == 2 {
			VMOVSD(out, Mem{Base: dst})
		} else {
			VMOVUPS(out, Mem{Base: dst})
		}
		if i < m-1 {
			ADDQ(ldd, dst)
		}
	}
}

// reduce4 sums each of four vectors horizontally into one XMM register
// [Σa0, Σa1, Σa2, Σa3]. It uses only instructions with EVEX forms, so the
// allocator may place operands in registers 16-31.
func reduce4(is isa, a []reg.VecVirtual) reg.VecVirtual {
	y := make([]reg.VecVirtual, 4)
	for r := range y {
		if is.lanes == 16 {
			hi := YMM()
			VEXTRACTF64X4(U8(1), a[r], hi)
			y[r] = YMM()
			VADDPS(hi, a[r].AsY(), y[r])
		} else {
			y[r] = a[r]
		}
	}
	// Pairwise interleave and add: after two rounds lane j of each 128-bit
	// half holds the partial sum of vector j.
	pair := func(p, q reg.VecVirtual, lo, hi func(...Op)) reg.VecVirtual {
		t0, t1, s := YMM(), YMM(), YMM()
		lo(q, p, t0)
		hi(q, p, t1)
		VADDPS(t1, t0, s)
		return s
	}
	unpckLPS := func(ops ...Op) { VUNPCKLPS(ops...) }
	unpckHPS := func(ops ...Op) { VUNPCKHPS(ops...) }
	unpckLPD := func(ops ...Op) { VUNPCKLPD(ops...) }
	unpckHPD := func(ops ...Op) { VUNPCKHPD(ops...) }
	s01 := pair(y[0], y[1], unpckLPS, unpckHPS)
	s23 := pair(y[2], y[3], unpckLPS, unpckHPS)
	v := pair(s01, s23, unpckLPD, unpckHPD)
	hi, out := XMM(), XMM()
	if is.lanes == 16 {
		VEXTRACTF32X4(U8(1), v, hi)
	} else {
		VEXTRACTF128(U8(1), v, hi)
	}
	VADDPS(hi, v.AsX(), out)
	return out
}

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
// dst *float32, ldd int, add int): dst[i*ldd+j] = Σ_{k<kn} x[i*ldx+k]·p[k*32+j]
// for i < m, j < 32 (or adds the sums when add ≠ 0), kn a multiple of 4.
// p is a packed panel of 32 weight rows (see pack): each step loads its two
// vectors of weights once and multiplies them by m broadcast activations,
// so a loaded weight is used m times and a loaded activation 32 times,
// against 6 and 4 in the dot-product tile. The accumulators are whole
// rows of dst: no horizontal reduction.
func gemm(is isa, m int) {
	name := fmt.Sprintf("gemmF32%sM%d", is.name, m)
	TEXT(name, NOSPLIT, "func(x *float32, ldx int, p *float32, kn int, dst *float32, ldd int, add int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s multiplies %d activation rows by a packed panel of %d weight rows with %s (see gemmF32Func).", name, m, panelWidth, is.name))
	bases := []reg.Register{Load(Param("x"), GP64())}
	var ldx, ldx3 reg.Register
	if m > 1 {
		ldx = Load(Param("ldx"), GP64())
		SHLQ(U8(2), ldx)
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
	p := Load(Param("p"), GP64())
	iters := Load(Param("kn"), GP64())
	const unroll = 4
	SHRQ(U8(log2(unroll)), iters)

	acc := make([][2]reg.VecVirtual, m)
	for i := range acc {
		for h := range 2 {
			acc[i][h] = is.vec()
			VXORPS(acc[i][h], acc[i][h], acc[i][h])
		}
	}
	step := 4 * panelWidth
	TESTQ(iters, iters)
	JZ(LabelRef(name + "_store"))
	Label(name + "_loop")
	for u := range unroll {
		w0, w1 := is.vec(), is.vec()
		VMOVUPS(Mem{Base: p, Disp: u * step}, w0)
		VMOVUPS(Mem{Base: p, Disp: u*step + 4*is.lanes}, w1)
		for i := range m {
			xv := is.vec()
			VBROADCASTSS(rowAt(i, bases, ldx, ldx3).Offset(4*u), xv)
			VFMADD231PS(w0, xv, acc[i][0])
			VFMADD231PS(w1, xv, acc[i][1])
		}
	}
	ADDQ(U32(unroll*step), p)
	for _, b := range bases {
		ADDQ(U8(4*unroll), b)
	}
	DECQ(iters)
	JNZ(LabelRef(name + "_loop"))

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

// accum generates accum<ISA> (accumBF16<ISA> with bf16): dst[0:d] +=
// Σ_{j<n} p[j]·v[j*ldv : j*ldv+d] for d rounded down to a multiple of the
// vector width. Four vectors of dst are accumulated at a time so four FMA
// chains are in flight. BF16 values are widened in registers as the tile
// kernels widen weights.
func accum(is isa, bf16 bool) {
	name, vtype, vscale := "accum"+is.name, "*float32", 4
	if bf16 {
		name, vtype, vscale = "accumBF16"+is.name, "*uint16", 2
	}
	TEXT(name, NOSPLIT, fmt.Sprintf("func(dst, p *float32, v %s, ldv, n, d int)", vtype))
	Pragma("noescape")
	if bf16 {
		Doc(name + " is the " + is.name + " accumBF16Func.")
	} else {
		Doc(name + " is the " + is.name + " accumFunc.")
	}
	dst := Load(Param("dst"), GP64())
	p := Load(Param("p"), GP64())
	v := Load(Param("v"), GP64())
	ldv := Load(Param("ldv"), GP64())
	SHLQ(U8(log2(vscale)), ldv)
	n := Load(Param("n"), GP64())
	d := Load(Param("d"), GP64())
	ANDQ(I32(^(is.lanes - 1)), d)
	SHLQ(U8(2), d)
	end := GP64()
	LEAQ(Mem{Base: dst, Index: d, Scale: 1}, end)
	bytes := 4 * is.lanes
	vbytes := vscale * is.lanes

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
			if bf16 {
				w := is.vec()
				VPMOVZXWD(src, w)
				VPSLLD(U8(16), w, w)
				VFMADD231PS(w, pj, acc[c])
			} else {
				VFMADD231PS(src, pj, acc[c])
			}
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
	m0, m1 := is.vec(), is.vec()
	VMOVUPS(Mem{Base: x}, m0)
	VMOVAPS(m0, m1)
	ADDQ(U8(4*is.lanes), x)
	DECQ(n)
	JZ(LabelRef(name + "_done"))
	Label(name + "_loop")
	VMAXPS(Mem{Base: x}, m0, m0)
	ADDQ(U8(4*is.lanes), x)
	DECQ(n)
	JZ(LabelRef(name + "_done"))
	VMAXPS(Mem{Base: x}, m1, m1)
	ADDQ(U8(4*is.lanes), x)
	DECQ(n)
	JNZ(LabelRef(name + "_loop"))
	Label(name + "_done")
	VMAXPS(m1, m0, m0)
	var y reg.VecVirtual
	if is.lanes == 16 {
		y = YMM()
		VEXTRACTF64X4(U8(1), m0, y)
		VMAXPS(y, m0.AsY(), y)
	} else {
		y = m0
	}
	xh, xs := XMM(), XMM()
	if is.lanes == 16 {
		VEXTRACTF32X4(U8(1), y, xh)
	} else {
		VEXTRACTF128(U8(1), y, xh)
	}
	VMAXPS(xh, y.AsX(), xs)
	VMOVHLPS(xs, xs, xh)
	VMAXPS(xh, xs, xs)
	VMOVSHDUP(xs, xh)
	VMAXSS(xh, xs, xs)
	Store(xs, ReturnIndex(0))
	VZEROUPPER()
	RET()
}

// readStreams generates read4<ISA>(p *byte, n int, ahead int): reads n
// bytes (rounded down to 4·128) as four streams, one per quarter, 128
// bytes of each per iteration, prefetching each stream ahead bytes ahead:
// the access pattern of a decode tile kernel, which reads four weight rows
// at once and prefetches the next tile. A single sequential stream leaves
// the memory system less to overlap and can read slower than the kernels
// it is meant to bound.
func readStreams(is isa) {
	name := "read4" + is.name
	TEXT(name, NOSPLIT, "func(p *byte, n int, ahead int)")
	Pragma("noescape")
	Doc(name + " streams n bytes from p into registers as four streams (see readStreams in the generator).")
	p := Load(Param("p"), GP64())
	n := Load(Param("n"), GP64())
	ahead := Load(Param("ahead"), GP64())
	q := GP64()
	MOVQ(n, q)
	SHRQ(U8(2), q)
	ANDQ(I32(^127), q)
	q3 := GP64()
	LEAQ(Mem{Base: q, Index: q, Scale: 2}, q3)
	iters := GP64()
	MOVQ(q, iters)
	SHRQ(U8(7), iters)
	JZ(LabelRef(name + "_done"))
	pf := GP64()
	LEAQ(Mem{Base: p, Index: ahead, Scale: 1}, pf)
	bytes := 4 * is.lanes
	regs := make([]reg.VecVirtual, 128/bytes)
	for i := range regs {
		regs[i] = is.vec()
	}
	Label(name + "_loop")
	for s := range 4 {
		for i, r := range regs {
			VMOVUPS(rowAddr(s, p, nil, q, q3).Offset(i*bytes), r)
		}
	}
	for s := range 4 {
		PREFETCHT0(rowAddr(s, pf, nil, q, q3))
		PREFETCHT0(rowAddr(s, pf, nil, q, q3).Offset(64))
	}
	ADDQ(U8(128), p)
	ADDQ(U8(128), pf)
	DECQ(iters)
	JNZ(LabelRef(name + "_loop"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// fmaChains is the number of independent FMA chains of fmaLoop: enough to
// cover a 4-cycle latency on two pipes with room to spare.
const fmaChains = 12

// fmaLoop generates fma<ISA>: iters iterations of fmaChains independent
// vector FMAs, for measuring peak FLOP/s.
func fmaLoop(is isa) {
	name := "fma" + is.name
	TEXT(name, NOSPLIT, "func(iters int)")
	Doc(fmt.Sprintf("%s runs iters×%d independent %d-lane FMAs.", name, fmaChains, is.lanes))
	n := Load(Param("iters"), GP64())
	a, b := is.vec(), is.vec()
	VXORPS(a, a, a)
	VXORPS(b, b, b)
	acc := make([]reg.VecVirtual, fmaChains)
	for i := range acc {
		acc[i] = is.vec()
		VXORPS(acc[i], acc[i], acc[i])
	}
	Label(name + "_loop")
	for _, c := range acc {
		VFMADD231PS(a, b, c)
	}
	DECQ(n)
	JNZ(LabelRef(name + "_loop"))
	// Keep the chains live to the end so none is dropped as dead.
	for _, c := range acc[1:] {
		VADDPS(c, acc[0], acc[0])
	}
	VZEROUPPER()
	RET()
}

// toBF16 generates toBF16<ISA>(dst *uint16, src *float32, n int): dst[i] =
// src[i] rounded to the nearest bfloat16, ties to even, for i < n rounded
// down to 16, as half.BF16FromFloat32 does (a NaN keeps its upper bits,
// made quiet). The AMX path feeds its tiles with these.
func toBF16(is isa) {
	name := "toBF16" + is.name
	TEXT(name, NOSPLIT, "func(dst *uint16, src *float32, n int)")
	Pragma("noescape")
	Doc(name + " rounds float32s to bfloat16 (see kernels.toBF16).")
	dst := Load(Param("dst"), GP64())
	src := Load(Param("src"), GP64())
	n := Load(Param("n"), GP64())
	SHRQ(U8(4), n)
	JZ(LabelRef(name + "_done"))
	one := vecConst(name+"_one", is.lanes, 1)
	bias := vecConst(name+"_bias", is.lanes, 0x7fff)
	quiet := vecConst(name+"_quiet", is.lanes, 0x40)
	Label(name + "_loop")
	v, t, q := is.vec(), is.vec(), is.vec()
	VMOVDQU32(Mem{Base: src}, v)
	// v + 0x7fff + (bit 16 of v), shifted down: round to nearest, ties to
	// the even bfloat16.
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
	VMOVDQU(h, Mem{Base: dst})
	ADDQ(U8(64), src)
	ADDQ(U8(32), dst)
	DECQ(n)
	JNZ(LabelRef(name + "_loop"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
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
	Label(name + "_loop")
	t := is.vec()
	VMOVUPS(Mem{Base: x}, t)
	VSUBPS(shv, t, t)
	p := e.exp(t)
	VMOVUPS(p, Mem{Base: x})
	VADDPS(p, sum, sum)
	ADDQ(U8(4*is.lanes), x)
	DECQ(n)
	JNZ(LabelRef(name + "_loop"))
	Label(name + "_done")
	// Horizontal sum.
	var y reg.VecVirtual
	if is.lanes == 16 {
		y = YMM()
		VEXTRACTF64X4(U8(1), sum, y)
		VADDPS(y, sum.AsY(), y)
	} else {
		y = sum
	}
	xh, xs := XMM(), XMM()
	if is.lanes == 16 {
		VEXTRACTF32X4(U8(1), y, xh)
	} else {
		VEXTRACTF128(U8(1), y, xh) // VEX: AVX2 machines lack EVEX
	}
	VADDPS(xh, y.AsX(), xs)
	VMOVHLPS(xs, xs, xh)
	VADDPS(xh, xs, xs)
	VMOVSHDUP(xs, xh)
	VADDSS(xh, xs, xs)
	Store(xs, ReturnIndex(0))
	VZEROUPPER()
	RET()
}
