package cuda

import (
	"fmt"
	"unsafe"

	"github.com/tandemllm/tandem/internal/dynlib"
)

// CUresult values this package tells apart.
const (
	cuSuccess                   = 0
	cuErrorStubLibrary          = 34
	cuErrorInsufficientDriver   = 35
	cuErrorNoDevice             = 100
	cuErrorNotReady             = 600
	cuErrorNotPermitted         = 800
	cuErrorSystemDriverMismatch = 803
	cuErrorCompatNotSupported   = 804
)

// CUdevice_attribute values used here.
const (
	attrMultiprocessorCount = 16
	attrComputeCapMajor     = 75
	attrComputeCapMinor     = 76
	attrMaxSharedOptin      = 97 // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
)

// funcAttrMaxDynamicShared is CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES.
const funcAttrMaxDynamicShared = 8

// Stream capture modes (CUstreamCaptureMode).
const captureModeThreadLocal = 1

// driver is the bound CUDA driver API. Go signatures mirror cuda.h: CUresult
// and int → int32, size_t → uint, handles and CUdeviceptr → uintptr. The
// _v2 names are the ABI that every driver since CUDA 4 exports for the
// unsuffixed names of the headers.
type driver struct {
	init              func(flags uint32) int32
	driverGetVersion  func(v *int32) int32
	deviceGetCount    func(n *int32) int32
	deviceGet         func(dev *int32, ordinal int32) int32
	deviceGetName     func(name *byte, n int32, dev int32) int32
	deviceGetAttr     func(v *int32, attr int32, dev int32) int32
	deviceTotalMem    func(bytes *uint, dev int32) int32
	primaryCtxRetain  func(ctx *uintptr, dev int32) int32
	primaryCtxRelease func(dev int32) int32
	ctxSetCurrent     func(ctx uintptr) int32
	memAlloc          func(p *uintptr, n uint) int32
	memFree           func(p uintptr) int32
	memAllocHost      func(p *unsafe.Pointer, n uint) int32
	memFreeHost       func(p unsafe.Pointer) int32
	memsetD8Async     func(p uintptr, v uint8, n uint, stream uintptr) int32
	memcpyHtoDAsync   func(dst uintptr, src unsafe.Pointer, n uint, stream uintptr) int32
	memcpyDtoHAsync   func(dst unsafe.Pointer, src uintptr, n uint, stream uintptr) int32
	memcpyDtoDAsync   func(dst, src uintptr, n uint, stream uintptr) int32
	streamCreate      func(s *uintptr, flags uint32) int32
	streamDestroy     func(s uintptr) int32
	streamSynchronize func(s uintptr) int32
	streamQuery       func(s uintptr) int32
	eventCreate       func(e *uintptr, flags uint32) int32
	eventDestroy      func(e uintptr) int32
	eventRecord       func(e, stream uintptr) int32
	eventSynchronize  func(e uintptr) int32
	eventElapsedTime  func(ms *float32, start, end uintptr) int32
	streamWaitEvent   func(s, e uintptr, flags uint32) int32
	moduleLoadData    func(m *uintptr, image unsafe.Pointer) int32
	moduleUnload      func(m uintptr) int32
	moduleGetFunction func(f *uintptr, m uintptr, name string) int32
	funcSetAttribute  func(f uintptr, attr, value int32) int32
	launchKernel      func(f uintptr, gx, gy, gz, bx, by, bz, shared uint32, stream uintptr, params, extra uintptr) int32
	streamBeginCap    func(s uintptr, mode int32) int32
	streamEndCap      func(s uintptr, graph *uintptr) int32
	graphInstantiate  func(exec *uintptr, graph uintptr, flags uint64) int32
	graphLaunch       func(exec, stream uintptr) int32
	graphExecDestroy  func(exec uintptr) int32
	graphDestroy      func(graph uintptr) int32
	getErrorString    func(r int32, s **byte) int32
	getErrorName      func(r int32, s **byte) int32
}

func (d *driver) symbols() map[string]any {
	return map[string]any{
		"cuInit":                       &d.init,
		"cuDriverGetVersion":           &d.driverGetVersion,
		"cuDeviceGetCount":             &d.deviceGetCount,
		"cuDeviceGet":                  &d.deviceGet,
		"cuDeviceGetName":              &d.deviceGetName,
		"cuDeviceGetAttribute":         &d.deviceGetAttr,
		"cuDeviceTotalMem_v2":          &d.deviceTotalMem,
		"cuDevicePrimaryCtxRetain":     &d.primaryCtxRetain,
		"cuDevicePrimaryCtxRelease_v2": &d.primaryCtxRelease,
		"cuCtxSetCurrent":              &d.ctxSetCurrent,
		"cuMemAlloc_v2":                &d.memAlloc,
		"cuMemFree_v2":                 &d.memFree,
		"cuMemAllocHost_v2":            &d.memAllocHost,
		"cuMemFreeHost":                &d.memFreeHost,
		"cuMemsetD8Async":              &d.memsetD8Async,
		"cuMemcpyHtoDAsync_v2":         &d.memcpyHtoDAsync,
		"cuMemcpyDtoHAsync_v2":         &d.memcpyDtoHAsync,
		"cuMemcpyDtoDAsync_v2":         &d.memcpyDtoDAsync,
		"cuStreamCreate":               &d.streamCreate,
		"cuStreamDestroy_v2":           &d.streamDestroy,
		"cuStreamSynchronize":          &d.streamSynchronize,
		"cuStreamQuery":                &d.streamQuery,
		"cuEventCreate":                &d.eventCreate,
		"cuEventDestroy_v2":            &d.eventDestroy,
		"cuEventRecord":                &d.eventRecord,
		"cuEventSynchronize":           &d.eventSynchronize,
		"cuEventElapsedTime":           &d.eventElapsedTime,
		"cuStreamWaitEvent":            &d.streamWaitEvent,
		"cuModuleLoadData":             &d.moduleLoadData,
		"cuModuleUnload":               &d.moduleUnload,
		"cuModuleGetFunction":          &d.moduleGetFunction,
		"cuFuncSetAttribute":           &d.funcSetAttribute,
		"cuLaunchKernel":               &d.launchKernel,
		"cuStreamBeginCapture_v2":      &d.streamBeginCap,
		"cuStreamEndCapture":           &d.streamEndCap,
		"cuGraphInstantiateWithFlags":  &d.graphInstantiate,
		"cuGraphLaunch":                &d.graphLaunch,
		"cuGraphExecDestroy":           &d.graphExecDestroy,
		"cuGraphDestroy":               &d.graphDestroy,
		"cuGetErrorString":             &d.getErrorString,
		"cuGetErrorName":               &d.getErrorName,
	}
}

// check turns a CUresult into an error.
func (d *driver) check(fn string, r int32) error {
	if r == cuSuccess {
		return nil
	}
	e := &Error{Func: fn, Code: r}
	var name, text *byte
	if d.getErrorName(r, &name) == cuSuccess && name != nil {
		e.Text = dynlib.CString(name)
	}
	if d.getErrorString(r, &text) == cuSuccess && text != nil {
		if e.Text != "" {
			e.Text += ": "
		}
		e.Text += dynlib.CString(text)
	}
	return e
}

// device is one opened GPU: its primary context (the one the CUDA runtime
// inside cuBLAS and NCCL also uses, so all agree) and what we asked of it.
type device struct {
	ordinal    int
	dev        int32
	ctx        uintptr
	name       string
	major      int
	minor      int
	sms        int
	sharedOpt  int // bytes of shared memory a block may opt in to
	totalMem   uint64
	driverVers int
}

// openDevice initialises the driver and retains device ordinal's primary
// context. A machine with a driver but no usable GPU gives an error
// wrapping ErrNoCUDA (through Error.Unwrap or explicitly).
func (d *driver) openDevice(ordinal int) (*device, error) {
	if err := d.check("cuInit", d.init(0)); err != nil {
		return nil, err
	}
	var n int32
	if err := d.check("cuDeviceGetCount", d.deviceGetCount(&n)); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: the CUDA driver sees no GPU", ErrNoCUDA)
	}
	if ordinal < 0 || ordinal >= int(n) {
		return nil, fmt.Errorf("cuda: device %d out of range: this machine has %d CUDA devices", ordinal, n)
	}
	dv := &device{ordinal: ordinal}
	if err := d.check("cuDeviceGet", d.deviceGet(&dv.dev, int32(ordinal))); err != nil {
		return nil, err
	}
	var v int32
	if err := d.check("cuDriverGetVersion", d.driverGetVersion(&v)); err != nil {
		return nil, err
	}
	dv.driverVers = int(v)
	name := make([]byte, 256)
	if err := d.check("cuDeviceGetName", d.deviceGetName(&name[0], int32(len(name)), dv.dev)); err != nil {
		return nil, err
	}
	dv.name = dynlib.CString(&name[0])
	for _, a := range []struct {
		attr int32
		dst  *int
	}{
		{attrComputeCapMajor, &dv.major},
		{attrComputeCapMinor, &dv.minor},
		{attrMultiprocessorCount, &dv.sms},
		{attrMaxSharedOptin, &dv.sharedOpt},
	} {
		var x int32
		if err := d.check("cuDeviceGetAttribute", d.deviceGetAttr(&x, a.attr, dv.dev)); err != nil {
			return nil, err
		}
		*a.dst = int(x)
	}
	var mem uint
	if err := d.check("cuDeviceTotalMem_v2", d.deviceTotalMem(&mem, dv.dev)); err != nil {
		return nil, err
	}
	dv.totalMem = uint64(mem)
	if err := d.check("cuDevicePrimaryCtxRetain", d.primaryCtxRetain(&dv.ctx, dv.dev)); err != nil {
		return nil, err
	}
	return dv, nil
}

// arch is the compute capability as NVRTC spells it: 90 for sm_90.
func (dv *device) arch() int { return dv.major*10 + dv.minor }
