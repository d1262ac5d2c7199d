package cpu

import (
	"unsafe"

	"github.com/tandemllm/tandem/compute"
)

// An amxStreamFunc sets c[(16g + r)·16 + i] = Σ_{k<32·ksteps} w[(16g + r)·
// ldw/2 + k]·x[i][k] for r, i < 16 and each of groups (≥ 1) groups g of
// 16 weight rows (ksteps ≥ 1): the weights, bfloat16 rows ldw bytes
// apart, are read in place as the A tiles; b holds x's bfloat16 pairs,
// step s, pair kp, column i at b[(16s + kp)·16 + i]. The output is
// transposed.
type amxStreamFunc func(w *uint16, ldw int, b *uint32, ksteps int, c *float32, groups int)

// amxCols is the most activation rows of the streaming AMX path: the 16
// columns of one B tile.
const amxCols = 16

// useAMXStream reports whether MatMul takes the streaming AMX path: BF16
// weights, kernels with AMX, decode-sized m from 2 to 16, and an inner
// dimension of whole tile steps. The weights are read once, in place, as
// tiles, so the products cost little beside the reading: at batch 8 a
// 2048×768 MatMul read its weights at 65–68% of the probed bandwidth on
// this path against 55% with the widening tile kernels. A single row
// stays with the tile kernels, which read as fast and keep float32
// activations. As on the prefill path, the activations are rounded to
// bfloat16.
func (t *matmulTask) useAMXStream() bool {
	return t.k.amxStream != nil && t.w.dtype == compute.BF16 && t.w.cols%amxK == 0 &&
		t.m >= 2 && t.m <= amxCols
}

// startAMXStream sets t up for the streaming path: x rounded to bfloat16
// and interleaved into the B tiles' layout, and the chunking of the
// weight rows into whole 16-row groups. Columns past m keep whatever an
// earlier call left: each output column depends on its own B column
// only, and those past m are not copied out.
func (b *Backend) startAMXStream(t *matmulTask) {
	kn, n, m := t.w.cols, t.w.rows, t.m
	t.stream = true
	xb := grow(&b.xbf16, m*kn)
	bt := grow(&b.amxB, kn/2*amxCols)
	t.k.toBF16(&xb[0], &t.x[0], m*kn)
	pairs := unsafe.Slice((*uint32)(unsafe.Pointer(&xb[0])), m*kn/2)
	// A block of 16 steps' pairs at a time, so that its 16 lines of bt stay
	// in L1 while every row is spread into them: row by row over the whole
	// of bt (96 KiB at 3072 inputs, past L1) the stores missed, 15 µs a
	// call at batch 8 against 11 µs now; at 768 inputs both take 2.5 µs.
	half := kn / 2
	for p0 := 0; p0 < half; p0 += amxCols {
		blk := bt[p0*amxCols : (p0+amxCols)*amxCols]
		for i := range m {
			for j, v := range pairs[i*half+p0 : i*half+p0+amxCols] {
				blk[j*amxCols+i] = v
			}
		}
	}
	t.bt = bt
	per := (n + chunksPerThread*b.threads - 1) / (chunksPerThread * b.threads)
	t.chunkRows = max(amxCols, (per+amxCols-1)/amxCols*amxCols)
	b.amxBuffers(t, 0, amxCols*kn, amxCols*t.chunkRows)
}

// runAMXStream computes chunk c on the streaming path, a last group of
// fewer than 16 rows from a zero-padded copy, and writes the transposed
// output into dst.
func (t *matmulTask) runAMXStream(c, w int) {
	n, kn, m := t.w.rows, t.w.cols, t.m
	r0 := c * t.chunkRows
	r1 := min(r0+t.chunkRows, n)
	groups := (r1 - r0) / amxCols
	out := t.tail[w]
	if groups > 0 {
		t.k.amxStream(&t.w.u16[r0*kn], 2*kn, &t.bt[0], kn/amxK, &out[0], groups)
	}
	if rr := r0 + groups*amxCols; rr < r1 {
		pad := t.padW[w][:amxCols*kn]
		copy(pad, t.w.u16[rr*kn:r1*kn])
		clear(pad[(r1-rr)*kn:])
		t.k.amxStream(&pad[0], 2*kn, &t.bt[0], kn/amxK, &out[groups*amxCols*amxCols], 1)
	}
	for r := r0; r < r1; r++ {
		o := out[(r-r0)*amxCols:][:m]
		for i, v := range o {
			t.dst[i*n+r] = v
		}
	}
}
