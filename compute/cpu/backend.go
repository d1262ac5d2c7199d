package cpu

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"github.com/tandemllm/tandem/compute"
	"github.com/tandemllm/tandem/internal/half"
)

var _ compute.Backend = (*Backend)(nil)

// ErrBadMatrix is wrapped by LoadMat errors about the shape or size of a matrix.
var ErrBadMatrix = errors.New("cpu: bad matrix")

// Options configures a Backend. The zero value is valid.
type Options struct {
	// Threads is the number of cores an op runs on, the caller included.
	// Default (0): runtime.NumCPU().
	Threads int
	// Kernels picks the inner-loop implementation: "auto" (default, the
	// widest the CPU supports), "go" (pure Go), "avx2" (AVX2+FMA),
	// "avx512" (AVX-512F/BW/VL), "avx512bf16" (AVX-512 with AVX512_BF16:
	// BF16 weights' matrix products of 2–8 rows and of 14 or more, and
	// prefill attention over a bfloat16 cache, multiply pairs with
	// VDPBF16PS, their activations rounded to bfloat16) or
	// "amx" (the widest of those two, with BF16 weights' matrix products
	// of 2 rows or more and prefill attention over a bfloat16 cache on the
	// AMX tiles, their activations rounded to bfloat16; Linux 5.16 or
	// later). Asking for a set the CPU lacks is an error wrapping
	// compute.ErrUnsupported.
	Kernels string
}

// Backend runs ops synchronously on the calling goroutine and the workers
// of its pool; Read therefore never waits. It implements compute.Backend.
type Backend struct {
	threads int
	k       *kernels
	pool    *pool
	scratch []workerScratch // one per worker, indexed by worker id
	xpad    []float32       // MatMul's padded copy of x
	xPanels []float32       // the transposed path's activations as packed panels
	packBuf [][]float32     // MatMul's packed weight panels, one per worker
	// The AMX path's activations in bfloat16, and per worker its packed
	// panels, the zero-padded rows of a last, partial panel, and the
	// output of partial tiles.
	xbf16   []uint16
	amxPack [][]uint32
	amxPad  [][]uint16
	amxTail [][]float32
	amxB    []uint32 // the streaming AMX path's activations as B tiles
	rope    ropeTable

	// Per-op task values live here so that dispatching an op allocates nothing.
	mm   matmulTask
	attn attnTask
	rows rowsTask
	kvw  kvWriteTask
}

// New starts a backend and its worker pool; Close stops it.
func New(opts Options) (*Backend, error) {
	threads := opts.Threads
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	k, err := selectKernels(opts.Kernels)
	if err != nil {
		return nil, err
	}
	b := &Backend{threads: threads, k: k, scratch: make([]workerScratch, threads)}
	b.pool = newPool(threads)
	return b, nil
}

// Name is "cpu/" followed by the kernel set, e.g. "cpu/avx512".
func (b *Backend) Name() string { return "cpu/" + b.k.name }

// Threads is the number of cores ops run on.
func (b *Backend) Threads() int { return b.threads }

// Close stops the worker pool. The backend must not be used afterwards.
func (b *Backend) Close() error {
	b.pool.close()
	return nil
}

// mat is a weight matrix: F32 data in f32, BF16 or F16 data in u16 (bit
// patterns, of dtype).
type mat struct {
	rows, cols int
	dtype      compute.DType
	f32        []float32
	u16        []uint16
}

// HostResident reports that matrices are computed on in host memory, the
// data LoadMat is given where it can (engine copies weights onto huge
// pages for such a backend).
func (b *Backend) HostResident() bool { return true }

func (m *mat) Rows() int            { return m.rows }
func (m *mat) Cols() int            { return m.cols }
func (m *mat) DType() compute.DType { return m.dtype }

// LoadMat makes a matrix over data. F32, BF16 and F16 data are
// reinterpreted in place (no copy) when suitably aligned, and copied
// otherwise. Kernel sets without F16 kernels (the Go set) convert F16
// data to F32 here, once; the matrix then reports DType F32.
func (b *Backend) LoadMat(dtype compute.DType, rows, cols int, data []byte) (compute.Mat, error) {
	if rows <= 0 || cols <= 0 {
		return nil, fmt.Errorf("%w: shape [%d, %d]", ErrBadMatrix, rows, cols)
	}
	switch dtype {
	case compute.F32, compute.BF16, compute.F16:
	default:
		return nil, fmt.Errorf("%w: dtype %v", compute.ErrUnsupported, dtype)
	}
	n := rows * cols
	if n/cols != rows || n*dtype.Size() != len(data) {
		return nil, fmt.Errorf("%w: [%d, %d] %v needs %d bytes, got %d",
			ErrBadMatrix, rows, cols, dtype, rows*cols*dtype.Size(), len(data))
	}
	m := &mat{rows: rows, cols: cols, dtype: dtype}
	p := unsafe.Pointer(unsafe.SliceData(data))
	switch dtype {
	case compute.F32:
		if uintptr(p)%4 != 0 {
			m.f32 = make([]float32, n)
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&m.f32[0])), len(data)), data)
		} else {
			m.f32 = unsafe.Slice((*float32)(p), n)
		}
	case compute.F16:
		if b.k.widenF16 {
			m.dtype = compute.F32
			m.f32 = make([]float32, n)
			half.F16ToFloat32s(m.f32, data)
			break
		}
		fallthrough
	case compute.BF16:
		if uintptr(p)%2 != 0 {
			m.u16 = make([]uint16, n)
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&m.u16[0])), len(data)), data)
		} else {
			m.u16 = unsafe.Slice((*uint16)(p), n)
		}
	}
	return m, nil
}

// buf is an activation buffer; views share data with their parent.
type buf struct{ data []float32 }

func (x *buf) Len() int { return len(x.data) }

// Alloc makes a zeroed buffer of n values.
func (b *Backend) Alloc(n int) compute.Buf { return &buf{data: make([]float32, n)} }

// View is b[off:off+n], sharing memory.
func (b *Backend) View(x compute.Buf, off, n int) compute.Buf {
	return &buf{data: data(x)[off : off+n : off+n]}
}

// Write copies src into x at off.
func (b *Backend) Write(x compute.Buf, off int, src []float32) {
	copy(data(x)[off:off+len(src)], src)
}

// Read copies x[off:off+len(dst)] into dst. Ops are synchronous, so there is
// nothing to wait for.
func (b *Backend) Read(dst []float32, x compute.Buf, off int) {
	copy(dst, data(x)[off:off+len(dst)])
}

// HostView returns n values of x from off in place: the buffer's own
// memory, valid while x is.
func (b *Backend) HostView(x compute.Buf, off, n int) []float32 {
	return data(x)[off : off+n : off+n]
}

// data is the float32 slice of a Buf made by a CPU backend; a Buf of
// another backend is a programming error.
func data(x compute.Buf) []float32 {
	bx, ok := x.(*buf)
	if !ok {
		panic(fmt.Sprintf("cpu: buffer of type %T does not belong to a CPU backend", x))
	}
	return bx.data
}

func matOf(w compute.Mat) *mat {
	m, ok := w.(*mat)
	if !ok {
		panic(fmt.Sprintf("cpu: matrix of type %T does not belong to a CPU backend", w))
	}
	return m
}
