package cpu

import (
	"unsafe"

	"github.com/tandemllm/tandem/compute"
)

// An amxBF16Func sets c[i*ldc/4 + 32q + j] = Σ_{k<32·ksteps} a[i*lda/2 +
// k]·w_q[j][k] for i < amxRows, j < panelRows and each of panels packed
// panels q, pstride bytes apart (panels, ksteps ≥ 1), or adds the sums to
// c when add ≠ 0. a holds bfloat16 activations with rows lda bytes
// apart; a panel holds its 32 weight rows' bfloat16 pairs laid out as
// packF32 lays out float32s (see packPairs). The products are exact in
// float32, the sums float32.
type amxBF16Func func(a *uint16, lda int, p *uint32, pstride, panels, ksteps int, c *float32, ldc, add int)

// amxRows is the activation rows of one amxBF16 call: two 16-row tiles.
const amxRows = 32

// amxK is the inner-dimension step of one tile product: 32 bfloat16.
const amxK = 32

// amxBudget is the packed weight bytes of one chunk of the AMX path,
// kept in L2 while every activation tile streams past it.
const amxBudget = 512 << 10

// amxChunksPerThread is packedChunksPerThread for the AMX path: each chunk
// streams all the activations past its panels, and the tile products are
// fast enough for that to cost, so chunks are fewer and larger.
const amxChunksPerThread = 2

// useAMX reports whether MatMul takes the AMX path: BF16 weights, kernels
// with AMX, more activation rows than the streaming path takes (see
// useAMXStream; a last tile of fewer than 32 is padded), and an inner
// dimension of whole tile steps. The activations are rounded to bfloat16
// on this path, as a BF16 model's activations are in PyTorch; the
// products and sums stay float32.
func (t *matmulTask) useAMX() bool {
	return t.k.amxBF16 != nil && t.w.dtype == compute.BF16 && t.w.cols%amxK == 0 &&
		t.w.rows >= panelRows && t.m > amxCols
}

// startAMX sets t up for the AMX path: the activations rounded to
// bfloat16 (rows padded to whole tiles with zeros, stride padded off a
// multiple of 4 KiB) and the chunking of the weight rows.
func (b *Backend) startAMX(t *matmulTask) {
	kn, n := t.w.cols, t.w.rows
	t.amx = true
	t.lda = kn + amxK
	t.mPad = (t.m + amxRows - 1) / amxRows * amxRows
	t.xb = grow(&b.xbf16, t.mPad*t.lda)
	clear(t.xb[t.m*t.lda:])
	rows := max(panelRows, amxBudget/(2*kn)/panelRows*panelRows)
	per := (n + amxChunksPerThread*b.threads - 1) / (amxChunksPerThread * b.threads)
	t.chunkRows = min(rows, (per+panelRows-1)/panelRows*panelRows)
	b.amxBuffers(t, t.chunkRows*kn/2, panelRows*kn, amxRows*t.chunkRows)
}

// amxBuffers makes each worker's buffers of the AMX paths at least this
// long: packed panels, zero-padded weight rows, and output.
func (b *Backend) amxBuffers(t *matmulTask, pack, pad, out int) {
	if len(b.amxPack) < b.threads {
		b.amxPack = make([][]uint32, b.threads)
		b.amxPad = make([][]uint16, b.threads)
		b.amxTail = make([][]float32, b.threads)
	}
	for w := range b.threads {
		grow(&b.amxPack[w], pack)
		grow(&b.amxPad[w], pad)
		grow(&b.amxTail[w], out)
	}
	t.packU, t.padW, t.tail = b.amxPack, b.amxPad, b.amxTail
}

// roundRows rounds activation rows [c·amxRows, …) to bfloat16 into t.xb.
func (t *matmulTask) roundRows(c int) {
	kn := t.w.cols
	for i := c * amxRows; i < min((c+1)*amxRows, t.m); i++ {
		t.k.toBF16(&t.xb[i*t.lda], &t.x[i*kn], kn) // kn is a multiple of amxK, so of the lanes
	}
}

// runAMX computes chunk c on the AMX path: it packs the chunk's weights
// into panels (pairs of bfloat16 in place of float32s, see packPairs),
// then multiplies each 32-row activation tile by all of them. A last
// panel of fewer than 32 rows is packed from a zero-padded copy, and the
// products of it and of a last activation tile of fewer than 32 rows go
// through the worker's tail buffer, so that padding writes nothing.
func (t *matmulTask) runAMX(c, w int) {
	n, kn, m := t.w.rows, t.w.cols, t.m
	r0 := c * t.chunkRows
	r1 := min(r0+t.chunkRows, n)
	panels := (r1 - r0 + panelRows - 1) / panelRows
	full := (r1 - r0) / panelRows
	buf := t.packU[w]
	for p := range full {
		t.k.packPairs(buf[p*panelRows*kn/2:], t.w.u16[(r0+p*panelRows)*kn:], kn)
	}
	if full < panels {
		pad := t.padW[w][:panelRows*kn]
		copy(pad, t.w.u16[(r0+full*panelRows)*kn:r1*kn])
		clear(pad[(r1-r0-full*panelRows)*kn:])
		t.k.packPairs(buf[full*panelRows*kn/2:], pad, kn)
	}
	ld := panels * panelRows
	for i0 := 0; i0 < m; i0 += amxRows {
		a := &t.xb[i0*t.lda]
		if i0+amxRows <= m && full > 0 {
			t.k.amxBF16(a, 2*t.lda, &buf[0], 2*panelRows*kn, full, kn/amxK, &t.dst[i0*n+r0], 4*n, 0)
			if full == panels {
				continue
			}
		}
		// Whatever the direct call above did not store, through the tail.
		p0 := full
		if i0+amxRows > m {
			p0 = 0
		}
		tail := t.tail[w]
		t.k.amxBF16(a, 2*t.lda, &buf[p0*panelRows*kn/2], 2*panelRows*kn, panels-p0, kn/amxK, &tail[0], 4*ld, 0)
		for i := i0; i < min(i0+amxRows, m); i++ {
			copy(t.dst[i*n+r0+p0*panelRows:i*n+r1], tail[(i-i0)*ld:])
		}
	}
}

// packPairs packs 32 BF16 weight rows of kn at w into one AMX panel at
// dst: each row read as kn/2 pairs of bfloat16, 32 bits each, and laid
// out as packF32 lays out float32s (pair kp of row j at dst[kp·32 + j]),
// which is the pair-interleaved layout the tile products read. The pack
// kernel only moves bits.
func (k *kernels) packPairs(dst []uint32, w []uint16, kn int) {
	_, _ = w[panelRows*kn-1], dst[panelRows*kn/2-1] // the kernel reads and writes this much
	for h := range 2 {
		src := (*float32)(unsafe.Pointer(&w[16*h*kn]))
		k.packF32((*float32)(unsafe.Pointer(&dst[16*h])), src, kn/2, kn/2)
	}
}
