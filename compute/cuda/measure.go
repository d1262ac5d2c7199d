package cuda

import (
	"math/rand/v2"
	"time"

	"github.com/tandemllm/tandem/compute"
	"github.com/tandemllm/tandem/internal/half"
)

// The two ceilings a GPU's figures are held against, measured on the
// device in use (as compute/cpu measures the host's): what the
// benchmarks print next to each figure. Each times a warm-up and then
// five calls with events and returns the best rate; what it allocates is
// freed before it returns.

// MeasureCopyBandwidth is the GPU's memory bandwidth in bytes per second:
// a device-to-device copy of size bytes (1 GiB when size ≤ 0), counting
// the bytes read plus the bytes written, as the usual copy figures do.
// It is the ceiling a memory-bound decode step is held against (MBU).
func (b *Backend) MeasureCopyBandwidth(size int) (float64, error) {
	if size <= 0 {
		size = 1 << 30
	}
	ok := b.enter()
	defer b.leave()
	if !ok {
		return 0, b.Err()
	}
	d := b.libs.drv
	src, err := b.malloc(size)
	if err != nil {
		return 0, err
	}
	defer b.release(src)
	dst, err := b.malloc(size)
	if err != nil {
		return 0, err
	}
	defer b.release(dst)
	if err := d.check("cuMemsetD8Async", d.memsetD8Async(src, 0x5a, uint(size), b.stream)); err != nil {
		return 0, err
	}
	return b.bestRate(2*float64(size), func() {
		b.fail(d.check("cuMemcpyDtoDAsync_v2", d.memcpyDtoDAsync(dst, src, uint(size), b.stream)))
	})
}

// MeasureMatMulFLOPS is the rate, in FLOP/s, of MatMul itself with an
// n×n BF16 weight and n rows of activations (n = 8192 when n ≤ 0):
// 2n³ FLOPs a call, the narrowing of the activations to bf16 included.
// The inputs are random (a product of zeros runs faster than real data
// does). It is the ceiling a compute-bound prefill is held against.
func (b *Backend) MeasureMatMulFLOPS(n int) (float64, error) {
	if n <= 0 {
		n = 8192
	}
	r := rand.New(rand.NewPCG(uint64(n), 1))
	wb := make([]byte, 2*n*n)
	for i := 0; i < len(wb); i += 2 {
		v := half.BF16FromFloat32(r.Float32()*2 - 1)
		wb[i], wb[i+1] = byte(v), byte(v>>8)
	}
	w, err := b.LoadMat(compute.BF16, n, n, wb)
	if err != nil {
		return 0, err
	}
	ok := b.enter()
	defer b.leave()
	defer b.release(matOf(w).ptr)
	if !ok {
		return 0, b.Err()
	}
	var bufs [2]*buf
	for i := range bufs {
		p, err := b.malloc(4 * n * n)
		if err != nil {
			return 0, err
		}
		defer b.release(p)
		bufs[i] = &buf{ptr: p, n: n * n}
	}
	x, dst := bufs[0], bufs[1]
	xv := make([]float32, n*n)
	for i := range xv {
		xv[i] = r.Float32()*2 - 1
	}
	b.Write(x, 0, xv)
	return b.bestRate(2*float64(n)*float64(n)*float64(n), func() { b.MatMul(dst, x, w, n) })
}

// bestRate times f once to warm up and then five times, and returns work
// over the shortest time.
func (b *Backend) bestRate(work float64, f func()) (float64, error) {
	best := time.Duration(0)
	for i := range 6 {
		dt, err := b.Time(f)
		if err != nil {
			return 0, err
		}
		if i > 0 && (best == 0 || dt < best) {
			best = dt
		}
	}
	return work / best.Seconds(), nil
}
