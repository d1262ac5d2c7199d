package kvtransfer

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// proxyAction is what rawProxy does with a frame.
type proxyAction int

const (
	forward proxyAction = iota
	// die forwards half the payload, then closes both connections.
	die
	// hang forwards half the payload, then neither reads nor writes until
	// the test ends.
	hang
)

// rawProxy sits between Senders and a receiver's raw data plane on real
// sockets, parses the protocol both ways and lets a test damage frames. It
// records the acks that pass.
type rawProxy struct {
	addr, target string
	// frame sees each data frame of connection conn's stream'th stream
	// (both from 0) and may edit its payload.
	frame func(conn, stream int, m *tandemv1.KVChunk, payload []byte) proxyAction

	mu    sync.Mutex
	conns int
	open  []net.Conn
	acks  []*tandemv1.KVAck
	done  chan struct{}
	wg    sync.WaitGroup
}

func newRawProxy(t *testing.T, target string, frame func(conn, stream int, m *tandemv1.KVChunk, payload []byte) proxyAction) *rawProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &rawProxy{addr: ln.Addr().String(), target: target, frame: frame, done: make(chan struct{})}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			i := p.conns
			p.conns++
			p.open = append(p.open, c)
			p.mu.Unlock()
			p.wg.Go(func() { p.serve(i, c) })
		}
	})
	t.Cleanup(func() {
		close(p.done)
		ln.Close()
		p.mu.Lock()
		for _, c := range p.open {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *rawProxy) connCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns
}

func (p *rawProxy) ackList() []*tandemv1.KVAck {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slicesClone(p.acks)
}

func slicesClone[T any](s []T) []T { return append([]T(nil), s...) }

func (p *rawProxy) serve(i int, c net.Conn) {
	defer c.Close()
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer s.Close()
	p.mu.Lock()
	p.open = append(p.open, s)
	p.mu.Unlock()
	p.wg.Go(func() { p.back(s, c) })

	hello := make([]byte, len(rawHello))
	if _, err := io.ReadFull(c, hello); err != nil {
		return
	}
	if _, err := s.Write(hello); err != nil {
		return
	}
	for stream := 0; ; {
		var prefix [rawPrefixBytes]byte
		if _, err := io.ReadFull(c, prefix[:]); err != nil {
			return
		}
		hl, n := binary.LittleEndian.Uint32(prefix[:4]), binary.LittleEndian.Uint32(prefix[4:])
		if hl == 0 && n == 0 {
			if _, err := s.Write(prefix[:]); err != nil {
				return
			}
			stream++
			continue
		}
		frame := make([]byte, rawPrefixBytes+int(hl)+int(n))
		copy(frame, prefix[:])
		if _, err := io.ReadFull(c, frame[rawPrefixBytes:]); err != nil {
			return
		}
		hdr, payload := frame[rawPrefixBytes:rawPrefixBytes+hl], frame[rawPrefixBytes+hl:]
		var m tandemv1.KVChunk
		if err := unmarshalChunk(mem.BufferSlice{mem.SliceBuffer(hdr)}, &m); err != nil {
			return
		}
		act := p.frame(i, stream, &m, payload)
		if act != forward {
			frame = frame[:len(frame)-int(n)/2]
		}
		if _, err := s.Write(frame); err != nil {
			return
		}
		switch act {
		case die:
			return
		case hang:
			<-p.done
			return
		}
	}
}

// back forwards the receiver's reply and acks, recording the acks.
func (p *rawProxy) back(s, c net.Conn) {
	defer c.Close()
	reply := make([]byte, len(rawReply))
	if _, err := io.ReadFull(s, reply); err != nil {
		return
	}
	if _, err := c.Write(reply); err != nil {
		return
	}
	for {
		var size [4]byte
		if _, err := io.ReadFull(s, size[:]); err != nil {
			return
		}
		b := make([]byte, 4+binary.LittleEndian.Uint32(size[:]))
		copy(b, size[:])
		if _, err := io.ReadFull(s, b[4:]); err != nil {
			return
		}
		var ack tandemv1.KVAck
		if err := proto.Unmarshal(b[4:], &ack); err != nil {
			return
		}
		p.mu.Lock()
		p.acks = append(p.acks, &ack)
		p.mu.Unlock()
		if _, err := c.Write(b); err != nil {
			return
		}
	}
}

// corrupt flips a payload bit.
func corrupt(payload []byte) { payload[len(payload)/2] ^= 0x40 }

// corruptOnce sets up a push to r's address whose first stream has chunk 2
// corrupted in flight, and returns what the receiver acked.
type corruptOnce func(t *testing.T, addr string) (s *Sender, dest string, acks func() []*tandemv1.KVAck)

// TestCorruptChunkIsRetried: a chunk damaged in flight fails the stream's
// ack, and the retry (same attempt) completes the transfer.
func TestCorruptChunkIsRetried(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup corruptOnce
	}{
		{"raw", func(t *testing.T, addr string) (*Sender, string, func() []*tandemv1.KVAck) {
			px := newRawProxy(t, addr, func(conn, stream int, m *tandemv1.KVChunk, payload []byte) proxyAction {
				if conn == 0 && stream == 0 && m.Seq == 2 {
					corrupt(payload)
				}
				return forward
			})
			return newSender(t, SenderOptions{}), px.addr, px.ackList
		}},
		{"grpc", func(t *testing.T, addr string) (*Sender, string, func() []*tandemv1.KVAck) {
			f := &flaky{}
			s := newSender(t, SenderOptions{DisableRaw: true, DialOptions: []grpc.DialOption{grpc.WithStreamInterceptor(f.intercept)}})
			return s, addr, func() []*tandemv1.KVAck {
				f.mu.Lock()
				defer f.mu.Unlock()
				return slicesClone(f.acks)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t, 10*time.Second)
			r, addr := tinyReceiver(t)
			s, dest, acks := tc.setup(t, addr)
			src := &synth{tokens: tiny.tokens, hd: tiny.hd}
			st, err := s.Push(ctx, src, tinySpec("c", 1, dest))
			if err != nil {
				t.Fatal(err)
			}
			if st.Retries != 1 {
				t.Errorf("%d retries, want 1", st.Retries)
			}
			got := acks()
			if len(got) != 2 {
				t.Fatalf("%d acks, want 2", len(got))
			}
			if a := got[0]; a.Complete || len(a.FailedChunks) != 1 || a.FailedChunks[0] != 2 || len(a.MissingChunks) != 0 || !strings.Contains(a.ErrorMessage, "crc32c") {
				t.Errorf("first ack %v, want chunk 2 failed on its checksum", a)
			}
			if a := got[1]; !a.Complete || len(a.FailedChunks)+len(a.MissingChunks) != 0 {
				t.Errorf("second ack %v, want complete", a)
			}
			if fmt.Sprint(src.calls) != "[0 1 2]" {
				t.Errorf("source read layers %v, want each once in order", src.calls)
			}
			kv, err := r.Await(ctx, tinyExpect("c", 1))
			if err != nil {
				t.Fatal(err)
			}
			checkKV(t, kv, tiny.layers, tiny.tokens, tiny.heads, tiny.hd)
		})
	}
}

// corruptServerStream flips a payload bit of every chunk it receives.
type corruptServerStream struct{ grpc.ServerStream }

func (s corruptServerStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if c, ok := m.(*tandemv1.KVChunk); ok && err == nil && len(c.Payload) > 0 {
		corrupt(c.Payload)
	}
	return err
}

// TestAlwaysCorruptFails: when every stream arrives damaged, Push gives up
// after MaxAttempts streams with an error naming the request, the ranks and
// the checksum.
func TestAlwaysCorruptFails(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setup returns the sender, the address to push to and how many
		// streams the receiver saw.
		setup func(t *testing.T) (*Sender, string, func() int)
	}{
		{"raw", func(t *testing.T) (*Sender, string, func() int) {
			_, addr := tinyReceiver(t)
			px := newRawProxy(t, addr, func(_, _ int, _ *tandemv1.KVChunk, payload []byte) proxyAction {
				corrupt(payload)
				return forward
			})
			return newSender(t, SenderOptions{MaxAttempts: 4}), px.addr, func() int { return len(px.ackList()) }
		}},
		{"grpc", func(t *testing.T) (*Sender, string, func() int) {
			var mu sync.Mutex
			streams := 0
			_, addr := tinyReceiver(t, grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
				mu.Lock()
				streams++
				mu.Unlock()
				return h(srv, corruptServerStream{ss})
			}))
			return newSender(t, SenderOptions{MaxAttempts: 4, DisableRaw: true}), addr, func() int {
				mu.Lock()
				defer mu.Unlock()
				return streams
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t, 10*time.Second)
			s, addr, streams := tc.setup(t)
			st, err := s.Push(ctx, &synth{tokens: tiny.tokens, hd: tiny.hd}, tinySpec("bad", 1, addr))
			if !errors.Is(err, ErrTransferFailed) {
				t.Fatalf("err %v, want ErrTransferFailed", err)
			}
			for _, want := range []string{`"bad"`, "rank 0 -> 0", "crc32c"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %s", err, want)
				}
			}
			if n := streams(); n != 4 || st.Retries != 3 {
				t.Errorf("%d streams, %d retries; want 4, 3", n, st.Retries)
			}
		})
	}
}

// TestRawPeerFails: a receiver connection that dies mid-stream fails the
// stream and Push retries on a fresh connection; one that always dies fails
// Push after MaxAttempts, and one that hangs fails it when ctx's deadline
// passes, not later.
func TestRawPeerFails(t *testing.T) {
	for _, tc := range []struct {
		name     string
		act      func(conn int) proxyAction // on chunk 4 of a connection's first stream
		deadline time.Duration
		retries  int
		ok       bool
		errWants []string
	}{
		{"dies once", func(conn int) proxyAction { return [2]proxyAction{die, forward}[min(conn, 1)] }, 10 * time.Second, 1, true, nil},
		{"always dies", func(int) proxyAction { return die }, 10 * time.Second, 2, false, []string{"3 stream(s)"}},
		{"hangs", func(int) proxyAction { return hang }, 300 * time.Millisecond, 0, false, []string{"deadline exceeded", "1 stream(s)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, addr := tinyReceiver(t)
			px := newRawProxy(t, addr, func(conn, stream int, m *tandemv1.KVChunk, _ []byte) proxyAction {
				if stream == 0 && m.Seq == 4 {
					return tc.act(conn)
				}
				return forward
			})
			s := newSender(t, SenderOptions{})
			ctx, cancel := context.WithTimeout(context.Background(), tc.deadline)
			defer cancel()
			start := time.Now()
			st, err := s.Push(ctx, &synth{tokens: tiny.tokens, hd: tiny.hd}, tinySpec("die", 1, px.addr))
			took := time.Since(start)
			if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrTransferFailed)) {
				t.Fatalf("err %v; want success %v", err, tc.ok)
			}
			for _, want := range tc.errWants {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if st.Retries != tc.retries || px.connCount() != tc.retries+1 {
				t.Errorf("%d retries over %d connections, want %d over %d", st.Retries, px.connCount(), tc.retries, tc.retries+1)
			}
			if limit := tc.deadline + time.Second; took > limit {
				t.Errorf("Push took %v, over %v", took, limit)
			}
			if tc.ok {
				kv, err := r.Await(ctx, tinyExpect("die", 1))
				if err != nil {
					t.Fatal(err)
				}
				checkKV(t, kv, tiny.layers, tiny.tokens, tiny.heads, tiny.hd)
			}
		})
	}
}

// TestRawConnReused: pushes to one address, however their acks end, share
// one connection.
func TestRawConnReused(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	r, addr := tinyReceiver(t)
	px := newRawProxy(t, addr, func(int, int, *tandemv1.KVChunk, []byte) proxyAction { return forward })
	s := newSender(t, SenderOptions{MaxAttempts: 1})
	for i := range 3 {
		id := fmt.Sprint("reuse-", i)
		if _, err := s.Push(ctx, &synth{tokens: tiny.tokens, hd: tiny.hd}, tinySpec(id, 1, px.addr)); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Await(ctx, tinyExpect(id, 1)); err != nil {
			t.Fatal(err)
		}
	}
	spec := tinySpec("reuse-0", 1, px.addr)
	spec.DestRank = 5 // rejected: an incomplete ack leaves the connection usable
	if _, err := s.Push(ctx, &synth{tokens: tiny.tokens, hd: tiny.hd}, spec); !errors.Is(err, ErrTransferFailed) {
		t.Fatalf("push to the wrong rank: %v", err)
	}
	if _, err := s.Push(ctx, &synth{tokens: tiny.tokens, hd: tiny.hd}, tinySpec("reuse-3", 1, px.addr)); err != nil {
		t.Fatal(err)
	}
	if n := px.connCount(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
	if n := len(px.ackList()); n != 5 {
		t.Errorf("%d acks, want 5", n)
	}
}

// TestRawRefusedFallsBack: a receiver served by gRPC alone (no Mux) answers
// the raw hello with HTTP/2; Push sends over gRPC instead, in the same
// attempt, and keeps doing so for that address.
func TestRawRefusedFallsBack(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := NewReceiver(ReceiverOptions{Rank: 0, Heads: tiny.heads, HeadDim: tiny.hd, Layers: tiny.layers, MaxTokens: 64})
	srv := grpc.NewServer(ServerOptions()...)
	tandemv1.RegisterKVTransferServer(srv, r)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	addr := lis.Addr().String()

	s := newSender(t, SenderOptions{MaxAttempts: 1})
	for _, id := range []string{"old-0", "old-1"} {
		st, err := s.Push(ctx, &synth{tokens: tiny.tokens, hd: tiny.hd}, tinySpec(id, 1, addr))
		if err != nil {
			t.Fatal(err)
		}
		if st.Retries != 0 {
			t.Errorf("%d retries, want 0", st.Retries)
		}
		if !s.rawRefused(addr) {
			t.Error("the sender does not remember that the address refused raw")
		}
		kv, err := r.Await(ctx, tinyExpect(id, 1))
		if err != nil {
			t.Fatal(err)
		}
		checkKV(t, kv, tiny.layers, tiny.tokens, tiny.heads, tiny.hd)
	}
}

// countingListener counts the connections accepted through it.
type countingListener struct {
	net.Listener
	mu sync.Mutex
	n  int
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.n++
		l.mu.Unlock()
	}
	return c, err
}

func (l *countingListener) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// TestMuxRoutes: one port serves a gRPC client and a raw Sender, each
// connection reaching its own server, and drops clients that are neither
// without disturbing them.
func TestMuxRoutes(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	r := NewReceiver(ReceiverOptions{Rank: 0, Heads: tiny.heads, HeadDim: tiny.hd, Layers: tiny.layers, MaxTokens: 64})
	srv := grpc.NewServer(ServerOptions()...)
	tandemv1.RegisterKVTransferServer(srv, r)
	g, rw := Mux(lis, MuxOptions{})
	gl, rl := &countingListener{Listener: g}, &countingListener{Listener: rw}
	served, rawServed := make(chan error, 1), make(chan error, 1)
	go func() { served <- srv.Serve(gl) }()
	go func() { rawServed <- r.ServeRaw(rl) }()

	for _, tc := range []struct {
		name        string
		run         func(t *testing.T)
		grpc, raw   int // connections each side accepted, in all so far
		wantPending int
	}{
		{"grpc client", func(t *testing.T) {
			if ack := rawPush(t, ctx, addr, rawChunk("g", 0, 1, 0, 0, 4)); !ack.Complete {
				t.Errorf("ack %v, want complete", ack)
			}
		}, 1, 0, 1},
		{"raw sender", func(t *testing.T) {
			s := newSender(t, SenderOptions{MaxAttempts: 1})
			if _, err := s.Push(ctx, &synth{tokens: tiny.tokens, hd: tiny.hd}, tinySpec("r", 1, addr)); err != nil {
				t.Fatal(err)
			}
		}, 1, 1, 2},
		{"grpc sender", func(t *testing.T) {
			s := newSender(t, SenderOptions{MaxAttempts: 1, DisableRaw: true})
			if _, err := s.Push(ctx, &synth{tokens: tiny.tokens, hd: tiny.hd}, tinySpec("s", 1, addr)); err != nil {
				t.Fatal(err)
			}
		}, 2, 1, 3},
		{"HTTP/1 client", func(t *testing.T) { // goes to gRPC, which hangs up
			expectHangUp(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"+strings.Repeat("x", 64))
		}, 3, 1, 3},
		{"half a hello", func(t *testing.T) { // neither: dropped when it closes
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(c, rawMagic[:4]); err != nil {
				t.Fatal(err)
			}
			c.(*net.TCPConn).CloseWrite()
			waitEOF(t, c)
		}, 3, 1, 3},
		{"bad hello", func(t *testing.T) { // raw, which hangs up
			expectHangUp(t, addr, rawMagic+strings.Repeat("?", len(rawHello)-len(rawMagic)))
		}, 3, 2, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t)
			if g, r := gl.count(), rl.count(); g != tc.grpc || r != tc.raw {
				t.Errorf("gRPC accepted %d connections, raw %d; want %d, %d", g, r, tc.grpc, tc.raw)
			}
			if n := r.Pending(); n != tc.wantPending {
				t.Errorf("%d requests pending, want %d", n, tc.wantPending)
			}
		})
	}
	if _, err := r.Await(ctx, tinyExpect("r", 1)); err != nil {
		t.Error(err)
	}
	if _, err := r.Await(ctx, tinyExpect("s", 1)); err != nil {
		t.Error(err)
	}

	srv.Stop()
	for _, ch := range []chan error{served, rawServed} {
		if err := <-ch; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("the port still accepts connections after the gRPC server stopped")
	}
}

// expectHangUp writes hello to addr and expects the server to close the
// connection.
func expectHangUp(t *testing.T, addr, hello string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, hello); err != nil {
		t.Fatal(err)
	}
	waitEOF(t, c)
}

// waitEOF reads c until the server closes it, within 5 seconds.
func waitEOF(t *testing.T, c net.Conn) {
	t.Helper()
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("waiting for the server to hang up: %v", err)
	}
}

// TestRawProtocolErrors: a frame the receiver cannot parse ends the
// connection without an ack.
func TestRawProtocolErrors(t *testing.T) {
	_, addr := tinyReceiver(t)
	frame := func(hl, n uint32, rest ...byte) []byte {
		b := binary.LittleEndian.AppendUint32(nil, hl)
		return append(binary.LittleEndian.AppendUint32(b, n), rest...)
	}
	for _, tc := range []struct {
		name string
		send []byte
	}{
		{"payload without header", frame(0, 10)},
		{"huge header", frame(maxRawHeader+1, 0)},
		{"huge payload", frame(4, maxMessageBytes+1)},
		{"malformed header", frame(3, 0, 0x0a, 0x7f, 0x00)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(c, rawHello); err != nil {
				t.Fatal(err)
			}
			reply := make([]byte, len(rawReply))
			if _, err := io.ReadFull(c, reply); err != nil || !bytes.Equal(reply, []byte(rawReply)) {
				t.Fatalf("reply %q, %v", reply, err)
			}
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			waitEOF(t, c)
		})
	}
}
