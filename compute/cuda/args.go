package cuda

import (
	"fmt"
	"math"
	"unsafe"
)

// maxKernelArgs bounds a kernel's parameter count; ours have at most 15.
const maxKernelArgs = 24

// argKind is the C type of one kernel parameter.
type argKind uint8

const (
	argPtr argKind = iota // a device pointer (CUdeviceptr, 8 bytes)
	argI32                // int
	argI64                // long long
	argF32                // float
)

// arg is one kernel parameter before packing.
type arg struct {
	kind argKind
	bits uint64
}

func ptrArg(p uintptr) arg { return arg{argPtr, uint64(p)} }
func i32Arg(v int) arg     { return arg{argI32, uint64(uint32(int32(v)))} }
func i64Arg(v int64) arg   { return arg{argI64, uint64(v)} }
func f32Arg(v float32) arg { return arg{argF32, uint64(math.Float32bits(v))} }

// argPack is the memory cuLaunchKernel's kernelParams points at: slot i
// of the first maxKernelArgs words holds the address of parameter i's
// value, and the value itself sits in word maxKernelArgs+i (4-byte
// values in the word's low half, which is where a little-endian reader of
// an int or float finds them). cuLaunchKernel copies the values during
// the call, so one pack serves every launch of a backend.
//
// The memory is one Go array allocated once (the heap does not move it)
// and holds addresses only as uintptrs, so C sees no Go pointers.
type argPack struct {
	mem *[2 * maxKernelArgs]uint64
}

func newArgPack() argPack { return argPack{mem: new([2 * maxKernelArgs]uint64)} }

// fill lays args out and returns the kernelParams pointer.
func (p argPack) fill(args []arg) (uintptr, error) {
	if len(args) > maxKernelArgs {
		return 0, fmt.Errorf("cuda: %d kernel arguments, at most %d", len(args), maxKernelArgs)
	}
	base := uintptr(unsafe.Pointer(p.mem))
	for i, a := range args {
		p.mem[maxKernelArgs+i] = a.bits
		p.mem[i] = uint64(base + uintptr(maxKernelArgs+i)*8)
	}
	return base, nil
}
