package nvidia

import (
	"fmt"
	"unsafe"

	"github.com/ebitengine/purego"

	"github.com/tandemllm/tandem/internal/dynlib"
)

// CUresult values this package tells apart.
const (
	cudaSuccess  = 0
	cudaNotReady = 600 // CUDA_ERROR_NOT_READY: cuStreamQuery's "still running"
)

// driver is the small part of the CUDA driver API a communicator needs:
// a context current on the calling thread, a way to wait for a stream
// without blocking uninterruptibly, and a few bytes of device memory for
// Barrier. compute/cuda will own the full binding; this one stays minimal.
type driver struct {
	init              func(flags uint32) int32
	deviceGetCount    func(n *int32) int32
	deviceGet         func(dev *int32, ordinal int32) int32
	primaryCtxRetain  func(ctx *uintptr, dev int32) int32
	primaryCtxRelease func(dev int32) int32
	ctxSetCurrent     func(ctx uintptr) int32
	streamQuery       func(stream uintptr) int32
	memAlloc          func(dptr *uintptr, size uint) int32
	memFree           func(dptr uintptr) int32
	memcpyHtoD        func(dst uintptr, src unsafe.Pointer, n uint) int32
	memcpyDtoH        func(dst unsafe.Pointer, src uintptr, n uint) int32
	getErrorString    func(r int32, s **byte) int32
}

// loadDriver opens the first of cands that works and binds it; it
// returns the file opened.
func loadDriver(cands []dynlib.Candidate) (*driver, string, error) {
	h, path, err := dynlib.Open(cands, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		return nil, "", err
	}
	d := &driver{}
	// The _v2 names are the ABI every driver since CUDA 11 exports under
	// the plain names' headers; the plain symbols are the legacy
	// 32-bit-size variants.
	if err := dynlib.Bind(h, map[string]any{
		"cuInit":                       &d.init,
		"cuDeviceGetCount":             &d.deviceGetCount,
		"cuDeviceGet":                  &d.deviceGet,
		"cuDevicePrimaryCtxRetain":     &d.primaryCtxRetain,
		"cuDevicePrimaryCtxRelease_v2": &d.primaryCtxRelease,
		"cuCtxSetCurrent":              &d.ctxSetCurrent,
		"cuStreamQuery":                &d.streamQuery,
		"cuMemAlloc_v2":                &d.memAlloc,
		"cuMemFree_v2":                 &d.memFree,
		"cuMemcpyHtoD_v2":              &d.memcpyHtoD,
		"cuMemcpyDtoH_v2":              &d.memcpyDtoH,
		"cuGetErrorString":             &d.getErrorString,
	}, nil); err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	return d, path, nil
}

// check turns a CUresult into an error.
func (d *driver) check(fn string, r int32) error {
	if r == cudaSuccess {
		return nil
	}
	e := &CUDAError{Func: fn, Code: r}
	var s *byte
	if d.getErrorString(r, &s) == cudaSuccess && s != nil {
		e.Text = dynlib.CString(s)
	}
	return e
}

// primaryContext retains device ordinal's primary context, the one the
// CUDA runtime inside NCCL also uses, so both agree on the device.
func (d *driver) primaryContext(ordinal int) (dev int32, ctx uintptr, err error) {
	if err := d.check("cuInit", d.init(0)); err != nil {
		return 0, 0, err
	}
	var n int32
	if err := d.check("cuDeviceGetCount", d.deviceGetCount(&n)); err != nil {
		return 0, 0, err
	}
	if ordinal < 0 || ordinal >= int(n) {
		return 0, 0, fmt.Errorf("nvidia: device %d out of range: this machine has %d CUDA devices", ordinal, n)
	}
	if err := d.check("cuDeviceGet", d.deviceGet(&dev, int32(ordinal))); err != nil {
		return 0, 0, err
	}
	if err := d.check("cuDevicePrimaryCtxRetain", d.primaryCtxRetain(&ctx, dev)); err != nil {
		return 0, 0, err
	}
	return dev, ctx, nil
}
