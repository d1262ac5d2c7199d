package nvidia

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/tandemllm/tandem/nccl"
)

func TestResultString(t *testing.T) {
	tests := []struct {
		r    Result
		want string
	}{
		{Success, "ncclSuccess"},
		{UnhandledCudaError, "ncclUnhandledCudaError"},
		{SystemError, "ncclSystemError"},
		{InternalError, "ncclInternalError"},
		{InvalidArgument, "ncclInvalidArgument"},
		{InvalidUsage, "ncclInvalidUsage"},
		{RemoteError, "ncclRemoteError"},
		{InProgress, "ncclInProgress"},
		{8, "ncclResult(8)"},
		{-1, "ncclResult(-1)"},
	}
	for _, tc := range tests {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("Result(%d) = %q, want %q", int32(tc.r), got, tc.want)
		}
	}
}

func TestErrorText(t *testing.T) {
	tests := []struct {
		err      error
		want     string
		peerLost bool
	}{
		{&Error{Func: "ncclAllReduce", Code: RemoteError, Text: "remote process exited"},
			"nvidia: ncclAllReduce: ncclRemoteError (6): remote process exited", true},
		{&Error{Func: "ncclCommInitRank", Code: SystemError, Text: "unhandled system error", Detail: "socket: connection refused"},
			"nvidia: ncclCommInitRank: ncclSystemError (2): unhandled system error: socket: connection refused", false},
		{&CUDAError{Func: "cuStreamQuery", Code: 700, Text: "an illegal memory access was encountered"},
			"nvidia: cuStreamQuery: CUresult 700: an illegal memory access was encountered", false},
		{&CUDAError{Func: "cuInit", Code: 100}, "nvidia: cuInit: CUresult 100", false},
	}
	for _, tc := range tests {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
		if got := errors.Is(tc.err, nccl.ErrPeerLost); got != tc.peerLost {
			t.Errorf("%v: Is(ErrPeerLost) = %v, want %v", tc.err, got, tc.peerLost)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	id, _ := UniqueIDFromBytes(make([]byte, UniqueIDBytes))
	id.internal[5] = 9
	tests := []struct {
		name string
		opts Options
		want string // "" for valid
	}{
		{"one rank", Options{Size: 1, ID: id}, ""},
		{"last rank of eight on device 7", Options{Rank: 7, Size: 8, Device: 7, ID: id}, ""},
		{"no ranks", Options{Size: 0, ID: id}, "need at least 1 rank"},
		{"rank too big", Options{Rank: 2, Size: 2, ID: id}, "rank 2 out of range [0, 2)"},
		{"negative rank", Options{Rank: -1, Size: 2, ID: id}, "rank -1 out of range"},
		{"negative device", Options{Size: 1, Device: -1, ID: id}, "device -1"},
		{"zero id", Options{Size: 1}, "unique id not set"},
		{"negative poll", Options{Size: 1, ID: id, Poll: -1}, "negative Spin"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts
			err := o.validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if o.Spin <= 0 || o.Poll <= 0 {
					t.Errorf("defaults not filled: spin %v poll %v", o.Spin, o.Poll)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// Argument checks run before any library call, so a Comm with no library
// behind it shows them; every call, failed or not, is recorded.
func TestArgumentChecks(t *testing.T) {
	rec := &callLog{}
	c := &Comm{rank: 1, size: 2, rec: rec}
	ctx := context.Background()
	host := nccl.Float32s(make([]float32, 4))
	dev := nccl.Device(0x1000, 4, nccl.F32)
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"allreduce host", func() error { return c.AllReduce(ctx, host) }, "host buffer; NCCL needs device memory"},
		{"allreduce bf16 host", func() error { return c.AllReduce(ctx, nccl.BFloat16s(make([]uint16, 2))) }, "host buffer"},
		{"allreduce nil device", func() error { return c.AllReduce(ctx, nccl.Device(0, 4, nccl.F32)) }, "nil device address"},
		{"allreduce unknown dtype", func() error { return c.AllReduce(ctx, nccl.Device(0x1000, 4, nccl.DType(9))) }, "no NCCL type"},
		{"allgather host send", func() error { return c.AllGather(ctx, host, nccl.Device(0x2000, 8, nccl.F32)) }, "send buffer is a host buffer"},
		{"allgather host recv", func() error { return c.AllGather(ctx, dev, nccl.Float32s(make([]float32, 8))) }, "recv buffer is a host buffer"},
		{"allgather short recv", func() error { return c.AllGather(ctx, dev, nccl.Device(0x2000, 7, nccl.F32)) }, "recv holds 7 elements, want 2 ranks × 4"},
		{"allgather dtypes", func() error { return c.AllGather(ctx, dev, nccl.Device(0x2000, 8, nccl.BF16)) }, "send is f32, recv is bf16"},
		{"broadcast host", func() error { return c.Broadcast(ctx, host, 0) }, "host buffer"},
		{"broadcast root", func() error { return c.Broadcast(ctx, dev, 2) }, "broadcast root 2 out of range"},
		{"send host", func() error { return c.Send(ctx, host, 0) }, "host buffer"},
		{"send self", func() error { return c.Send(ctx, dev, 1) }, "send to self"},
		{"recv peer", func() error { return c.Recv(ctx, dev, -1) }, "recv peer -1 out of range"},
	}
	for i, tc := range tests {
		err := tc.call()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one containing %q", tc.name, err, tc.want)
		}
		if len(rec.calls) != i+1 {
			t.Fatalf("%s: %d calls recorded, want %d", tc.name, len(rec.calls), i+1)
		}
	}
	if got := rec.calls[9]; got.Kind != nccl.KindBroadcast || got.Peer != 2 || got.Bytes != 16 {
		t.Errorf("broadcast record = %+v, want kind broadcast, peer 2 (the root), 16 bytes", got)
	}
}

func TestUniqueIDText(t *testing.T) {
	var id UniqueID
	for i := range id.internal {
		id.internal[i] = byte(255 - i)
	}
	text, err := id.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	var back UniqueID
	if err := back.UnmarshalText(text); err != nil || back != id {
		t.Fatalf("round trip: %v, equal %v", err, back == id)
	}
	tests := []struct {
		name, text, want string
	}{
		{"truncated", string(text[:100]), "want 128"},
		{"not base64", strings.Repeat("!", 172), "illegal base64"},
		{"empty", "", "is 0 bytes"},
		{"too long", base64.StdEncoding.EncodeToString(make([]byte, 131)), "is 131 bytes"},
	}
	for _, tc := range tests {
		var got UniqueID
		err := got.UnmarshalText([]byte(tc.text))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	if !(UniqueID{}).IsZero() || id.IsZero() {
		t.Error("IsZero wrong")
	}
	if b := id.Bytes(); len(b) != UniqueIDBytes || b[0] != 255 {
		t.Errorf("Bytes = %d bytes starting %d", len(b), b[0])
	}
}
