package cuda

import (
	"fmt"
	"runtime"
	"unsafe"
)

const (
	nvrtcSuccess       = 0
	nvrtcInvalidOption = 5
)

// nvrtc is the bound NVRTC API.
type nvrtc struct {
	version        func(major, minor *int32) int32
	createProgram  func(p *uintptr, src, name string, nHeaders int32, headers, names uintptr) int32
	compileProgram func(p uintptr, nOpts int32, opts *uintptr) int32
	destroyProgram func(p *uintptr) int32
	logSize        func(p uintptr, n *uint) int32
	log            func(p uintptr, dst *byte) int32
	cubinSize      func(p uintptr, n *uint) int32
	cubin          func(p uintptr, dst *byte) int32
	ptxSize        func(p uintptr, n *uint) int32
	ptx            func(p uintptr, dst *byte) int32
	errorString    func(r int32) string
	numArchs       func(n *int32) int32   // nil before 11.2
	archs          func(dst *int32) int32 // nil before 11.2
}

func (v *nvrtc) symbols() map[string]any {
	return map[string]any{
		"nvrtcVersion":           &v.version,
		"nvrtcCreateProgram":     &v.createProgram,
		"nvrtcCompileProgram":    &v.compileProgram,
		"nvrtcDestroyProgram":    &v.destroyProgram,
		"nvrtcGetProgramLogSize": &v.logSize,
		"nvrtcGetProgramLog":     &v.log,
		"nvrtcGetCUBINSize":      &v.cubinSize,
		"nvrtcGetCUBIN":          &v.cubin,
		"nvrtcGetPTXSize":        &v.ptxSize,
		"nvrtcGetPTX":            &v.ptx,
		"nvrtcGetErrorString":    &v.errorString,
	}
}

func (v *nvrtc) optional() map[string]any {
	return map[string]any{
		"nvrtcGetNumSupportedArchs": &v.numArchs,
		"nvrtcGetSupportedArchs":    &v.archs,
	}
}

func (v *nvrtc) check(fn string, r int32) error {
	if r == nvrtcSuccess {
		return nil
	}
	return &NVRTCError{Func: fn, Code: r, Text: v.errorString(r)}
}

// versionString is "12.4".
func (v *nvrtc) versionString() string {
	var major, minor int32
	v.version(&major, &minor)
	return fmt.Sprintf("%d.%d", major, minor)
}

// supportedArchs lists the architectures this NVRTC can compile for, or
// nil when it cannot say.
func (v *nvrtc) supportedArchs() []int {
	if v.numArchs == nil || v.archs == nil {
		return nil
	}
	var n int32
	if v.numArchs(&n) != nvrtcSuccess || n <= 0 {
		return nil
	}
	a := make([]int32, n)
	if v.archs(&a[0]) != nvrtcSuccess {
		return nil
	}
	out := make([]int, n)
	for i, x := range a {
		out[i] = int(x)
	}
	return out
}

// compileTarget picks what to ask NVRTC for on a device of arch: a CUBIN
// for the device itself when NVRTC knows it (no JIT at load time, and it
// loads on any driver of the same major version); otherwise PTX for the
// newest architecture NVRTC knows below it, which the driver JIT-compiles.
// ok is false when NVRTC knows nothing at or below arch.
func compileTarget(arch int, supported []int) (opt string, cubin bool, ok bool) {
	if len(supported) == 0 {
		return fmt.Sprintf("--gpu-architecture=sm_%d", arch), true, true
	}
	best := 0
	for _, a := range supported {
		if a == arch {
			return fmt.Sprintf("--gpu-architecture=sm_%d", arch), true, true
		}
		if a < arch && a > best {
			best = a
		}
	}
	if best == 0 {
		return "", false, false
	}
	return fmt.Sprintf("--gpu-architecture=compute_%d", best), false, true
}

// compile runs NVRTC over src and returns the CUBIN or PTX.
func (v *nvrtc) compile(src, name string, opts []string, cubin bool) ([]byte, error) {
	var prog uintptr
	if err := v.check("nvrtcCreateProgram", v.createProgram(&prog, src, name, 0, 0, 0)); err != nil {
		return nil, err
	}
	defer v.destroyProgram(&prog)
	// NVRTC takes const char* const*: C strings laid out in one Go byte
	// slice and an array of their addresses, kept alive over the call.
	// Neither holds Go pointers (the addresses are uintptrs), and Go's
	// heap does not move objects.
	strs, ptrs := cStrings(opts)
	var pp *uintptr
	if len(ptrs) > 0 {
		pp = &ptrs[0]
	}
	r := v.compileProgram(prog, int32(len(opts)), pp)
	runtime.KeepAlive(strs)
	if r != nvrtcSuccess {
		e := &NVRTCError{Func: "nvrtcCompileProgram", Code: r, Text: v.errorString(r)}
		e.Log = v.programLog(prog)
		return nil, e
	}
	size, get, fn := v.ptxSize, v.ptx, "nvrtcGetPTX"
	if cubin {
		size, get, fn = v.cubinSize, v.cubin, "nvrtcGetCUBIN"
	}
	var n uint
	if err := v.check(fn+"Size", size(prog, &n)); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("cuda: %s returned no code", fn)
	}
	out := make([]byte, n)
	if err := v.check(fn, get(prog, &out[0])); err != nil {
		return nil, err
	}
	return out, nil
}

func (v *nvrtc) programLog(prog uintptr) string {
	var n uint
	if v.logSize(prog, &n) != nvrtcSuccess || n <= 1 {
		return ""
	}
	b := make([]byte, n)
	if v.log(prog, &b[0]) != nvrtcSuccess {
		return ""
	}
	return string(b[:n-1]) // drop the NUL
}

// cStrings lays ss out as NUL-terminated strings in one buffer and returns
// it with the address of each string.
func cStrings(ss []string) ([]byte, []uintptr) {
	n := 0
	for _, s := range ss {
		n += len(s) + 1
	}
	buf := make([]byte, n)
	ptrs := make([]uintptr, len(ss))
	off := 0
	for i, s := range ss {
		copy(buf[off:], s)
		ptrs[i] = uintptr(unsafe.Pointer(&buf[off]))
		off += len(s) + 1
	}
	return buf, ptrs
}
