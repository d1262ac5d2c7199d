package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

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

// zeroAcc makes rows×cols vector accumulators, zeroed.
func zeroAcc(is isa, rows, cols int) [][]vecReg {
	acc := make([][]vecReg, rows)
	for i := range acc {
		acc[i] = make([]vecReg, cols)
		for j := range acc[i] {
			acc[i][j] = is.vec()
			VXORPS(acc[i][j], acc[i][j], acc[i][j])
		}
	}
	return acc
}

// rowsStep emits one vector step of the dot products of activation rows
// with weight rows: the weight vectors at w loaded (and widened) once,
// each activation row's vector at xrow(i) loaded once, acc[i][r] += x_i·w_r.
func rowsStep(is isa, k wkind, w []Mem, xrow func(i int) Mem, acc [][]vecReg) {
	wv := make([]reg.VecVirtual, len(w))
	for r := range w {
		wv[r] = is.vec()
		loadW(k, w[r], wv[r])
	}
	for i := range acc {
		xv := is.vec()
		VMOVUPS(xrow(i), xv)
		for r := range wv {
			VFMADD231PS(wv[r], xv, acc[i][r])
		}
	}
}

// advanceRows moves a kernel's weight pointer wb on by wbytes and its
// activation row pointers (xb, and xb4 for rows 4-7 where m > 4) by xbytes.
func advanceRows(m, wbytes, xbytes int, wb, xb, xb4 reg.Register) {
	ADDQ(U8(wbytes), wb)
	ADDQ(U8(xbytes), xb)
	if m > 4 {
		ADDQ(U8(xbytes), xb4)
	}
}

// singleSteps emits the loop after a main loop of unroll steps an
// iteration: the iters%unroll steps left (iters, the steps in all, is
// overwritten), one at a time, then on to label done.
func singleSteps(name string, unroll int, iters reg.Register, done string, body, advance func(u int)) {
	ANDQ(U8(unroll-1), iters)
	JZ(LabelRef(done))
	Label(name + "_single_loop")
	body(0)
	advance(1)
	DECQ(iters)
	JNZ(LabelRef(name + "_single_loop"))
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
	acc := zeroAcc(is, m, len(wrows))
	// One main-loop iteration consumes a 64-byte line of each weight row
	// and prefetches one line of each next-tile row; single steps finish.
	unroll := max(1, 64/(is.lanes*wscale))
	step := is.lanes * wscale
	body := func(u int) {
		w := make([]Mem, len(wrows))
		for r, wr := range wrows {
			w[r] = rowAddr(wr, wb, nil, ldw, ldw3).Offset(u * step)
		}
		rowsStep(is, k, w, func(i int) Mem { return rowAddr(i, xb, xb4, ldx, ldx3).Offset(u * 4 * is.lanes) }, acc)
	}
	advance := func(u int) { advanceRows(m, u*step, u*4*is.lanes, wb, xb, xb4) }
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
		singleSteps(name, unroll, iters, name+"_reduce", body, advance)
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
			a = append(a, a...)
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

// vecReg is a vector register, virtual or physical (see pairAcc).
type vecReg interface {
	reg.Register
	reg.Vec
}

// reduce4 sums each of four vectors horizontally into one XMM register
// [Σa0, Σa1, Σa2, Σa3]. It uses only instructions with EVEX forms, so the
// allocator may place operands in registers 16-31.
func reduce4(is isa, a []vecReg) reg.VecVirtual {
	y := make([]Op, 4)
	for r := range y {
		if is.lanes == 16 {
			hi, yr := YMM(), YMM()
			VEXTRACTF64X4(U8(1), a[r], hi)
			VADDPS(hi, a[r].AsY(), yr)
			y[r] = yr
		} else {
			y[r] = a[r]
		}
	}
	// Pairwise interleave and add: after two rounds lane j of each 128-bit
	// half holds the partial sum of vector j.
	pair := func(p, q Op, lo, hi func(...Op)) reg.VecVirtual {
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

// bandsPrefetch is how far ahead, in bytes, an AVX-512 bands kernel of
// 16-bit weights prefetches each band's stream into L1 (0: none). One
// thread of the project's AMD EPYC VM, engine decode at batch 1 (three
// alternated rounds; bf16 and f16; gpt2-124m, llama-160m, llama-1b) read
// the weights at 82.1–87.4% of the probe without it, at 87.1–91.3% with
// 1536 bytes (24 lines) ahead: 1024 gained nothing, 2048 up to a point
// less than 1536, 3072 and more lost up to 8 points. F32 weights, read at
// 95% or more without, were not tried with it. A guess at why 16-bit
// weights need it: a line of them takes twice the instructions of an F32
// one, so the out-of-order window holds half the lines in flight.
func bandsPrefetch(is isa, k wkind) int {
	if is.lanes == 16 && k.size == 2 {
		return 1536
	}
	return 0
}

// gemvBands generates gemvBands{F32,BF16,F16}<ISA>(x *float32, w, ldw, kn,
// band, count int, dst *float32): for j < count and q < 4, dst[j+q·band] =
// Σ_k x[k]·w[(j+q·band)·ldw+k], k < kn rounded down to the vector width.
// It is the tile kernel of one activation row with the loop over weight
// rows inside: each step takes one row from each of four bands of rows,
// so the weights are read as four long sequential streams, the pattern
// the read probe measures, which the hardware prefetchers follow (16-bit
// weights in AVX-512 add a software prefetch: see bandsPrefetch).
func gemvBands(is isa, k wkind) {
	name := fmt.Sprintf("gemvBands%s%s", k.name, is.name)
	TEXT(name, NOSPLIT, fmt.Sprintf("func(x *float32, w %s, ldw, kn, band, count int, dst *float32)", k.gotype))
	Pragma("noescape")
	Doc(fmt.Sprintf("%s computes the dot products of x with four bands of weight rows with %s (see gemvBandsF32Func).", name, is.name))

	x := Load(Param("x"), GP64())
	wrow := Load(Param("w"), GP64())
	ldw := Load(Param("ldw"), GP64())
	SHLQ(U8(log2(k.size)), ldw)
	bs := Load(Param("band"), GP64())
	IMULQ(ldw, bs)
	bs3 := GP64()
	LEAQ(Mem{Base: bs, Index: bs, Scale: 2}, bs3)
	db := Load(Param("band"), GP64())
	SHLQ(U8(2), db)
	db3 := GP64()
	LEAQ(Mem{Base: db, Index: db, Scale: 2}, db3)
	dst := Load(Param("dst"), GP64())
	count := Load(Param("count"), GP64())
	TESTQ(count, count)
	JZ(LabelRef(name + "_done"))

	Label(name + "_row")
	// Steps of two vectors of each row into two accumulators per row, then
	// a last single vector: the same order of additions for every weight type,
	// so a 16-bit matrix gives the bits of its widened F32 copy.
	const unroll = 2
	acc := zeroAcc(is, tileRows, unroll)
	wb, xb := GP64(), GP64()
	MOVQ(wrow, wb)
	MOVQ(x, xb)
	iters := Load(Param("kn"), GP64())
	SHRQ(U8(log2(is.lanes)), iters)
	step := func(u int) {
		xv := is.vec()
		VMOVUPS(Mem{Base: xb}.Offset(4*is.lanes*u), xv)
		for q := range tileRows {
			wv := is.vec()
			loadW(k, rowAddr(q, wb, nil, bs, bs3).Offset(is.lanes*k.size*u), wv)
			VFMADD231PS(wv, xv, acc[q][u])
		}
	}
	pairs := GP64()
	MOVQ(iters, pairs)
	SHRQ(U8(1), pairs)
	JZ(LabelRef(name + "_single"))
	Label(name + "_loop")
	for u := range unroll {
		step(u)
	}
	if d := bandsPrefetch(is, k); d > 0 {
		for q := range tileRows {
			PREFETCHT0(rowAddr(q, wb, nil, bs, bs3).Offset(d))
		}
	}
	ADDQ(U8(unroll*is.lanes*k.size), wb)
	ADDQ(U8(unroll*4*is.lanes), xb)
	DECQ(pairs)
	JNZ(LabelRef(name + "_loop"))
	Label(name + "_single")
	ANDQ(U8(1), iters)
	JZ(LabelRef(name + "_sum"))
	step(0)

	Label(name + "_sum")
	sums := make([]vecReg, tileRows)
	for q := range acc {
		sums[q] = acc[q][0]
		VADDPS(acc[q][1], acc[q][0], acc[q][0])
	}
	out := reduce4(is, sums)
	VMOVSS(out, Mem{Base: dst})
	VEXTRACTPS(U8(1), out, Mem{Base: dst, Index: db, Scale: 1})
	VEXTRACTPS(U8(2), out, Mem{Base: dst, Index: db, Scale: 2})
	VEXTRACTPS(U8(3), out, Mem{Base: dst, Index: db3, Scale: 1})
	nextRow(name, ldw, wrow, dst, count)
}

// gemvBandsRows generates gemvBands{F32,BF16,F16}<ISA>M<m>(x *float32,
// ldx int, w, ldw, kn, band, count int, dst *float32, ldd int): for i < m,
// j < count and q < nb, dst[i·ldd+j+q·band] = Σ_k x[i·ldx+k]·w[(j+q·band)·ldw+k],
// k < kn rounded down to the vector width. It is gemvBands for a decode
// batch: each step takes one row from each of nb (≤ 3: an index scale)
// bands and multiplies it by all m activation rows, which stay in cache
// (L1 for rows that fit decodeXBudget), so the weights are read once, as
// nb long sequential streams, where the tile kernels read four short rows
// at a time and prefetch the next four. Each dot product keeps one
// accumulator, as in the tile kernels.
func gemvBandsRows(is isa, k wkind, m, nb int) {
	name := fmt.Sprintf("gemvBands%s%sM%d", k.name, is.name, m)
	// x's element: float32, or bfloat16 for wBF16Pairs.
	xtype, xsize := "*float32", 4
	if k == wBF16Pairs {
		xtype, xsize = "*uint16", 2
	}
	TEXT(name, NOSPLIT, fmt.Sprintf("func(x %s, ldx int, w %s, ldw, kn, band, count int, dst *float32, ldd int)", xtype, k.gotype))
	Pragma("noescape")
	Doc(fmt.Sprintf("%s computes the dot products of %d activation rows with %d bands of weight rows with %s (see gemvBandsRowsF32Func).", name, m, nb, is.name))

	ldx := Load(Param("ldx"), GP64())
	SHLQ(U8(log2(xsize)), ldx)
	var ldx3 reg.Register
	if m > 3 {
		ldx3 = GP64()
		LEAQ(Mem{Base: ldx, Index: ldx, Scale: 2}, ldx3)
	}
	wrow := Load(Param("w"), GP64())
	bs := Load(Param("band"), GP64())
	ldw := Load(Param("ldw"), GP64())
	SHLQ(U8(log2(k.size)), ldw)
	IMULQ(ldw, bs)
	dst := Load(Param("dst"), GP64())
	count := Load(Param("count"), GP64())
	TESTQ(count, count)
	JZ(LabelRef(name + "_done"))

	Label(name + "_row")
	var acc [][]vecReg
	if k == wBF16Pairs {
		acc = pairAcc(m, nb)
	} else {
		acc = zeroAcc(is, m, nb)
	}
	wb, xb := GP64(), GP64()
	MOVQ(wrow, wb)
	Load(Param("x"), xb)
	var xb4 reg.Register
	if m > 4 {
		xb4 = GP64()
		LEAQ(Mem{Base: xb, Index: ldx, Scale: 4}, xb4)
	}
	// Band q's row is q·bs bytes past band 0's (q < 3: an index scale).
	bandAddr := func(q int) Mem {
		if q == 0 {
			return Mem{Base: wb}
		}
		return Mem{Base: wb, Index: bs, Scale: uint8(q)}
	}
	// One main-loop iteration consumes a 64-byte line of each band's row
	// and prefetches the line rowBandsPrefetch bytes ahead of it.
	unroll := max(1, 64/(is.lanes*k.size))
	step, xstep, perStep := is.lanes*k.size, 4*is.lanes, is.lanes
	if k == wBF16Pairs {
		// A step is a whole vector of 32 bfloat16 pairs' halves.
		unroll, step, xstep, perStep = 1, 64, 64, 32
	}
	body := func(u int) {
		w := make([]Mem, nb)
		for q := range w {
			w[q] = bandAddr(q).Offset(u * step)
		}
		xrow := func(i int) Mem { return rowAddr(i, xb, xb4, ldx, ldx3).Offset(u * xstep) }
		if k == wBF16Pairs {
			pairsStep(w, xrow, acc)
		} else {
			rowsStep(is, k, w, xrow, acc)
		}
	}
	advance := func(u int) { advanceRows(m, u*step, u*xstep, wb, xb, xb4) }
	lines := Load(Param("kn"), GP64())
	SHRQ(U8(log2(perStep*unroll)), lines)
	JZ(LabelRef(name + "_single"))
	Label(name + "_loop")
	for u := range unroll {
		body(u)
	}
	for q := range nb {
		PREFETCHT0(bandAddr(q).Offset(rowBandsPrefetch))
	}
	advance(unroll)
	DECQ(lines)
	JNZ(LabelRef(name + "_loop"))
	Label(name + "_single")
	if unroll > 1 {
		iters := Load(Param("kn"), GP64())
		SHRQ(U8(log2(perStep)), iters)
		singleSteps(name, unroll, iters, name+"_sum", body, advance)
	}

	Label(name + "_sum")
	db := Load(Param("band"), GP64())
	SHLQ(U8(2), db)
	ldd := Load(Param("ldd"), GP64())
	SHLQ(U8(2), ldd)
	d := GP64()
	MOVQ(dst, d)
	for i := range m {
		a := make([]vecReg, 4)
		for q := range a {
			a[q] = acc[i][min(q, nb-1)]
		}
		out := reduce4(is, a)
		VMOVSS(out, Mem{Base: d})
		for q := 1; q < nb; q++ {
			VEXTRACTPS(U8(q), out, Mem{Base: d, Index: db, Scale: uint8(q)})
		}
		if i < m-1 {
			ADDQ(ldd, d)
		}
	}
	Load(Param("ldw"), wb)
	SHLQ(U8(log2(k.size)), wb)
	nextRow(name, wb, wrow, dst, count)
}

// nextRow ends a bands kernel's loop over rows: every band's next row
// (wrow advanced by the row bytes in ldw), the next output, another turn
// while count rows are left, then the return.
func nextRow(name string, ldw, wrow, dst, count reg.Register) {
	ADDQ(ldw, wrow)
	ADDQ(U8(4), dst)
	DECQ(count)
	JNZ(LabelRef(name + "_row"))

	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// batchBands is the bands of the gemvBandsRows kernels (cpu.batchBands):
// at 8 rows, 24 accumulators beside the weights and x.
const batchBands = 3

// rowBandsPrefetch is how far ahead, in bytes, a gemvBandsRows kernel
// prefetches each band's stream into L1. Without it the 8-row kernels
// streamed weights slower than the tile kernels they replace (2 threads
// of the project's AMD EPYC VM, F32 matrices of 1024 rows from memory:
// 16–22 GB/s against 24–30 in most runs), though in L2 they multiply a
// third faster: a line takes 8 rows' FMAs, so the out-of-order window
// holds few lines in flight. 1024 and 2048 bytes ahead measured alike in
// the engine's batch-8 decode, 3072 a little slower; into L2
// (PREFETCHT1) no better.
const rowBandsPrefetch = 2048
