package cpu

import (
	"fmt"
	"unsafe"

	"github.com/tandemllm/tandem/compute"
)

// l2Budget is the weight bytes one MatMul chunk aims to keep cache-resident
// while every activation row streams past it (a per-core L2 is 0.5-2 MiB).
const l2Budget = 256 << 10

// matmulTask splits dst[m, N] = x[m, K]·wᵀ over chunks of weight rows. Each
// chunk is read from memory once and reused from cache by all m rows, so
// decode (small m) streams the weights exactly once per call.
type matmulTask struct {
	k         *kernels
	dst, x    []float32
	w         *mat
	m         int
	chunkRows int
	kc        int // inner-dimension pass (see kcMax, decodeXBudget)
	ldx       int // row stride of x (see padStride)
	// The packed path (see runPacked): k0 is w.cols rounded down to a
	// multiple of 16, pack a buffer of chunkRows·k0 per worker.
	packed bool
	k0     int
	pack   [][]float32
	// The transposed path (see runTransposed): x packed into xPanels
	// panels of panelRows rows.
	transposed bool
	xp         []float32
	xPanels    int
	// pairs: BF16 weights on the gemmPairs kernels (see usePairsGemm), x
	// rounded to bfloat16 in xb.
	pairs bool
	// The AMX path (see amx.go): xb is x rounded to bfloat16, mPad rows
	// of lda; packU and tail are per worker.
	amx       bool
	xb        []uint16
	lda, mPad int
	packU     [][]uint32
	padW      [][]uint16
	tail      [][]float32
	roundingX bool // the pass that fills xb, before the products
	// The streaming AMX path (see amx_stream.go): bt is x in the B tiles'
	// layout.
	stream bool
	bt     []uint32
}

// MatMul: dst[m, w.Rows] = x[m, w.Cols] · wᵀ.
func (b *Backend) MatMul(dst, x compute.Buf, w compute.Mat, m int) {
	wm := matOf(w)
	t := &b.mm
	*t = matmulTask{k: b.k, dst: data(dst), x: data(x), w: wm, m: m}
	if m <= 0 {
		return
	}
	if len(t.x) < m*wm.cols || len(t.dst) < m*wm.rows {
		panic(fmt.Sprintf("cpu: MatMul of %d rows by [%d, %d]: x has %d values, dst %d",
			m, wm.rows, wm.cols, len(t.x), len(t.dst)))
	}
	if t.useAMXStream() {
		b.startAMXStream(t)
		b.pool.run(t, (wm.rows+t.chunkRows-1)/t.chunkRows)
		*t = matmulTask{} // drop the references to the caller's buffers
		return
	}
	if t.useAMX() {
		b.startAMX(t)
		t.roundingX = true
		b.pool.run(t, t.mPad/amxRows)
		t.roundingX = false
		b.pool.run(t, (wm.rows+t.chunkRows-1)/t.chunkRows)
		*t = matmulTask{}
		return
	}
	t.ldx = wm.cols
	packed := t.usePacked()
	t.pairs = packed && t.usePairsGemm()
	transposed := packed && m <= transposedMaxM && (wm.dtype == compute.F32 || t.pairs || t.transposed16())
	packed = packed && !transposed
	if m > 1 && wm.cols%padStride == 0 && !packed {
		// Rows a multiple of 4 KiB apart fall in the same L1 set: with the
		// weight rows (also 4 KiB apart) they overflow its 12 ways and the
		// activation tile is evicted. A copy with one line of padding per
		// row spreads it over the sets. The packed path's weights are
		// contiguous panels, and its activation tiles measured faster read
		// in place than copied (a 512×1024 by 1024×1024 product 3.19 →
		// 2.83 ms, the copy on one thread a tenth of the call).
		t.ldx = wm.cols + 16
		xp := grow(&b.xpad, m*t.ldx)
		for i := range m {
			copy(xp[i*t.ldx:i*t.ldx+wm.cols], t.x[i*wm.cols:])
		}
		t.x = xp
	}
	if transposed {
		b.startTransposed(t)
		b.pool.run(t, (wm.rows+t.chunkRows-1)/t.chunkRows)
		*t = matmulTask{}
		return
	}
	if packed {
		t.packed = true
		t.k0 = wm.cols / 16 * 16
		if t.pairs {
			t.xb = b.roundedX(t.x[:m*t.ldx])
		}
		rows := max(panelRows, packBudget/(4*t.k0)/panelRows*panelRows)
		per := (wm.rows + packedChunksPerThread*b.threads - 1) / (packedChunksPerThread * b.threads)
		rows = min(rows, (per+panelRows-1)/panelRows*panelRows)
		t.chunkRows = rows
		if len(b.packBuf) < b.threads {
			b.packBuf = make([][]float32, b.threads)
		}
		for w := range b.threads {
			grow(&b.packBuf[w], rows*t.k0)
		}
		t.pack = b.packBuf
		b.pool.run(t, (wm.rows+rows-1)/rows)
		*t = matmulTask{}
		return
	}
	if t.usePairs() {
		t.xb = b.roundedX(t.x[:m*t.ldx])
	}
	// Decode chunks only need their current weight tile cached; prefill
	// chunks are reread by every m-tile, so they are sized to stay in L2.
	rows := wm.rows
	t.kc = kcFor(wm.cols, t.k.kStep, max(1, decodeXBudget/(4*m)))
	if (m+t.k.maxM-1)/t.k.maxM > decodeTiles {
		t.kc = kcFor(wm.cols, t.k.kStep, kcMax)
		rows = l2Budget / (t.kc * wm.dtype.Size())
	}
	// A few chunks per thread, so uneven progress evens out; one each on
	// the bands path, whose streams are the longer for it.
	per := chunksPerThread
	if t.useBands() {
		per = 1
	}
	rows = min(rows, (wm.rows+per*b.threads-1)/(per*b.threads))
	rows = max(tileRows, (rows+tileRows-1)/tileRows*tileRows)
	t.chunkRows = rows
	b.pool.run(t, (wm.rows+rows-1)/rows)
	*t = matmulTask{}
}

// usePacked reports whether MatMul takes the packed path (or, for few
// rows, the transposed one): prefill-sized m with kernels that pack
// weights of this dtype, or at least pairsMinM rows on the pairs kernels.
func (t *matmulTask) usePacked() bool {
	k := t.k
	return k.hasPack(t.w.dtype) && t.w.rows >= panelRows && t.w.cols >= 16 &&
		((t.m+k.maxM-1)/k.maxM > decodeTiles || t.m >= pairsMinM && t.usePairsGemm())
}

// pairsMinM is the fewest activation rows of a BF16 MatMul past the bands
// kernels' 8 that take the transposed path on the pairs kernels rather
// than the widening tile kernels: at 14 and 16 rows the pairs (a panel of
// 32 rows, partly zero) took 1.2–1.9× less time from memory, at 12 and 13
// rows they lost on five of seven shapes (BenchmarkGEMV with those row
// counts added, the project's 2-core AMD EPYC VM, docs/benchmarking.md).
const pairsMinM = 14

// hasPack reports whether k packs weights of dtype dt.
func (k *kernels) hasPack(dt compute.DType) bool {
	switch dt {
	case compute.F32:
		return k.packF32 != nil
	case compute.BF16:
		return k.packBF16 != nil
	case compute.F16:
		return k.packF16 != nil
	}
	return false
}

// pack16 packs weight rows [r, r+16) of w, inputs [0, kn rounded down to
// 16), into half of a panel at dst (see kernels.packF32).
func (k *kernels) pack16(dst *float32, w *mat, r int) {
	kn := w.cols
	switch w.dtype {
	case compute.F32:
		k.packF32(dst, &w.f32[r*kn], kn, kn)
	case compute.BF16:
		k.packBF16(dst, &w.u16[r*kn], kn, kn)
	case compute.F16:
		k.packF16(dst, &w.u16[r*kn], kn, kn)
	}
}

// dotRow is Σ_i x[i]·w[j, k0+i] in float32, whatever w's dtype.
func (w *mat) dotRow(x []float32, j, k0 int) float32 {
	off := j*w.cols + k0
	switch w.dtype {
	case compute.BF16:
		return dotBF16(x, w.u16[off:])
	case compute.F16:
		return dotF16(x, w.u16[off:])
	}
	return dotF32(x, w.f32[off:])
}

// packBudget is the packed weight bytes of one chunk of the packed path,
// kept in L2 while every activation row streams past it.
const packBudget = 256 << 10

// runPacked computes chunk c on the packed path: it packs the chunk's
// weights into panels of panelRows rows transposed (each step's weights
// contiguous), then multiplies every group of up to gemmM activation rows
// by each panel with outer products. Each loaded weight vector is used by
// the whole group and each activation by 32 outputs, and no dot product
// needs a horizontal reduction; the dot-product tile kernels reread the
// F32 weights from L2 for every 6 rows. Rows past the last whole panel
// and inputs past k0 take the tile kernels and Go.
func (t *matmulTask) runPacked(c, w int) {
	n, kn, k0, m := t.w.rows, t.w.cols, t.k0, t.m
	r0 := c * t.chunkRows
	r1 := min(r0+t.chunkRows, n)
	panels := (r1 - r0) / panelRows
	buf := t.pack[w]
	if t.pairs {
		t.runPackedPairs(r0, r1, buf)
		return
	}
	for p := range panels {
		r := r0 + p*panelRows
		pp := buf[p*panelRows*k0:]
		t.k.pack16(&pp[0], t.w, r)
		t.k.pack16(&pp[16], t.w, r+16)
	}
	tiles := (m + t.k.gemmM - 1) / t.k.gemmM
	for ti := range tiles {
		i0, i1 := ti*m/tiles, (ti+1)*m/tiles
		g := t.k.gemmF32[i1-i0]
		for p := range panels {
			r := r0 + p*panelRows
			g(&t.x[i0*t.ldx], t.ldx, &buf[p*panelRows*k0], k0, &t.dst[i0*n+r], n, 0, (*byte)(unsafe.Pointer(&t.x[i0*t.ldx])))
		}
	}
	if pr := r0 + panels*panelRows; k0 < kn {
		for i := range m {
			xi := t.x[i*t.ldx+k0 : i*t.ldx+kn]
			for j := r0; j < pr; j++ {
				t.dst[i*n+j] += t.w.dotRow(xi, j, k0)
			}
		}
	}
	if rr := r0 + panels*panelRows; rr < r1 {
		tiles := (m + t.k.maxM - 1) / t.k.maxM
		for ti := range tiles {
			t.blockK(ti*m/tiles, (ti+1)*m/tiles, rr, r1, 0, kn, prefillAhead)
		}
	}
}

// roundedX is x rounded to bfloat16 for the pairs kernels, in b's buffer
// (rows padded as x's are).
func (b *Backend) roundedX(x []float32) []uint16 {
	xb := grow(&b.xbf16, len(x))[:len(x)]
	b.k.round16(compute.BF16, xb, x)
	return xb
}

// usePairsGemm reports whether a BF16 MatMul on the packed or transposed
// path takes the gemmPairs kernels: a kernel set with them and rows of
// whole 32-wide steps.
func (t *matmulTask) usePairsGemm() bool {
	return t.w.dtype == compute.BF16 && t.k.gemmPairs[1] != nil && t.w.cols%32 == 0
}

// runPackedPairs is runPacked on the gemmPairs kernels for weight rows
// [r0, r1): each panel of 32 rows packed as pairs (two bfloat16 a 32-bit
// word, no widening), the rows past the last whole panel on the pairs
// bands kernels, a tile of at most maxTileM activation rows at a time.
func (t *matmulTask) runPackedPairs(r0, r1 int, buf []float32) {
	n, kn, m := t.w.rows, t.w.cols, t.m
	kp := kn / 2
	panels := (r1 - r0) / panelRows
	for p := range panels {
		pp := buf[p*panelRows*kp:]
		for h := 0; h < panelRows; h += 16 {
			t.k.packF32(&pp[h], (*float32)(unsafe.Pointer(&t.w.u16[(r0+p*panelRows+h)*kn])), kp, kp)
		}
	}
	tiles := (m + t.k.gemmM - 1) / t.k.gemmM
	for ti := range tiles {
		i0, i1 := ti*m/tiles, (ti+1)*m/tiles
		g, x := t.k.gemmPairs[i1-i0], &t.xb[i0*t.ldx]
		for p := range panels {
			g(x, t.ldx, (*uint32)(unsafe.Pointer(&buf[p*panelRows*kp])), kp, &t.dst[i0*n+r0+p*panelRows], n, 0, (*byte)(unsafe.Pointer(x)))
		}
	}
	if r := r0 + panels*panelRows; r < r1 {
		tiles := (m + maxTileM - 1) / maxTileM
		for ti := range tiles {
			i0, i1 := ti*m/tiles, (ti+1)*m/tiles
			t.k.rowBandsBF16Pairs[i1-i0](&t.xb[i0*t.ldx], t.ldx, &t.w.u16[r*kn], kn, kn, 0, r1-r, &t.dst[i0*n+r], n)
		}
	}
}

// transposedMaxM is the most activation rows of an F32 MatMul that takes
// the transposed path rather than the packed one (decode batches): with
// so few rows per weight, packing the weights took a quarter of the
// packed path's time and its products ran at ~60% of the FMA peak (38% in
// all at 32 rows); transposed, llama-160m's and gpt2-124m's F32 batch-32
// decode ran 25% and 10% faster (docs/benchmarking.md). BF16 matrices on
// the pairs kernels take it too, and other large 16-bit ones (see
// transposed16), widened in registers by gemmBF16 and gemmF16.
const transposedMaxM = 72

// transposed16MinBytes is the least weight bytes of a BF16 or F16 matrix
// that takes the transposed path (kernels.transposed16Min). Past it
// (llama-1b's matrices, every LM head) the packed path, packing from
// memory, ran 15–30% slower than gemmBF16 and gemmF16 at batch 32 (F16:
// llama-1b 117 → 144 tokens/s); below it packing costs little and the
// packed kernel, which widens nothing as it multiplies, ran up to a
// third faster (the project's 2-core AMD EPYC VM, docs/benchmarking.md).
const transposed16MinBytes = 8 << 20

// transposed16 reports whether a BF16 or F16 MatMul takes the transposed
// path with gemmBF16 or gemmF16 (see transposedMaxM): a kernel set with
// the kernel and a matrix of at least its transposed16Min bytes.
func (t *matmulTask) transposed16() bool {
	var g gemm16Func
	switch t.w.dtype {
	case compute.BF16:
		g = t.k.gemmBF16[1]
	case compute.F16:
		g = t.k.gemmF16[1]
	}
	return g != nil && 2*t.w.rows*t.w.cols >= t.k.transposed16Min
}

// startTransposed packs x into panels for runTransposed: panel p holds
// rows [32p, 32p+32) of x (zero past m) transposed, as the packed path's
// weight panels are, and sets the chunking over weight rows.
func (b *Backend) startTransposed(t *matmulTask) {
	m, kn := t.m, t.w.cols
	t.transposed = true
	t.k0 = kn / 16 * 16
	t.xPanels = (m + panelRows - 1) / panelRows
	// The pack kernels read 16 whole rows: x padded with zero rows.
	rows := t.xPanels * panelRows
	xz := grow(&b.xpad, rows*t.ldx)
	if &xz[0] != &t.x[0] {
		copy(xz, t.x[:m*t.ldx])
	}
	clear(xz[m*t.ldx : rows*t.ldx])
	t.x = xz
	if t.pairs {
		// Panels of pairs of x rounded to bfloat16, two a 32-bit word.
		t.k0 = kn
		kp, ldp := kn/2, t.ldx/2
		t.xb = b.roundedX(t.x[:rows*t.ldx])
		t.xp = grow(&b.xPanels, t.xPanels*panelRows*kp)
		for p := range t.xPanels {
			for h := 0; h < panelRows; h += 16 {
				t.k.packF32(&t.xp[p*panelRows*kp+h], (*float32)(unsafe.Pointer(&t.xb[(p*panelRows+h)*t.ldx])), ldp, kp)
			}
		}
	} else {
		t.xp = grow(&b.xPanels, t.xPanels*panelRows*t.k0)
		for p := range t.xPanels {
			for h := 0; h < panelRows; h += 16 {
				t.k.packF32(&t.xp[p*panelRows*t.k0+h], &t.x[(p*panelRows+h)*t.ldx], t.ldx, t.k0)
			}
		}
	}
	per := (t.w.rows + chunksPerThread*b.threads - 1) / (chunksPerThread * b.threads)
	t.chunkRows = max(t.k.gemmM, (per+t.k.gemmM-1)/t.k.gemmM*t.k.gemmM)
}

// runTransposed computes chunk c of weight rows as the transposed product
// dstᵀ = w·xᵀ: groups of gemmM weight rows are the gemm kernel's broadcast
// operand, read in place, and x's packed panels its vector operand, so no
// weight is packed; each gemmM×32 block of dstᵀ is transposed into dst.
func (t *matmulTask) runTransposed(c int) {
	n, kn, k0, m := t.w.rows, t.w.cols, t.k0, t.m
	r0 := c * t.chunkRows
	r1 := min(r0+t.chunkRows, n)
	var blk [maxGemmM * panelRows]float32
	for r := r0; r < r1; r += t.k.gemmM {
		mb := min(t.k.gemmM, r1-r)
		// The kernel prefetches the next group's weights into L2 as it
		// goes: at batch 32, F32, llama-1b's projections took 213 → 160
		// ms a step and gpt2-124m's 19.5 → 17.0 (docs/benchmarking.md).
		next := min(r+mb, n-mb)
		for p := range t.xPanels {
			switch {
			case t.pairs:
				t.k.gemmPairs[mb](&t.w.u16[r*kn], kn, (*uint32)(unsafe.Pointer(&t.xp[p*panelRows*k0/2])), k0/2, &blk[0], panelRows, 0, (*byte)(unsafe.Pointer(&t.w.u16[next*kn])))
			case t.w.dtype == compute.F16:
				t.k.gemmF16[mb](&t.w.u16[r*kn], kn, &t.xp[p*panelRows*k0], k0, &blk[0], panelRows, 0, (*byte)(unsafe.Pointer(&t.w.u16[next*kn])))
			case t.w.dtype == compute.BF16:
				t.k.gemmBF16[mb](&t.w.u16[r*kn], kn, &t.xp[p*panelRows*k0], k0, &blk[0], panelRows, 0, (*byte)(unsafe.Pointer(&t.w.u16[next*kn])))
			default:
				t.k.gemmF32[mb](&t.w.f32[r*kn], kn, &t.xp[p*panelRows*k0], k0, &blk[0], panelRows, 0, (*byte)(unsafe.Pointer(&t.w.f32[next*kn])))
			}
			for j := range min(panelRows, m-p*panelRows) {
				row := t.dst[(p*panelRows+j)*n+r:][:mb]
				for wr := range row {
					row[wr] = blk[wr*panelRows+j]
				}
			}
		}
	}
	if k0 < kn {
		for i := range m {
			xi := t.x[i*t.ldx+k0 : i*t.ldx+kn]
			for j := r0; j < r1; j++ {
				t.dst[i*n+j] += t.w.dotRow(xi, j, k0)
			}
		}
	}
}

func (t *matmulTask) run(c, w int) {
	switch {
	case t.transposed:
		t.runTransposed(c)
		return
	case t.roundingX:
		t.roundRows(c)
		return
	case t.amx:
		t.runAMX(c, w)
		return
	case t.stream:
		t.runAMXStream(c, w)
		return
	}
	if t.packed {
		t.runPacked(c, w)
		return
	}
	n := t.w.rows
	r0 := c * t.chunkRows
	r1 := min(r0+t.chunkRows, n)
	// Split m into the fewest, most even tiles the kernels take.
	tiles := (t.m + t.k.maxM - 1) / t.k.maxM
	if tiles <= decodeTiles {
		// Decode: every m-tile uses a weight tile while it is in L1, so the
		// weights stream from memory once, overlapped by the prefetches.
		// Several activation rows of long inputs are split into passes
		// (see decodeXBudget), each streaming its slice of every row.
		kn := t.w.cols
		if t.useBands() {
			t.runBands(r0, r1)
			return
		}
		for k0 := 0; k0 < kn; k0 += t.kc {
			k1 := min(k0+t.kc, kn)
			for r := r0; r < r1; r += tileRows {
				for ti := range tiles {
					t.blockK(ti*t.m/tiles, (ti+1)*t.m/tiles, r, min(r+tileRows, r1), k0, k1, 0)
				}
			}
		}
		return
	}
	// Prefill: an activation tile stays in L1 while the chunk's weights,
	// sized to stay in L2, stream past it. Long rows are split into passes
	// of at most kcMax, so the tile fits in L1 beside the weight rows.
	kn := t.w.cols
	for k0 := 0; k0 < kn; k0 += t.kc {
		k1 := min(k0+t.kc, kn)
		for ti := range tiles {
			t.blockK(ti*t.m/tiles, (ti+1)*t.m/tiles, r0, r1, k0, k1, prefillAhead)
		}
	}
}

// useBands reports whether a decode MatMul takes the bands kernels
// (runBands): a kernel set that has them for this many activation rows,
// and rows of activations that fit decodeXBudget unless the weights are
// F32. Rows of any length go in one pass: past decodeXBudget the rows of
// activations are read from L2.
func (t *matmulTask) useBands() bool {
	switch {
	case t.m == 1:
		switch t.w.dtype {
		case compute.F32:
			return t.k.bandsF32 != nil
		case compute.BF16:
			return t.k.bandsBF16 != nil
		}
		return t.k.bandsF16 != nil
	case t.m > maxTileM:
		return false
	case t.usePairs():
		return true
	case t.w.dtype != compute.F32 && t.m*t.w.cols*4 > decodeXBudget:
		// Activations past L1 are read from L2, m loads for each weight
		// vector: for 16-bit weights, twice the bytes per weight byte of
		// F32's. llama-1b's BF16 and F16 batch-8 decode (rows of 2048 and
		// 8192) ran 5–7% slower on them than on the tile kernels, which split
		// the rows to keep the activations in L1; F32's 14% faster.
		return false
	}
	switch t.w.dtype {
	case compute.F32:
		return t.k.rowBandsF32[t.m] != nil
	case compute.BF16:
		return t.k.rowBandsBF16[t.m] != nil
	}
	return t.k.rowBandsF16[t.m] != nil
}

// usePairs reports whether a decode MatMul takes the pairs kernels
// (rowBandsBF16Pairs): BF16 weights, 2 to maxM activation rows of a whole
// number of 32-wide steps. Rows of any length go in one pass, as F32's
// do (see useBands): per weight byte the pairs kernels load as many
// activation bytes as F32's bands, not twice as many as the widening
// ones. Past decodeXBudget, in the engine's batch-8 BF16 decode (two
// threads, AMD EPYC VM, three rounds): gpt2-124m's 3072-wide down_proj
// took 1.73–1.82 ms a step against 1.91–1.99 on the tile kernels,
// llama-1b's 8192-wide level.
func (t *matmulTask) usePairs() bool {
	return t.w.dtype == compute.BF16 && t.m >= 2 && t.m <= maxTileM && t.k.rowBandsBF16Pairs[t.m] != nil &&
		t.w.cols%32 == 0
}

// runBands computes weight rows [r0, r1) with the bands kernels. The rows
// are taken as bands (four for one activation row, batchBands for
// a batch), one row of each band a step, so the weights stream from
// memory as a few long sequential reads, as in the read probe, not as the
// tile kernels' four rows of a few KiB each with the next tile
// prefetched. On the project's 2-core AMD EPYC VM (C loops over 256 MiB,
// one thread) the tile pattern read 31–33 GB/s, the bands 38–42 and the
// probe 41–43; through Go a call per tile lost a further sixth, which one
// call per chunk saves. With one chunk per thread (see MatMul) the bands
// are the longest: 2–3 points more of the probe for 16-bit weights than
// four.
func (t *matmulTask) runBands(r0, r1 int) {
	n, kn, m := t.w.rows, t.w.cols, t.m
	nb := tileRows
	if m > 1 {
		nb = batchBands
	}
	band := (r1 - r0) / nb
	if nb != tileRows {
		// The rows past the bands take the tile kernels, whose leftovers
		// past a whole tile take Go: the bands leave a whole number of
		// tiles (four bands of a chunk's rows, a multiple of four, do).
		band = band / tileRows * tileRows
	}
	k0 := kn / t.k.kStep * t.k.kStep
	x, dst := &t.x[0], &t.dst[r0]
	switch {
	case t.xb != nil:
		// Every row by the pairs kernel, the activations rounded alike:
		// the rows past the bands as three bands of one.
		pairs := t.k.rowBandsBF16Pairs[m]
		pairs(&t.xb[0], t.ldx, &t.w.u16[r0*kn], kn, kn, band, band, dst, n)
		if r := r0 + nb*band; r < r1 {
			pairs(&t.xb[0], t.ldx, &t.w.u16[r*kn], kn, kn, 0, r1-r, &t.dst[r], n)
		}
		return
	case m > 1 && t.w.dtype == compute.F32:
		t.k.rowBandsF32[m](x, t.ldx, &t.w.f32[r0*kn], kn, k0, band, band, dst, n)
	case m > 1 && t.w.dtype == compute.BF16:
		t.k.rowBandsBF16[m](x, t.ldx, &t.w.u16[r0*kn], kn, k0, band, band, dst, n)
	case m > 1:
		t.k.rowBandsF16[m](x, t.ldx, &t.w.u16[r0*kn], kn, k0, band, band, dst, n)
	case t.w.dtype == compute.F32:
		t.k.bandsF32(x, &t.w.f32[r0*kn], kn, k0, band, band, dst)
	case t.w.dtype == compute.BF16:
		t.k.bandsBF16(x, &t.w.u16[r0*kn], kn, k0, band, band, dst)
	default:
		t.k.bandsF16(x, &t.w.u16[r0*kn], kn, k0, band, band, dst)
	}
	// The inputs past the last whole vector, then the rows past the last
	// whole band, as the tile path does them.
	if k0 < kn && band > 0 {
		t.blockK(0, m, r0, r0+nb*band, k0, kn, 0)
	}
	if r := r0 + nb*band; r < r1 {
		t.blockK(0, m, r, r1, 0, kn, 0)
	}
}

// kcMax bounds the inner dimension of one prefill pass: an activation tile
// of 6 rows × 1024 float32 (24 KiB) and the weight rows streaming past it
// fit in a 48 KiB L1; a whole 2048- or 3072-wide row of 6 would not, and
// the tile would be reread from L2 by every weight tile.
const kcMax = 1024

// decodeXBudget is the activation bytes a decode pass keeps in L1 beside
// the weight tile it streams and the next one it prefetches. 32 KiB (8
// rows of 1024 float32, one pass for llama-160m and gpt2-124m at batch 8)
// measured 5-10% faster at batch 8 than 16 KiB, which split such rows into
// two passes and so reduced and added every dot product twice; rows of
// 2048 or more are still split.
const decodeXBudget = 32 << 10

// kcFor splits kn into the fewest even passes of at most maxKC, rounded
// up to a whole kernel step.
func kcFor(kn, step, maxKC int) int {
	passes := (kn + maxKC - 1) / maxKC
	kc := (kn + passes - 1) / passes
	return (kc + step - 1) / step * step
}

// padStride: x rows whose length is a multiple of it (4 KiB of float32)
// are copied with padding (see MatMul).
const padStride = 1024

// chunksPerThread is how many MatMul chunks each thread gets, at least.
const chunksPerThread = 4

// packedChunksPerThread is chunksPerThread for the packed path: a thread
// that finishes early waits for the other's last chunk, which at 4 chunks
// each is up to an eighth of a prefill MatMul on 2 threads. Smaller
// chunks pack no more (each weight row is packed once whatever the
// chunking) and their panels sit in L2 all the better.
const packedChunksPerThread = 16

// decodeTiles is the largest number of m-tiles run weight-tile-major.
const decodeTiles = 2

// blockK adds the products over inputs [k0, k1) to dst rows [i0, i1),
// columns [r0, r1); the pass with k0 = 0 sets them. ahead picks the
// kernels' prefetch target (see dotBlockF32).
func (t *matmulTask) blockK(i0, i1, r0, r1, k0, k1, ahead int) {
	n, kn := t.w.rows, t.w.cols
	x := t.x[i0*t.ldx+k0 : (i1-1)*t.ldx+kn]
	dst := t.dst[i0*n:]
	add := k0 > 0
	if t.w.dtype == compute.F32 {
		dotBlockF32(t.k, i1-i0, x, t.ldx, t.w.f32[r0*kn+k0:r1*kn], kn, k1-k0, dst[r0:], n, r1-r0, add, ahead)
	} else {
		dotBlock16(t.k, t.w.dtype, i1-i0, x, t.ldx, t.w.u16[r0*kn+k0:r1*kn], kn, k1-k0, dst[r0:], n, r1-r0, add, ahead)
	}
}

// nextTile is where a tile kernel reading the weight tile at p prefetches:
// the start and row stride of the next tile. Splitting that tile among
// the calls that share a weight tile (decode with two m-tiles) measured
// slower: the kernel's streams would overlap. It is an address only (never
// dereferenced by Go, possibly past the matrix), hence a uintptr.
func nextTile(p unsafe.Pointer, rowBytes int) (uintptr, int) {
	return uintptr(p) + uintptr(tileRows*rowBytes), rowBytes
}

// prefillAhead is how far ahead in its own rows a prefill tile kernel
// prefetches, in bytes. Prefill weight chunks already sit in L2; pulling
// the next tile into L1 as decode does would evict the activation tile.
const prefillAhead = 1024

// dotBlockF32 sets dst[i*ldd+r] = Σ_{k<kn} x[i*ldx+k]·w[r*ldw+k] for i < mb
// (mb ≤ k.maxM) and r < nr, or adds the sums when add is set, using the
// tile kernels and Go for the edges. With ahead = 0 the kernels prefetch
// the next weight tile (see nextTile); otherwise the rows ahead bytes
// from the current tile's (further along them, or, negative or not, rows
// of another array with the same stride: attention's values).
func dotBlockF32(k *kernels, mb int, x []float32, ldx int, w []float32, ldw, kn int, dst []float32, ldd, nr int, add bool, ahead int) {
	k0 := kn / k.kStep * k.kStep
	kern := k.f32[mb]
	addFlag := 0
	if add {
		addFlag = 1
	}
	r := 0
	for ; r+tileRows <= nr; r += tileRows {
		pf, pfs := nextTile(unsafe.Pointer(&w[r*ldw]), ldw*int(unsafe.Sizeof(w[0])))
		if ahead != 0 {
			pf = uintptr(unsafe.Pointer(&w[r*ldw])) + uintptr(ahead)
		}
		kern(&x[0], ldx, &w[r*ldw], ldw, k0, &dst[r], ldd, pf, pfs, addFlag)
		if k0 < kn {
			for i := range mb {
				xi := x[i*ldx+k0 : i*ldx+kn]
				for j := r; j < r+tileRows; j++ {
					dst[i*ldd+j] += dotF32(xi, w[j*ldw+k0:])
				}
			}
		}
	}
	for ; r < nr; r++ {
		for i := range mb {
			v := dotF32(x[i*ldx:i*ldx+kn], w[r*ldw:])
			if add {
				v += dst[i*ldd+r]
			}
			dst[i*ldd+r] = v
		}
	}
}

// dotBlock16 is dotBlockF32 for 16-bit weights of dtype dt (BF16 or F16).
func dotBlock16(k *kernels, dt compute.DType, mb int, x []float32, ldx int, w []uint16, ldw, kn int, dst []float32, ldd, nr int, add bool, ahead int) {
	k0 := kn / k.kStep * k.kStep
	kern, dot := k.bf16[mb], dotBF16
	if dt == compute.F16 {
		kern, dot = k.f16[mb], dotF16
	}
	addFlag := 0
	if add {
		addFlag = 1
	}
	r := 0
	for ; r+tileRows <= nr; r += tileRows {
		pf, pfs := nextTile(unsafe.Pointer(&w[r*ldw]), ldw*int(unsafe.Sizeof(w[0])))
		if ahead != 0 {
			pf = uintptr(unsafe.Pointer(&w[r*ldw])) + uintptr(ahead)
		}
		kern(&x[0], ldx, &w[r*ldw], ldw, k0, &dst[r], ldd, pf, pfs, addFlag)
		if k0 < kn {
			for i := range mb {
				xi := x[i*ldx+k0 : i*ldx+kn]
				for j := r; j < r+tileRows; j++ {
					dst[i*ldd+j] += dot(xi, w[j*ldw+k0:])
				}
			}
		}
	}
	for ; r < nr; r++ {
		for i := range mb {
			v := dot(x[i*ldx:i*ldx+kn], w[r*ldw:])
			if add {
				v += dst[i*ldd+r]
			}
			dst[i*ldd+r] = v
		}
	}
}
