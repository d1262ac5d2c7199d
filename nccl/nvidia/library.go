package nvidia

import (
	"fmt"
	"os"

	"github.com/ebitengine/purego"

	"github.com/tandemllm/tandem/internal/dynlib"
	"github.com/tandemllm/tandem/nccl"
)

// LoadOptions says where to find the libraries. The zero value searches
// as the package documentation describes.
type LoadOptions struct {
	// Path, when set, is the only libnccl tried (it wins over
	// $TANDEM_NCCL_LIBRARY too).
	Path string
	// CUDADriver, when set, is the only CUDA driver library tried;
	// default: the search compute/cuda uses too
	// (dynlib.DriverCandidates).
	CUDADriver string
	// Getenv and Root feed Candidates; defaults os.Getenv and "/".
	Getenv func(string) string
	Root   string
}

// minVersion is the oldest NCCL accepted: 2.10 added ncclBfloat16, which
// the engine's bf16 activations need.
const minVersion = 21000

// Library is a loaded libnccl and CUDA driver. It is safe for concurrent
// use. It is never unloaded: NCCL leaves proxy and watchdog threads
// running inside the library after communicators are destroyed, and
// unmapping code under them would crash the process.
type Library struct {
	path    string
	drvPath string
	version int
	api     ncclAPI
	cu      *driver
}

// ncclAPI holds the bound NCCL functions; the Go signatures mirror nccl.h
// (size_t → uint, enums and int → int32, pointers → uintptr or *T).
type ncclAPI struct {
	getVersion      func(v *int32) Result
	getUniqueID     func(id *UniqueID) Result
	commInitRank    func(comm *uintptr, nranks int32, id UniqueID, rank int32) Result
	commInitRankCfg func(comm *uintptr, nranks int32, id UniqueID, rank int32, cfg *commConfig) Result // nil before 2.14
	allReduce       func(send, recv uintptr, count uint, dt, op int32, comm, stream uintptr) Result
	allGather       func(send, recv uintptr, count uint, dt int32, comm, stream uintptr) Result
	broadcast       func(send, recv uintptr, count uint, dt, root int32, comm, stream uintptr) Result
	send            func(buf uintptr, count uint, dt, peer int32, comm, stream uintptr) Result
	recv            func(buf uintptr, count uint, dt, peer int32, comm, stream uintptr) Result
	groupStart      func() Result
	groupEnd        func() Result
	commAbort       func(comm uintptr) Result
	commDestroy     func(comm uintptr) Result
	commGetAsyncErr func(comm uintptr, res *Result) Result
	getErrorString  func(r Result) string
	getLastError    func(comm uintptr) string // nil before 2.13
}

// Load finds, opens and binds libnccl and the CUDA driver. When nothing
// can be loaded the error wraps nccl.ErrUnavailable and lists every path
// tried with the reason it failed.
func Load(opts LoadOptions) (*Library, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	root := opts.Root
	if root == "" {
		root = "/"
	}
	cands := []Candidate{dynlib.File("", opts.Path, "option")}
	if opts.Path == "" {
		cands = Candidates(getenv, root)
	}
	handle, path, err := dynlib.Open(cands, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		return nil, fmt.Errorf("%w: libnccl not found (set %s to its path); %v", nccl.ErrUnavailable, EnvLibrary, err)
	}
	l := &Library{path: path}
	if err := l.bind(handle); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", nccl.ErrUnavailable, path, err)
	}
	var v int32
	if r := l.api.getVersion(&v); r != Success {
		return nil, l.err("ncclGetVersion", r, 0)
	}
	l.version = int(v)
	// Codes before 2.9 (X*1000+Y*100+Z) are all below minVersion too.
	if l.version < minVersion {
		return nil, fmt.Errorf("%w: %s is NCCL %s, need 2.10 or newer", nccl.ErrUnavailable, path, VersionString(int(v)))
	}
	drv := []Candidate{dynlib.File("", opts.CUDADriver, "option")}
	if opts.CUDADriver == "" {
		drv = dynlib.DriverCandidates(getenv, root)
	}
	cu, drvPath, err := loadDriver(drv)
	if err != nil {
		return nil, fmt.Errorf("%w: CUDA driver not loaded (set %s to its path); %w", nccl.ErrUnavailable, dynlib.EnvDriver, err)
	}
	l.cu, l.drvPath = cu, drvPath
	return l, nil
}

// bind binds every NCCL function this package calls; those of newer
// versions only, when the library has them.
func (l *Library) bind(h uintptr) error {
	a := &l.api
	return dynlib.Bind(h, map[string]any{
		"ncclGetVersion":        &a.getVersion,
		"ncclGetUniqueId":       &a.getUniqueID,
		"ncclCommInitRank":      &a.commInitRank,
		"ncclAllReduce":         &a.allReduce,
		"ncclAllGather":         &a.allGather,
		"ncclBroadcast":         &a.broadcast,
		"ncclSend":              &a.send,
		"ncclRecv":              &a.recv,
		"ncclGroupStart":        &a.groupStart,
		"ncclGroupEnd":          &a.groupEnd,
		"ncclCommAbort":         &a.commAbort,
		"ncclCommDestroy":       &a.commDestroy,
		"ncclCommGetAsyncError": &a.commGetAsyncErr,
		"ncclGetErrorString":    &a.getErrorString,
	}, map[string]any{
		"ncclCommInitRankConfig": &a.commInitRankCfg,
		"ncclGetLastError":       &a.getLastError,
	})
}

// Path is the file the library was loaded from.
func (l *Library) Path() string { return l.path }

// DriverPath is the file the CUDA driver was loaded from.
func (l *Library) DriverPath() string { return l.drvPath }

// Version is NCCL's version code, major*10000 + minor*100 + patch.
func (l *Library) Version() int { return l.version }

// VersionString renders a version code as "2.21.5".
func VersionString(code int) string {
	if code >= 10000 {
		return fmt.Sprintf("%d.%d.%d", code/10000, code/100%100, code%100)
	}
	// NCCL before 2.9 encoded X*1000 + Y*100 + Z.
	return fmt.Sprintf("%d.%d.%d", code/1000, code/100%10, code%100)
}

// NewUniqueID asks NCCL for a fresh ncclUniqueId. Rank 0 calls it and
// publishes the result; the other ranks read it and pass it to NewComm.
func (l *Library) NewUniqueID() (UniqueID, error) {
	var id UniqueID
	if r := l.api.getUniqueID(&id); r != Success {
		return UniqueID{}, l.err("ncclGetUniqueId", r, 0)
	}
	return id, nil
}

// err builds the typed error for a failed call; comm may be 0.
func (l *Library) err(fn string, r Result, comm uintptr) error {
	e := &Error{Func: fn, Code: r, Text: l.api.getErrorString(r)}
	if l.api.getLastError != nil {
		e.Detail = l.api.getLastError(comm)
	}
	return e
}
