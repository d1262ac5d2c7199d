package ring

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemllm/tandem/nccl"
)

// greeting is what a well-behaved peer of a 2-rank group says first:
// its hello and, from the accepting rank 0, the status byte and an empty
// reason; then its part of the shared-memory handshake, where it wants
// none: rank 0 offers no segment and says the group keeps to TCP, rank 1
// declines whatever is offered.
func greeting(fromRank int) []byte {
	b := make([]byte, helloBytes, helloBytes+3+offerBytes+1)
	hello{version: protoVersion, group: groupID(""), size: 2, rank: fromRank}.put(b)
	if fromRank == 0 {
		b = append(b, 1, 0, 0)
		offer := make([]byte, offerBytes)
		binary.LittleEndian.PutUint32(offer, shmMagic)
		return append(append(b, offer...), 0)
	}
	return append(b, 0)
}

// callFrame is one call's header and data.
func callFrame(h header, data []byte) []byte {
	b := make([]byte, headerBytes, headerBytes+len(data))
	h.put(b)
	return append(b, data...)
}

// ringFrames is a greeting and one call.
func ringFrames(fromRank int, h header, data []byte) []byte {
	return append(greeting(fromRank), callFrame(h, data)...)
}

// FuzzPeerBytes: a real rank whose peer sends arbitrary bytes, as its
// hello, its call headers or its data, ends its handshake and its call
// with an error or a result, never with a panic or a hang. dialer makes
// the fake peer rank 0 (it answers the real rank's dial) instead of rank
// 1 (it dials the real rank); call picks what the real rank calls; greet
// puts a well-formed handshake before the bytes.
func FuzzPeerBytes(f *testing.F) {
	small := make([]byte, 16)
	allReduce := header{kind: nccl.KindAllReduce, dtype: nccl.F32, alg: algDoubling, count: 4}
	f.Add(ringFrames(1, allReduce, small), uint8(0), false, false)
	f.Add(ringFrames(0, allReduce, small), uint8(0), true, false)
	f.Add(callFrame(allReduce, small), uint8(0), false, true)
	f.Add(callFrame(header{kind: nccl.KindBroadcast, dtype: nccl.F32, count: 4, root: 1}, small), uint8(2), false, true)
	f.Add(callFrame(header{kind: nccl.KindAllGather, dtype: nccl.F32, count: 4}, small), uint8(3), false, true)
	f.Add(callFrame(header{kind: nccl.KindSend, dtype: nccl.F32, count: 4}, small), uint8(4), true, true)
	f.Add(callFrame(header{kind: nccl.KindBarrier}, nil), uint8(5), false, true)
	f.Add(callFrame(header{kind: nccl.KindAllReduce, dtype: nccl.F32, alg: algRing, count: 64}, make([]byte, 128)), uint8(1), true, true)
	refused := greeting(0)
	refused[helloBytes], refused[helloBytes+1], refused[helloBytes+2] = 0, 0xff, 0xff // a reason longer than what follows
	f.Add(refused, uint8(0), true, false)
	yes := greeting(0)
	yes[len(yes)-1] = shmYes // a verdict for a segment nobody offered
	f.Add(yes, uint8(0), true, false)
	fp := newFakePeer(f)
	f.Fuzz(func(t *testing.T, data []byte, call uint8, dialer, greet bool) {
		if greet {
			// Past a well-formed handshake most inputs reach the calls
			// (a bad hello mostly ends at once).
			from := 1
			if dialer {
				from = 0
			}
			data = append(greeting(from), data...)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = fp.exchange(t, data, call, dialer)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the real rank did not return within 10 s of its peer's bytes ending")
		}
	})
}

// fakePeer is the other rank of a 2-rank group, speaking given bytes.
// As rank 0 it answers the real rank's dial on one listener for a whole
// fuzz run, writes its bytes, half-closes and reads until the real rank
// is done: the TIME_WAIT sockets it leaves all sit on that one port. As
// rank 1 it dials the real rank, writes its bytes and, once the real
// rank is done or has read nothing more for 50 ms, resets the
// connection, which leaves no TIME_WAIT (a half-close from a fresh
// ephemeral port each time would use them up over a long run).
type fakePeer struct {
	ln   net.Listener
	mu   sync.Mutex
	data []byte
}

func newFakePeer(tb testing.TB) *fakePeer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	fp := &fakePeer{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fp.mu.Lock()
			data := fp.data
			fp.mu.Unlock()
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				var hello [helloBytes]byte
				if _, err := io.ReadFull(c, hello[:]); err != nil {
					return
				}
				_, _ = c.Write(data)
				_ = c.(*net.TCPConn).CloseWrite()
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	tb.Cleanup(func() { ln.Close() })
	return fp
}

// dial plays rank 1: it dials addr and speaks data.
func (fp *fakePeer) dial(addr string, data []byte) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	tc := c.(*net.TCPConn)
	defer tc.Close()
	defer tc.SetLinger(0)
	_, _ = tc.Write(data)
	var b [4096]byte
	for {
		tc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := tc.Read(b[:]); err != nil {
			return
		}
	}
}

// exchange runs one exchange of FuzzPeerBytes: the real rank's error.
func (fp *fakePeer) exchange(t *testing.T, data []byte, call uint8, dialer bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	// A connection that is no ring peer is refused, and Connect waits on
	// for the real one until its deadline: keep that short.
	cctx, ccancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer ccancel()
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rank, addrs := 0, []string{ln.Addr(), "127.0.0.1:1"}
	if dialer {
		fp.mu.Lock()
		fp.data = data
		fp.mu.Unlock()
		rank, addrs = 1, []string{fp.ln.Addr().String(), ln.Addr()}
	} else {
		go fp.dial(ln.Addr(), data)
	}
	comm, err := Connect(cctx, ln, rank, addrs, Options{PeerTimeout: time.Second, SmallMessageBytes: 64, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer comm.Close()
	buf := make([]float32, 64)
	switch call % 6 {
	case 0:
		err = comm.AllReduce(ctx, nccl.Float32s(buf[:4]))
	case 1:
		err = comm.AllReduce(ctx, nccl.Float32s(buf)) // the ring path
	case 2:
		err = comm.Broadcast(ctx, nccl.Float32s(buf[:4]), 1-rank)
	case 3:
		err = comm.AllGather(ctx, nccl.Float32s(buf[:4]), nccl.Float32s(buf[:8]))
	case 4:
		err = comm.Recv(ctx, nccl.Float32s(buf[:4]), 1-rank)
	case 5:
		err = comm.Barrier(ctx)
	}
	if err != nil {
		return fmt.Errorf("call 1: %w", err)
	}
	// A second call sees whatever the peer sent after the first.
	if err := comm.AllReduce(ctx, nccl.Float32s(buf[:4])); err != nil {
		return fmt.Errorf("call 2: %w", err)
	}
	return nil
}

// The harness means something: a peer sending exactly one well-formed
// call gets the real rank through its handshake and that call, and the
// second call fails because the peer has nothing more to say.
func TestPeerBytesHarness(t *testing.T) {
	fp := newFakePeer(t)
	for _, dialer := range []bool{false, true} {
		from := 1
		if dialer {
			from = 0
		}
		data := ringFrames(from, header{kind: nccl.KindAllReduce, dtype: nccl.F32, alg: algDoubling, count: 4}, make([]byte, 16))
		// The first call's data read whole, the second call finds the
		// peer gone (a truncated first call fails itself instead).
		if err := fp.exchange(t, data, 0, dialer); !errors.Is(err, nccl.ErrPeerLost) || !strings.HasPrefix(err.Error(), "call 2:") {
			t.Fatalf("after one good call (peer dials: %v): %v, want the second call to find the peer gone", !dialer, err)
		}
		if err := fp.exchange(t, data[:len(data)-1], 0, dialer); !errors.Is(err, nccl.ErrPeerLost) || !strings.HasPrefix(err.Error(), "call 1:") {
			t.Fatalf("a call cut short (peer dials: %v): %v, want the call to find the peer gone", !dialer, err)
		}
	}
	bad := ringFrames(1, header{kind: nccl.KindAllReduce, dtype: nccl.F32, alg: algDoubling, count: 4}, make([]byte, 16))
	bad[len(greeting(1))] ^= 0xff // the header's magic
	if err := fp.exchange(t, bad, 0, false); !errors.Is(err, nccl.ErrMismatch) || !strings.Contains(err.Error(), "corrupt header") {
		t.Fatalf("a corrupt header: %v, want ErrMismatch naming it", err)
	}
}
