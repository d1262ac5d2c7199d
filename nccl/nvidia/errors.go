package nvidia

import (
	"fmt"

	"github.com/tandemllm/tandem/nccl"
)

// Result is an ncclResult_t.
type Result int32

// The ncclResult_t values of nccl.h.
const (
	Success            Result = 0
	UnhandledCudaError Result = 1
	SystemError        Result = 2
	InternalError      Result = 3
	InvalidArgument    Result = 4
	InvalidUsage       Result = 5
	RemoteError        Result = 6
	InProgress         Result = 7
)

// String is the enumerator's name in nccl.h, so logs can be grepped
// against NCCL's documentation.
func (r Result) String() string {
	switch r {
	case Success:
		return "ncclSuccess"
	case UnhandledCudaError:
		return "ncclUnhandledCudaError"
	case SystemError:
		return "ncclSystemError"
	case InternalError:
		return "ncclInternalError"
	case InvalidArgument:
		return "ncclInvalidArgument"
	case InvalidUsage:
		return "ncclInvalidUsage"
	case RemoteError:
		return "ncclRemoteError"
	case InProgress:
		return "ncclInProgress"
	}
	return fmt.Sprintf("ncclResult(%d)", int32(r))
}

// Error is a failed NCCL call: the function, its ncclResult_t, the text
// ncclGetErrorString gives for it and, where the library has
// ncclGetLastError (NCCL ≥ 2.13), the detail of the last failure.
type Error struct {
	Func   string // e.g. "ncclAllReduce"
	Code   Result
	Text   string // ncclGetErrorString(Code)
	Detail string // ncclGetLastError, may be empty
}

func (e *Error) Error() string {
	s := fmt.Sprintf("nvidia: %s: %s (%d): %s", e.Func, e.Code, int32(e.Code), e.Text)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Unwrap maps the codes callers branch on to nccl's sentinels: a remote
// error is NCCL's way of saying a peer failed or vanished.
func (e *Error) Unwrap() error {
	if e.Code == RemoteError {
		return nccl.ErrPeerLost
	}
	return nil
}

// CUDAError is a failed CUDA driver call.
type CUDAError struct {
	Func string // e.g. "cuStreamQuery"
	Code int32  // CUresult
	Text string // cuGetErrorString, may be empty
}

func (e *CUDAError) Error() string {
	if e.Text == "" {
		return fmt.Sprintf("nvidia: %s: CUresult %d", e.Func, e.Code)
	}
	return fmt.Sprintf("nvidia: %s: CUresult %d: %s", e.Func, e.Code, e.Text)
}
