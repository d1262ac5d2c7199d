package cuda

import "unsafe"

// cuBLAS enumerations used here (cublas_api.h, library_types.h).
const (
	cublasOpN = 0
	cublasOpT = 1

	cudaR32F  = 0
	cudaR16F  = 2
	cudaR16BF = 14

	cublasCompute32F         = 68
	cublasCompute32FFastTF32 = 77

	cublasGemmDefault = -1
)

// cublas is the bound part of cuBLAS: a handle on our stream and GemmEx,
// which takes 16-bit inputs and accumulates in fp32.
type cublas struct {
	create       func(h *uintptr) int32
	destroy      func(h uintptr) int32
	setStream    func(h, stream uintptr) int32
	getVersion   func(h uintptr, v *int32) int32
	gemmEx       func(h uintptr, ta, tb int32, m, n, k int32, alpha unsafe.Pointer, a uintptr, at int32, lda int32, b uintptr, bt int32, ldb int32, beta unsafe.Pointer, c uintptr, ct int32, ldc int32, compute int32, algo int32) int32
	setWorkspace func(h, ws uintptr, n uint) int32 // nil before cuBLAS 12
	statusString func(s int32) string              // nil before cuBLAS 11.4
}

func (c *cublas) symbols() map[string]any {
	return map[string]any{
		"cublasCreate_v2":     &c.create,
		"cublasDestroy_v2":    &c.destroy,
		"cublasSetStream_v2":  &c.setStream,
		"cublasGetVersion_v2": &c.getVersion,
		"cublasGemmEx":        &c.gemmEx,
	}
}

func (c *cublas) optional() map[string]any {
	return map[string]any{
		"cublasSetWorkspace_v2": &c.setWorkspace,
		"cublasGetStatusString": &c.statusString,
	}
}

func (c *cublas) check(fn string, s int32) error {
	if s == 0 {
		return nil
	}
	e := &BlasError{Func: fn, Code: s}
	if c.statusString != nil {
		e.Text = c.statusString(s)
	}
	return e
}

// gemmShape is one cuBLAS call for dst[m, n] = x[m, k] · wᵀ with w
// [n, k], all row-major. cuBLAS is column-major, so it computes
// dstᵀ[n, m] = w[n, k] · xᵀ[k, m]: A is w read transposed (a column-major
// k×n matrix, lda k), B is x as stored (column-major k×m, ldb k), C is dst
// (column-major n×m, ldc n). Kept apart from the call so that the mapping
// is unit-tested without a GPU.
type gemmShape struct {
	transA, transB int32
	m, n, k        int32
	lda, ldb, ldc  int32
}

func linearGemm(rows, outs, ins int) gemmShape {
	return gemmShape{
		transA: cublasOpT, transB: cublasOpN,
		m: int32(outs), n: int32(rows), k: int32(ins),
		lda: int32(ins), ldb: int32(ins), ldc: int32(outs),
	}
}
