package nccl

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unsafe"
)

// DType is the element type of a collective's buffer.
type DType uint8

// Element types collectives carry.
const (
	F32 DType = iota
	BF16
)

func (d DType) String() string {
	switch d {
	case F32:
		return "f32"
	case BF16:
		return "bf16"
	}
	return fmt.Sprintf("DType(%d)", uint8(d))
}

// Size is the number of bytes of one element.
func (d DType) Size() int {
	if d == F32 {
		return 4
	}
	return 2
}

// Buffer is the memory a collective reads and writes: host memory (the TCP
// ring) or device memory (NCCL). It holds Count elements of DType.
type Buffer struct {
	host  []byte
	dev   uintptr
	count int
	dtype DType
}

// Float32s is a host buffer over s.
func Float32s(s []float32) Buffer {
	return Buffer{host: unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), 4*len(s)), count: len(s), dtype: F32}
}

// BFloat16s is a host buffer over s (bfloat16 bit patterns).
func BFloat16s(s []uint16) Buffer {
	return Buffer{host: unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), 2*len(s)), count: len(s), dtype: BF16}
}

// Device is a buffer of count elements at a device address.
func Device(addr uintptr, count int, dt DType) Buffer {
	return Buffer{dev: addr, count: count, dtype: dt}
}

// Count is the number of elements.
func (b Buffer) Count() int { return b.count }

// DType is the element type.
func (b Buffer) DType() DType { return b.dtype }

// Bytes is the size in bytes.
func (b Buffer) Bytes() int { return b.count * b.dtype.Size() }

// Host returns the host memory of a host buffer, nil for device buffers.
func (b Buffer) Host() []byte { return b.host }

// DeviceAddr returns the address of a device buffer, 0 for host buffers.
func (b Buffer) DeviceAddr() uintptr { return b.dev }

// Slice is elements [from, to) of b.
func (b Buffer) Slice(from, to int) Buffer {
	s := b.dtype.Size()
	if b.host != nil {
		return Buffer{host: b.host[from*s : to*s], count: to - from, dtype: b.dtype}
	}
	return Buffer{dev: b.dev + uintptr(from*s), count: to - from, dtype: b.dtype}
}

// Kind names a collective operation.
type Kind string

// Collective kinds, as recorded.
const (
	KindAllReduce Kind = "allreduce"
	KindAllGather Kind = "allgather"
	KindBroadcast Kind = "broadcast"
	KindSend      Kind = "send"
	KindRecv      Kind = "recv"
	KindBarrier   Kind = "barrier"
)

// Call is the record of one collective on one rank.
type Call struct {
	Kind  Kind
	Bytes int // bytes of the caller's buffer
	Peer  int // the peer of Send/Recv, the root of Broadcast, else -1
	Start time.Time
	Dur   time.Duration
}

// Errors callers branch on.
var (
	// ErrMismatch: ranks called a collective with different kinds, sizes
	// or dtypes. The error names both sides.
	ErrMismatch = errors.New("nccl: collective mismatch across ranks")
	// ErrPeerLost: a peer closed its connection or stopped answering.
	ErrPeerLost = errors.New("nccl: peer lost")
	// ErrClosed: the communicator was closed or aborted.
	ErrClosed = errors.New("nccl: communicator closed")
	// ErrUnavailable: the backend's library cannot be found or loaded.
	ErrUnavailable = errors.New("nccl: library unavailable")
)

// Communicator is one rank's handle on a group of Size ranks. Every rank
// must issue the same collectives in the same order with matching buffers.
// After an error the communicator is unusable; Close it.
type Communicator interface {
	Rank() int
	Size() int
	// AllReduce sums buf element-wise across ranks, in place.
	AllReduce(ctx context.Context, buf Buffer) error
	// AllGather concatenates every rank's send, in rank order, into recv
	// (Size × send.Count elements).
	AllGather(ctx context.Context, send, recv Buffer) error
	// Broadcast copies root's buf into every other rank's buf.
	Broadcast(ctx context.Context, buf Buffer, root int) error
	// Send and Recv move buf to or from one peer.
	Send(ctx context.Context, buf Buffer, peer int) error
	Recv(ctx context.Context, buf Buffer, peer int) error
	// Barrier returns once every rank has entered it.
	Barrier(ctx context.Context) error
	// Close releases the connections; blocked calls on any rank fail.
	Close() error
}

// Recorder receives the record of every collective call. Implementations
// must not block and should not allocate.
type Recorder interface {
	Record(Call)
}
