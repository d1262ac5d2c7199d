package nvidia

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandemllm/tandem/nccl"
)

var _ nccl.Communicator = (*Comm)(nil)

// NCCL enum values (nccl.h).
const (
	ncclFloat32  int32 = 7
	ncclBfloat16 int32 = 9
	ncclSum      int32 = 0
)

// Options configure one rank's communicator.
type Options struct {
	// Rank is this process's rank in [0, Size).
	Rank int
	// Size is the number of ranks; at least 1.
	Size int
	// ID is the group's ncclUniqueId from rank 0; required.
	ID UniqueID
	// Device is the CUDA device ordinal this rank uses.
	Device int
	// Stream is the CUstream (cudaStream_t) collectives run on; 0 is the
	// legacy default stream of Device's primary context. The engine
	// passes the stream its kernels run on, so a collective starts right
	// after the layer that feeds it without a host round trip.
	Stream uintptr
	// Recorder, if set, receives a record of every call.
	Recorder nccl.Recorder
	// Spin is how long a call polls the stream without sleeping before
	// it falls back to sleeping Poll between polls. Decode-size
	// allreduces finish in tens of microseconds, well inside a sleep's
	// granularity. Default 200µs.
	Spin time.Duration
	// Poll is the sleep between stream polls after Spin; default 50µs.
	Poll time.Duration
}

func (o *Options) validate() error {
	switch {
	case o.Size < 1:
		return fmt.Errorf("nvidia: size %d: need at least 1 rank", o.Size)
	case o.Rank < 0 || o.Rank >= o.Size:
		return fmt.Errorf("nvidia: rank %d out of range [0, %d)", o.Rank, o.Size)
	case o.Device < 0:
		return fmt.Errorf("nvidia: device %d: ordinals start at 0", o.Device)
	case o.ID.IsZero():
		return errors.New("nvidia: unique id not set: rank 0 must create it with NewUniqueID and share it")
	case o.Spin < 0 || o.Poll < 0:
		return fmt.Errorf("nvidia: negative Spin (%v) or Poll (%v)", o.Spin, o.Poll)
	}
	if o.Spin == 0 {
		o.Spin = 200 * time.Microsecond
	}
	if o.Poll == 0 {
		o.Poll = 50 * time.Microsecond
	}
	return nil
}

// commConfig is ncclConfig_t as NCCL 2.14 defined it. NCCL reads only the
// fields the version and size fields announce, so the 2.14 prefix works
// with every later library.
type commConfig struct {
	size           uint
	magic          uint32
	version        uint32
	blocking       int32
	cgaClusterSize int32
	minCTAs        int32
	maxCTAs        int32
	_              uintptr // netName; NULL lets NCCL choose
}

func nonBlockingConfig() commConfig {
	const undef = math.MinInt32 // NCCL_CONFIG_UNDEF_INT: let NCCL choose
	return commConfig{
		size:           40,
		magic:          0xcafebeef,
		version:        21400,
		blocking:       0,
		cgaClusterSize: undef,
		minCTAs:        undef,
		maxCTAs:        undef,
	}
}

// Comm is one rank's NCCL communicator. Calls are serialised: NCCL needs
// every rank to issue collectives in the same order, so two concurrent
// calls on one rank would be a bug anyway.
type Comm struct {
	lib        *Library
	rank, size int
	dev        int32
	cctx       uintptr // primary context of dev
	comm       uintptr // ncclComm_t
	stream     uintptr
	rec        nccl.Recorder
	spin, poll time.Duration

	closing atomic.Bool // set by Close so a blocked call aborts

	mu      sync.Mutex
	state   commState // guarded by mu
	scratch uintptr   // 4 bytes of device memory for Barrier, guarded by mu
}

type commState uint8

const (
	stateOpen commState = iota
	stateAborted
	stateClosed
)

// NewComm joins the group: it blocks until all Size ranks have called it
// with the same ID, ctx expires (the half-made communicator is aborted),
// or NCCL fails.
func (l *Library) NewComm(ctx context.Context, opts Options) (*Comm, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("nvidia: new comm: %w", err)
	}
	// The CUDA context and NCCL's view of the current device are
	// per-thread; keep this goroutine on one thread for the whole setup.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cu := l.cu
	dev, cctx, err := cu.primaryContext(opts.Device)
	if err != nil {
		return nil, err
	}
	c := &Comm{lib: l, rank: opts.Rank, size: opts.Size, dev: dev, cctx: cctx,
		stream: opts.Stream, rec: opts.Recorder, spin: opts.Spin, poll: opts.Poll}
	if err := cu.check("cuCtxSetCurrent", cu.ctxSetCurrent(cctx)); err != nil {
		cu.primaryCtxRelease(dev)
		return nil, err
	}
	if err := c.initComm(ctx, opts.ID); err != nil {
		cu.primaryCtxRelease(dev)
		return nil, err
	}
	if err := cu.check("cuMemAlloc_v2", cu.memAlloc(&c.scratch, 4)); err != nil {
		l.api.commDestroy(c.comm)
		cu.primaryCtxRelease(dev)
		return nil, err
	}
	return c, nil
}

// initComm creates the ncclComm_t, non-blocking where the library can so
// that a rank that never shows up cannot hold this one forever.
func (c *Comm) initComm(ctx context.Context, id UniqueID) error {
	api := &c.lib.api
	if api.commInitRankCfg == nil {
		if r := api.commInitRank(&c.comm, int32(c.size), id, int32(c.rank)); r != Success {
			return c.lib.err("ncclCommInitRank", r, 0)
		}
		return nil
	}
	cfg := nonBlockingConfig()
	r := api.commInitRankCfg(&c.comm, int32(c.size), id, int32(c.rank), &cfg)
	runtime.KeepAlive(&cfg)
	if r != Success && r != InProgress {
		if c.comm != 0 {
			api.commAbort(c.comm)
		}
		return c.lib.err("ncclCommInitRankConfig", r, 0)
	}
	for wait := c.spin; ; {
		var ae Result
		if r := api.commGetAsyncErr(c.comm, &ae); r != Success {
			api.commAbort(c.comm)
			return c.lib.err("ncclCommGetAsyncError", r, c.comm)
		}
		switch ae {
		case Success:
			return nil
		case InProgress:
		default:
			api.commAbort(c.comm)
			return c.lib.err("ncclCommInitRankConfig", ae, c.comm)
		}
		select {
		case <-ctx.Done():
			api.commAbort(c.comm)
			return fmt.Errorf("nvidia: joining group as rank %d of %d: %w", c.rank, c.size, ctx.Err())
		case <-time.After(wait):
		}
		// Joining takes milliseconds to seconds; back off to 10ms.
		wait = min(2*wait, 10*time.Millisecond)
	}
}

// Rank is this rank.
func (c *Comm) Rank() int { return c.rank }

// Size is the number of ranks.
func (c *Comm) Size() int { return c.size }

// Close destroys the communicator and releases the device context. A call
// blocked on another goroutine aborts and fails with nccl.ErrClosed.
// Close is idempotent.
func (c *Comm) Close() error {
	c.closing.Store(true)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == stateClosed {
		return nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cu, api := c.lib.cu, &c.lib.api
	var errs []error
	if err := cu.check("cuCtxSetCurrent", cu.ctxSetCurrent(c.cctx)); err != nil {
		errs = append(errs, err)
	}
	if c.state == stateOpen {
		if r := api.commDestroy(c.comm); r != Success && r != InProgress {
			errs = append(errs, c.lib.err("ncclCommDestroy", r, c.comm))
		}
	}
	if c.scratch != 0 {
		errs = append(errs, cu.check("cuMemFree_v2", cu.memFree(c.scratch)))
	}
	errs = append(errs, cu.check("cuDevicePrimaryCtxRelease_v2", cu.primaryCtxRelease(c.dev)))
	c.state = stateClosed
	return errors.Join(errs...)
}

// abort tears the communicator down after an error so that peers blocked
// on this rank fail too instead of hanging. Called with mu held.
func (c *Comm) abort() {
	if c.state == stateOpen {
		c.lib.api.commAbort(c.comm)
		c.state = stateAborted
	}
}
