package kvtransfer

import (
	"bytes"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/tandemllm/tandem/parallel"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// FuzzUnmarshalChunk: the hand-written KVChunk decoder never panics on
// what a network peer sends, and where the protobuf library also accepts
// the bytes, both read the same fields.
func FuzzUnmarshalChunk(f *testing.F) {
	good, err := proto.Marshal(&tandemv1.KVChunk{
		RequestId: "r", Attempt: 2, Seq: 1, ChunkCount: 3, SourceRank: 1, DestRank: 0, Layer: 4,
		HeadStart: 0, HeadEnd: 2, TokenStart: 8, TokenEnd: 16, Dtype: tandemv1.DataType_DATA_TYPE_FLOAT32,
		Shape: []int32{2, 8, 2, 4}, Payload: []byte{1, 2, 3, 4}, Crc32C: 0xdeadbeef,
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte{0x72, 0xff, 0xff, 0xff, 0xff, 0x0f}) // payload length past the end
	f.Fuzz(func(t *testing.T, b []byte) {
		var got tandemv1.KVChunk
		err := unmarshalChunk(mem.BufferSlice{mem.SliceBuffer(b)}, &got)
		var want tandemv1.KVChunk
		if err != nil || proto.Unmarshal(b, &want) != nil {
			return
		}
		if got.RequestId != want.RequestId || got.Attempt != want.Attempt || got.Seq != want.Seq ||
			got.ChunkCount != want.ChunkCount || got.SourceRank != want.SourceRank || got.DestRank != want.DestRank ||
			got.Layer != want.Layer || got.HeadStart != want.HeadStart || got.HeadEnd != want.HeadEnd ||
			got.TokenStart != want.TokenStart || got.TokenEnd != want.TokenEnd || got.Dtype != want.Dtype ||
			!slices.Equal(got.Shape, want.Shape) || !bytes.Equal(got.Payload, want.Payload) || got.Crc32C != want.Crc32C {
			t.Fatalf("decoded %v, protobuf reads %v", &got, &want)
		}
	})
}

// FuzzServeRaw: whatever follows a valid hello on the raw data plane,
// the receiver neither panics nor hangs once the bytes run out.
func FuzzServeRaw(f *testing.F) {
	frame := func(h *tandemv1.KVChunk, payload []byte) []byte {
		hb, err := proto.Marshal(h)
		if err != nil {
			f.Fatal(err)
		}
		b := []byte{byte(len(hb)), byte(len(hb) >> 8), 0, 0, byte(len(payload)), byte(len(payload) >> 8), 0, 0}
		return append(append(b, hb...), payload...)
	}
	f.Add(frame(&tandemv1.KVChunk{RequestId: "r", Attempt: 1, ChunkCount: 1, HeadEnd: 2, TokenEnd: 1,
		Dtype: tandemv1.DataType_DATA_TYPE_FLOAT32, Shape: []int32{2, 1, 2, 4}}, make([]byte, 64)))
	f.Add(make([]byte, 8)) // an empty stream: the receiver acks
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReceiver(ReceiverOptions{Rank: 0, Heads: parallel.Range{From: 0, To: 2}, HeadDim: 4, Layers: 2, MaxTokens: 64})
		server, client := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.serveRaw(server)
			server.Close()
		}()
		go io.Copy(io.Discard, client) // replies and acks
		_ = client.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_, _ = client.Write(append([]byte(rawHello), b...)) // fails once the receiver gives up
		client.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the raw receiver did not return after its input ended")
		}
	})
}
