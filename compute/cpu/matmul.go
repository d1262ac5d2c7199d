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
	// Decode chunks only need their current weight tile cached; prefill
	// chunks are reread by every m-tile, so they are sized to stay in L2.
	rows := wm.rows
	if (m+t.k.maxM-1)/t.k.maxM > decodeTiles {
		rows = l2Budget / (wm.cols * wm.dtype.Size())
	}
	// A few chunks per thread, so uneven progress evens out.
	rows = min(rows, (wm.rows+chunksPerThread*b.threads-1)/(chunksPerThread*b.threads))
	rows = max(tileRows, (rows+tileRows-1)/tileRows*tileRows)
	t.chunkRows = rows
	b.pool.run(t, (wm.rows+rows-1)/rows)
	t.dst, t.x = nil, nil
}

func (t *matmulTask) run(c, _ int) {
	n := t.w.rows
	r0 := c * t.chunkRows
	r1 := min(r0+t.chunkRows, n)
	// Split m into the fewest, most even tiles the kernels take.
	tiles := (t.m + t.k.maxM - 1) / t.k.maxM
	if tiles <= decodeTiles {
		// Decode: every m-tile uses a weight tile while it is in L1, so the
		// weights stream from memory once, overlapped by the prefetches.
		for r := r0; r < r1; r += tileRows {
			for ti := range tiles {
				t.block(ti*t.m/tiles, (ti+1)*t.m/tiles, r, min(r+tileRows, r1))
			}
		}
		return
	}
	// Prefill: an activation tile stays in L1 while the chunk's weights,
	// sized to stay in L2, stream past it.
	for ti := range tiles {
		t.block(ti*t.m/tiles, (ti+1)*t.m/tiles, r0, r1)
	}
}

// chunksPerThread is how many MatMul chunks each thread gets, at least.
const chunksPerThread = 4

// decodeTiles is the largest number of m-tiles run weight-tile-major.
const decodeTiles = 2

// block computes dst rows [i0, i1), columns [r0, r1).
func (t *matmulTask) block(i0, i1, r0, r1 int) {
	n, kn := t.w.rows, t.w.cols
	x := t.x[i0*kn : i1*kn]
	dst := t.dst[i0*n:]
	if t.w.dtype == compute.BF16 {
		dotBlockBF16(t.k, i1-i0, x, kn, t.w.bf16[r0*kn:r1*kn], kn, kn, dst[r0:], n, r1-r0)
	} else {
		dotBlockF32(t.k, i1-i0, x, kn, t.w.f32[r0*kn:r1*kn], kn, kn, dst[r0:], n, r1-r0)
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

// dotBlockF32 sets dst[i*ldd+r] = Σ_{k<kn} x[i*ldx+k]·w[r*ldw+k] for i < mb
// (mb ≤ k.maxM) and r < nr, using the tile kernels and Go for the edges.
func dotBlockF32(k *kernels, mb int, x []float32, ldx int, w []float32, ldw, kn int, dst []float32, ldd, nr int) {
	k0 := kn / k.kStep * k.kStep
	kern := k.f32[mb]
	r := 0
	for ; r+tileRows <= nr; r += tileRows {
		pf, pfs := nextTile(unsafe.Pointer(&w[r*ldw]), ldw*int(unsafe.Sizeof(w[0])))
		kern(&x[0], ldx, &w[r*ldw], ldw, k0, &dst[r], ldd, pf, pfs)
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
			dst[i*ldd+r] = dotF32(x[i*ldx:i*ldx+kn], w[r*ldw:])
		}
	}
}

// dotBlockBF16 is dotBlockF32 for BF16 weights.
func dotBlockBF16(k *kernels, mb int, x []float32, ldx int, w []uint16, ldw, kn int, dst []float32, ldd, nr int) {
	k0 := kn / k.kStep * k.kStep
	kern := k.bf16[mb]
	r := 0
	for ; r+tileRows <= nr; r += tileRows {
		pf, pfs := nextTile(unsafe.Pointer(&w[r*ldw]), ldw*int(unsafe.Sizeof(w[0])))
		kern(&x[0], ldx, &w[r*ldw], ldw, k0, &dst[r], ldd, pf, pfs)
		if k0 < kn {
			for i := range mb {
				xi := x[i*ldx+k0 : i*ldx+kn]
				for j := r; j < r+tileRows; j++ {
					dst[i*ldd+j] += dotBF16(xi, w[j*ldw+k0:])
				}
			}
		}
	}
	for ; r < nr; r++ {
		for i := range mb {
			dst[i*ldd+r] = dotBF16(x[i*ldx:i*ldx+kn], w[r*ldw:])
		}
	}
}
