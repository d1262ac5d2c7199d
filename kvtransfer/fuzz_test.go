package kvtransfer

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
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
		r := NewReceiver(ReceiverOptions{Rank: 0, Heads: parallel.Range{From: 0, To: 2}, HeadDim: 4, Layers: 2, MaxTokens: 64,
			Logger: slog.New(slog.DiscardHandler)})
		server, client := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = r.serveRaw(server)
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

// FuzzRawReplies: whatever a decode rank's port answers a raw push with
// (its reply to the hello, the ack's length and bytes), the sender ends
// the push with an error or a complete ack, never a panic or a hang.
func FuzzRawReplies(f *testing.F) {
	ack := func(a *tandemv1.KVAck) []byte {
		b, err := proto.Marshal(a)
		if err != nil {
			f.Fatal(err)
		}
		out := binary.LittleEndian.AppendUint32([]byte(rawReply), uint32(len(b)))
		return append(out, b...)
	}
	f.Add(ack(&tandemv1.KVAck{RequestId: "r", Complete: true}))
	f.Add(ack(&tandemv1.KVAck{RequestId: "r", FailedChunks: []uint32{0}, ErrorMessage: "crc"}))
	f.Add([]byte(rawReply + "\xff\xff\xff\xff"))
	f.Add([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
	a := newAnswerer(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = a.push(data)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the push did not end within 10 s of the receiver's answer")
		}
	})
}

// answerer is a port that reads a raw hello and answers what it is told
// to every connection, then half-closes and reads until the sender is
// done. One serves a whole fuzz run: the TIME_WAIT sockets its
// half-closes leave then all sit on its one port instead of using up the
// ephemeral ports (the senders' sockets close second and leave none).
type answerer struct {
	ln   net.Listener
	mu   sync.Mutex
	data []byte
}

func newAnswerer(tb testing.TB) *answerer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	a := &answerer{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.mu.Lock()
			data := a.data
			a.mu.Unlock()
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				hello := make([]byte, len(rawHello))
				_, _ = io.ReadFull(c, hello)
				_, _ = c.Write(data)
				_ = c.(*net.TCPConn).CloseWrite()
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	tb.Cleanup(func() { ln.Close() })
	return a
}

// push pushes a small request to the answerer, which answers data, and
// returns the push's error.
func (a *answerer) push(data []byte) error {
	a.mu.Lock()
	a.data = data
	a.mu.Unlock()
	s := NewSender(SenderOptions{MaxAttempts: 1})
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := s.Push(ctx, &synth{tokens: 2, hd: 4}, SendSpec{RequestID: "r", Attempt: 1, DestAddr: a.ln.Addr().String(),
		Layers: 2, Tokens: 2, Heads: parallel.Range{From: 0, To: 2}, HeadDim: 4})
	return err
}

// The harness means something: a complete ack ends the push well, an
// incomplete one with the receiver's reasons.
func TestAnswererHarness(t *testing.T) {
	ack := func(a *tandemv1.KVAck) []byte {
		b, err := proto.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		return append(binary.LittleEndian.AppendUint32([]byte(rawReply), uint32(len(b))), b...)
	}
	a := newAnswerer(t)
	if err := a.push(ack(&tandemv1.KVAck{RequestId: "r", Complete: true})); err != nil {
		t.Fatalf("a complete ack: %v", err)
	}
	if err := a.push(ack(&tandemv1.KVAck{RequestId: "r", ErrorMessage: "bad crc"})); err == nil || !strings.Contains(err.Error(), "bad crc") {
		t.Fatalf("an incomplete ack: %v, want its reason", err)
	}
}

// FuzzMuxRoute: whatever a connection to a shared port starts with, Mux
// hands it to the raw side when it starts with the raw hello's magic, to
// gRPC when it says anything else, or closes it when it ends before
// saying which; whoever gets it reads every byte it sent, in order.
func FuzzMuxRoute(f *testing.F) {
	f.Add([]byte(rawHello + "rest"))
	f.Add([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	f.Add([]byte(rawMagic[:4]))
	f.Add([]byte(rawMagic[:4] + "x"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		m := &mux{done: make(chan struct{})}
		g, r := &muxListener{m: m, ch: make(chan net.Conn, 1)}, &muxListener{m: m, ch: make(chan net.Conn, 1)}
		server, client := net.Pipe()
		go func() {
			_, _ = client.Write(data)
			client.Close()
		}()
		m.route(server, g, r)
		var got net.Conn
		side := "closed"
		select {
		case got = <-g.ch:
			side = "grpc"
		case got = <-r.ch:
			side = "raw"
		default:
		}
		want := "grpc"
		switch {
		case bytes.HasPrefix(data, []byte(rawMagic)):
			want = "raw"
		case bytes.HasPrefix([]byte(rawMagic), data):
			want = "closed"
		}
		if side != want {
			t.Fatalf("%q went to %s, want %s", data, side, want)
		}
		if got == nil {
			return
		}
		defer got.Close()
		read, err := io.ReadAll(got)
		if err != nil || !bytes.Equal(read, data) {
			t.Fatalf("%s side read %q (%v), the client sent %q", side, read, err, data)
		}
	})
}
