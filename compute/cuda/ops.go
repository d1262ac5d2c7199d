package cuda

import (
	"fmt"
	"unsafe"

	"github.com/tandemllm/tandem/compute"
)

// mat is a weight matrix in device memory, in its own dtype: F32, BF16 or
// F16 (unlike the CPU backend, F16 stays 16-bit: cuBLAS multiplies it).
type mat struct {
	ptr        uintptr
	rows, cols int
	dtype      compute.DType
}

func (m *mat) Rows() int            { return m.rows }
func (m *mat) Cols() int            { return m.cols }
func (m *mat) DType() compute.DType { return m.dtype }

// buf is a float32 activation buffer; views share their parent's memory.
type buf struct {
	ptr uintptr
	n   int
}

func (x *buf) Len() int { return x.n }

// at is the device address of value i.
func (x *buf) at(i int) uintptr { return x.ptr + uintptr(4*i) }

func bufOf(x compute.Buf) *buf {
	bx, ok := x.(*buf)
	if !ok {
		panic(fmt.Sprintf("cuda: buffer of type %T does not belong to a CUDA backend", x))
	}
	return bx
}

func matOf(w compute.Mat) *mat {
	m, ok := w.(*mat)
	if !ok {
		panic(fmt.Sprintf("cuda: matrix of type %T does not belong to a CUDA backend", w))
	}
	return m
}

// need panics when an op would reach past a buffer: on a GPU that is a
// silent overwrite or a fault that kills the context, so it is checked
// on the host, as the CPU backend's slice bounds check it.
func need(op string, x *buf, n int) {
	if n > x.n {
		panic(fmt.Sprintf("cuda: %s needs %d values of a buffer of %d", op, n, x.n))
	}
}

// LoadMat copies a weight matrix to the GPU; data is not kept.
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
		return nil, fmt.Errorf("%w: [%d, %d] %v needs %d bytes, got %d", ErrBadMatrix, rows, cols, dtype, rows*cols*dtype.Size(), len(data))
	}
	if !b.enter() {
		b.leave()
		return nil, b.Err()
	}
	defer b.leave()
	p, err := b.malloc(len(data))
	if err != nil {
		return nil, err
	}
	d := b.libs.drv
	if err := d.check("cuMemcpyHtoDAsync_v2", d.memcpyHtoDAsync(p, unsafe.Pointer(&data[0]), uint(len(data)), b.stream)); err != nil {
		return nil, err
	}
	if err := b.sync(); err != nil {
		return nil, err
	}
	return &mat{ptr: p, rows: rows, cols: cols, dtype: dtype}, nil
}

// Alloc makes a zeroed buffer of n values. Allocation failure panics, as
// running out of host memory does on the CPU backend.
func (b *Backend) Alloc(n int) compute.Buf {
	if !b.enter() {
		b.leave()
		panic(fmt.Sprintf("cuda: Alloc(%d): %v", n, b.Err()))
	}
	defer b.leave()
	p, err := b.malloc(4 * n)
	if err == nil {
		d := b.libs.drv
		err = d.check("cuMemsetD8Async", d.memsetD8Async(p, 0, uint(4*n), b.stream))
	}
	if err != nil {
		panic(fmt.Sprintf("cuda: Alloc(%d): %v", n, err))
	}
	return &buf{ptr: p, n: n}
}

// View is x[off:off+n], sharing memory.
func (b *Backend) View(x compute.Buf, off, n int) compute.Buf {
	bx := bufOf(x)
	if off < 0 || n < 0 || off+n > bx.n {
		panic(fmt.Sprintf("cuda: View [%d, %d) of a buffer of %d", off, off+n, bx.n))
	}
	return &buf{ptr: bx.at(off), n: n}
}

// Write copies src into x at off, in stream order, and returns when src
// may be reused.
func (b *Backend) Write(x compute.Buf, off int, src []float32) {
	bx := bufOf(x)
	need("Write", bx, off+len(src))
	if !b.enter() || len(src) == 0 {
		b.leave()
		return
	}
	defer b.leave()
	d := b.libs.drv
	b.fail(d.check("cuMemcpyHtoDAsync_v2", d.memcpyHtoDAsync(bx.at(off), unsafe.Pointer(&src[0]), uint(4*len(src)), b.stream)))
	b.fail(b.sync())
}

// Read waits for every op issued and copies x[off:off+len(dst)] into dst.
// It panics with the first error of any op before it.
func (b *Backend) Read(dst []float32, x compute.Buf, off int) {
	bx := bufOf(x)
	need("Read", bx, off+len(dst))
	ok := b.enter()
	defer b.leave()
	if ok && len(dst) > 0 {
		d := b.libs.drv
		b.fail(d.check("cuMemcpyDtoHAsync_v2", d.memcpyDtoHAsync(unsafe.Pointer(&dst[0]), bx.at(off), uint(4*len(dst)), b.stream)))
	}
	if ok {
		b.fail(b.sync())
	}
	if err := b.Err(); err != nil {
		panic(err)
	}
}

// MatMul: dst[m, w.Rows] = x[m, w.Cols] · wᵀ with cuBLAS. 16-bit weights
// take x narrowed to the same type (cuBLAS's mixed GEMMs want both inputs
// alike) and accumulate in fp32.
func (b *Backend) MatMul(dst, x compute.Buf, w compute.Mat, m int) {
	wm, xb, db := matOf(w), bufOf(x), bufOf(dst)
	need("MatMul x", xb, m*wm.cols)
	need("MatMul dst", db, m*wm.rows)
	if !b.enter() || m == 0 {
		b.leave()
		return
	}
	defer b.leave()
	in, typ := xb.ptr, int32(cudaR32F)
	compute32 := int32(cublasCompute32F)
	if wm.dtype == compute.F32 && b.tf32 {
		compute32 = cublasCompute32FFastTF32
	}
	if wm.dtype != compute.F32 {
		n := m * wm.cols
		p, err := b.grow(&b.xconv, 2*n, b.stream)
		if err != nil {
			b.fail(err)
			return
		}
		k, t := kToBF16, int32(cudaR16BF)
		if wm.dtype == compute.F16 {
			k, t = kToF16, cudaR16F
		}
		b.launch(k, b.elemGrid(n), 256, 0, ptrArg(p), ptrArg(xb.ptr), i32Arg(n))
		in, typ = p, t
	}
	g := linearGemm(m, wm.rows, wm.cols)
	bl := b.libs.blas
	r := bl.gemmEx(b.blas, g.transA, g.transB, g.m, g.n, g.k, unsafe.Pointer(&b.one),
		wm.ptr, typ, g.lda, in, typ, g.ldb, unsafe.Pointer(&b.zero), db.ptr, cudaR32F, g.ldc,
		compute32, cublasGemmDefault)
	b.fail(bl.check("cublasGemmEx", r))
}

// Embed: dst[i] = row ids[i] of w as float32.
func (b *Backend) Embed(dst compute.Buf, w compute.Mat, ids []int32) {
	wm, db := matOf(w), bufOf(dst)
	for _, id := range ids {
		if id < 0 || int(id) >= wm.rows {
			panic(fmt.Sprintf("cuda: Embed id %d out of range [0, %d)", id, wm.rows))
		}
	}
	need("Embed", db, len(ids)*wm.cols)
	if !b.enter() || len(ids) == 0 {
		b.leave()
		return
	}
	defer b.leave()
	p, err := b.put(int32Bytes(ids))
	if err != nil {
		b.fail(err)
		return
	}
	k := kEmbedF32
	switch wm.dtype {
	case compute.BF16:
		k = kEmbedBF16
	case compute.F16:
		k = kEmbedF16
	}
	b.launch(k, rows(len(ids)), 256, 0, ptrArg(db.ptr), ptrArg(wm.ptr), ptrArg(p), i32Arg(len(ids)), i32Arg(wm.cols))
}

// Gather: dst[i] = src[rows[i]] for rows of n values.
func (b *Backend) Gather(dst, src compute.Buf, rs []int32, n int) {
	db, sb := bufOf(dst), bufOf(src)
	for _, r := range rs {
		if r < 0 || (int(r)+1)*n > sb.n {
			panic(fmt.Sprintf("cuda: Gather row %d of %d values from a buffer of %d", r, n, sb.n))
		}
	}
	need("Gather", db, len(rs)*n)
	if !b.enter() || len(rs) == 0 {
		b.leave()
		return
	}
	defer b.leave()
	p, err := b.put(int32Bytes(rs))
	if err != nil {
		b.fail(err)
		return
	}
	b.launch(kGatherRows, rows(len(rs)), 256, 0, ptrArg(db.ptr), ptrArg(sb.ptr), ptrArg(p), i32Arg(len(rs)), i32Arg(n))
}

// elementwise runs a kernel over n values after the bounds checks.
func (b *Backend) elementwise(op string, k kernel, n int, bufs ...*buf) {
	for _, x := range bufs {
		need(op, x, n)
	}
	if !b.enter() || n == 0 {
		b.leave()
		return
	}
	defer b.leave()
	args := make([]arg, 0, len(bufs)+1)
	for _, x := range bufs {
		args = append(args, ptrArg(x.ptr))
	}
	b.launch(k, b.elemGrid(n), 256, 0, append(args, i32Arg(n))...)
}

// AddBias: x[i] += bias for m rows.
func (b *Backend) AddBias(x, bias compute.Buf, m int) {
	xb, bb := bufOf(x), bufOf(bias)
	need("AddBias", xb, m*bb.n)
	if !b.enter() || m == 0 || bb.n == 0 {
		b.leave()
		return
	}
	defer b.leave()
	b.launch(kAddBias, b.elemGrid(m*bb.n), 256, 0, ptrArg(xb.ptr), ptrArg(bb.ptr), i32Arg(m), i32Arg(bb.n))
}

// Add: dst = a + c over n values.
func (b *Backend) Add(dst, a, c compute.Buf, n int) {
	b.elementwise("Add", kAdd, n, bufOf(dst), bufOf(a), bufOf(c))
}

// SiLUMul: dst = silu(gate)·up over n values.
func (b *Backend) SiLUMul(dst, gate, up compute.Buf, n int) {
	b.elementwise("SiLUMul", kSiLUMul, n, bufOf(dst), bufOf(gate), bufOf(up))
}

// GELU (tanh approximation) in place over n values.
func (b *Backend) GELU(x compute.Buf, n int) {
	b.elementwise("GELU", kGELU, n, bufOf(x))
}

// normThreads is the block size of the row kernels: enough warps to hide
// latency on rows of a few thousand values.
const normThreads = 256

// RMSNorm over m rows of n values.
func (b *Backend) RMSNorm(dst, x, w compute.Buf, m, n int, eps float32) {
	db, xb, wb := bufOf(dst), bufOf(x), bufOf(w)
	need("RMSNorm", db, m*n)
	need("RMSNorm", xb, m*n)
	need("RMSNorm weight", wb, n)
	if !b.enter() || m == 0 {
		b.leave()
		return
	}
	defer b.leave()
	b.launch(kRMSNorm, rows(m), normThreads, 0, ptrArg(db.ptr), ptrArg(xb.ptr), ptrArg(wb.ptr), i32Arg(m), i32Arg(n), f32Arg(eps))
}

// AddRMSNorm fuses the residual add into the norm: x += res, then
// dst = rmsnorm(x)·w. It is Add followed by RMSNorm in one pass over x.
func (b *Backend) AddRMSNorm(dst, x, res, w compute.Buf, m, n int, eps float32) {
	db, xb, rb, wb := bufOf(dst), bufOf(x), bufOf(res), bufOf(w)
	for _, x := range []*buf{db, xb, rb} {
		need("AddRMSNorm", x, m*n)
	}
	need("AddRMSNorm weight", wb, n)
	if !b.enter() || m == 0 {
		b.leave()
		return
	}
	defer b.leave()
	b.launch(kAddRMSNorm, rows(m), normThreads, 0, ptrArg(db.ptr), ptrArg(xb.ptr), ptrArg(rb.ptr), ptrArg(wb.ptr), i32Arg(m), i32Arg(n), f32Arg(eps))
}

// LayerNorm over m rows of n values.
func (b *Backend) LayerNorm(dst, x, w, bias compute.Buf, m, n int, eps float32) {
	db, xb, wb, bb := bufOf(dst), bufOf(x), bufOf(w), bufOf(bias)
	need("LayerNorm", db, m*n)
	need("LayerNorm", xb, m*n)
	need("LayerNorm weight", wb, n)
	need("LayerNorm bias", bb, n)
	if !b.enter() || m == 0 {
		b.leave()
		return
	}
	defer b.leave()
	b.launch(kLayerNorm, rows(m), normThreads, 0, ptrArg(db.ptr), ptrArg(xb.ptr), ptrArg(wb.ptr), ptrArg(bb.ptr), i32Arg(m), i32Arg(n), f32Arg(eps))
}

// RoPE rotates m rows of heads×headDim in place (rotate-half pairing).
func (b *Backend) RoPE(x compute.Buf, m, heads, headDim int, pos []int32, invFreq []float32) {
	if headDim%2 != 0 || len(invFreq) < headDim/2 || len(pos) < m {
		panic(fmt.Sprintf("cuda: RoPE headDim %d with %d frequencies and %d positions for %d rows", headDim, len(invFreq), len(pos), m))
	}
	xb := bufOf(x)
	need("RoPE", xb, m*heads*headDim)
	if !b.enter() || m == 0 {
		b.leave()
		return
	}
	defer b.leave()
	pp, err := b.put(int32Bytes(pos[:m]))
	if err != nil {
		b.fail(err)
		return
	}
	fp, err := b.put(float32Bytes(invFreq[:headDim/2]))
	if err != nil {
		b.fail(err)
		return
	}
	b.launch(kRoPE, rows(m), normThreads, 0, ptrArg(xb.ptr), ptrArg(pp), ptrArg(fp), i32Arg(m), i32Arg(heads), i32Arg(headDim))
}
