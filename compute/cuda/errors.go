package cuda

import (
	"errors"
	"fmt"
)

// ErrNoCUDA is wrapped by every error that means "this machine cannot run
// the CUDA backend": no driver, no device, or no cuBLAS or NVRTC. Callers
// that may fall back to the CPU (--device auto) test for it with
// errors.Is; any other error from New is a real failure.
var ErrNoCUDA = errors.New("cuda: CUDA not available")

// ErrBadMatrix is wrapped by LoadMat errors about a matrix's shape or size.
var ErrBadMatrix = errors.New("cuda: bad matrix")

// ErrCompile is wrapped by errors of NVRTC compiling the kernels; the
// error carries NVRTC's log.
var ErrCompile = errors.New("cuda: kernel compilation failed")

// Error is a failed CUDA driver call.
type Error struct {
	Func string // e.g. "cuLaunchKernel"
	Code int32  // CUresult
	Text string // cuGetErrorName and cuGetErrorString, may be empty
}

func (e *Error) Error() string {
	if e.Text == "" {
		return fmt.Sprintf("cuda: %s: CUresult %d", e.Func, e.Code)
	}
	return fmt.Sprintf("cuda: %s: CUresult %d: %s", e.Func, e.Code, e.Text)
}

// Unwrap maps "there is no usable GPU here" results to ErrNoCUDA.
func (e *Error) Unwrap() error {
	switch e.Code {
	case cuErrorNoDevice, cuErrorInsufficientDriver, cuErrorStubLibrary, cuErrorNotPermitted, cuErrorSystemDriverMismatch, cuErrorCompatNotSupported:
		return ErrNoCUDA
	}
	return nil
}

// BlasError is a failed cuBLAS call.
type BlasError struct {
	Func string
	Code int32 // cublasStatus_t
	Text string
}

func (e *BlasError) Error() string {
	return fmt.Sprintf("cuda: %s: cublasStatus %d: %s", e.Func, e.Code, e.Text)
}

// NVRTCError is a failed NVRTC call; Log is the compiler's output when
// the call was nvrtcCompileProgram.
type NVRTCError struct {
	Func string
	Code int32 // nvrtcResult
	Text string
	Log  string
}

func (e *NVRTCError) Error() string {
	s := fmt.Sprintf("cuda: %s: nvrtcResult %d: %s", e.Func, e.Code, e.Text)
	if e.Log != "" {
		s += "\n" + e.Log
	}
	return s
}

// Unwrap makes compile failures match ErrCompile.
func (e *NVRTCError) Unwrap() error {
	if e.Func == "nvrtcCompileProgram" {
		return ErrCompile
	}
	return nil
}
