package ring

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tandemllm/tandem/nccl"
)

// segments counts this process's mappings of ring segments.
func segments(t *testing.T) int {
	t.Helper()
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Skip("no /proc/self/maps:", err)
	}
	return strings.Count(string(maps), "memfd:tandem-ring")
}

// Every rank maps the segment while the group lives, and nothing is left
// once each has closed, whether or not a call was under way.
func TestShmReleased(t *testing.T) {
	if !shmSupported {
		t.Skip("no shared memory on this OS")
	}
	t.Cleanup(func() { leakCheck(t) })
	before := segments(t)
	comms := newShmGroup(t, 3)
	if got := segments(t) - before; got != 3 {
		t.Fatalf("%d mappings of the segment for 3 ranks, want 3", got)
	}
	noErrors(t, onAll(3, func(r int) error { return comms[r].AllReduce(context.Background(), f32(1<<20)) }))
	// Rank 0 closed from another goroutine while it waits in a barrier.
	done := make(chan error, 1)
	go func() { done <- comms[0].AllReduce(context.Background(), f32(1000)) }()
	if err := comms[0].Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, nccl.ErrClosed) {
			t.Fatalf("call on a closed rank: %v, want ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not end the call waiting in a barrier")
	}
	for r := 1; r < 3; r++ {
		if err := comms[r].AllReduce(context.Background(), f32(10)); !errors.Is(err, nccl.ErrPeerLost) {
			t.Errorf("rank %d after rank 0 closed: %v, want ErrPeerLost", r, err)
		}
		comms[r].Close()
	}
	if got := segments(t) - before; got != 0 {
		t.Fatalf("%d mappings of the segment left after every rank closed", got)
	}
}

// A rank that will not share memory makes the whole group keep to TCP,
// and its allreduces still agree.
func TestShmDeclined(t *testing.T) {
	t.Cleanup(func() { leakCheck(t) })
	for _, refuser := range []int{0, 2} {
		comms := formGroup(t, 3, func(r int) Options { return Options{DisableSharedMemory: r == refuser} }, true)
		for r, c := range comms {
			if c.SharedMemory() {
				t.Errorf("rank %d shares memory though rank %d declined", r, refuser)
			}
		}
		checkAllReduce(t, comms, nccl.F32, 1000)
		checkAllReduce(t, comms, nccl.F32, 1<<18)
	}
}

// Mismatched allreduces through the segment are reported by every rank
// in the same words; an allreduce against another collective fails on
// every rank instead of hanging.
func TestShmMismatch(t *testing.T) {
	if !shmSupported {
		t.Skip("no shared memory on this OS")
	}
	t.Cleanup(func() { leakCheck(t) })
	bg := context.Background()
	tests := []struct {
		name string
		n    int
		call func(r int, c *Comm) error
		want []string // every rank's error contains each; none: any error
	}{
		{"sizes", 3, func(r int, c *Comm) error {
			if r == 1 {
				return c.AllReduce(bg, f32(1<<20))
			}
			return c.AllReduce(bg, f32(1024))
		}, []string{"rank 1 called allreduce of 1048576 f32 (shared memory)", "rank 0 called allreduce of 1024 f32 (shared memory)"}},
		{"dtypes of 8", 8, func(r int, c *Comm) error {
			if r == 5 {
				return c.AllReduce(bg, bf16(4096))
			}
			return c.AllReduce(bg, f32(4096))
		}, []string{"rank 5 called allreduce of 4096 bf16", "rank 0 called allreduce of 4096 f32"}},
		{"allreduce and barrier", 3, func(r int, c *Comm) error {
			if r == 2 {
				return c.Barrier(bg)
			}
			return c.AllReduce(bg, f32(64))
		}, nil},
		{"allreduce and send", 2, func(r int, c *Comm) error {
			if r == 0 {
				return c.Send(bg, f32(8), 1)
			}
			return c.AllReduce(bg, f32(8))
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			comms := newShmGroup(t, tt.n)
			errs := onAll(tt.n, func(r int) error { return tt.call(r, comms[r]) })
			for r, err := range errs {
				if tt.want == nil {
					if !errors.Is(err, nccl.ErrMismatch) && !errors.Is(err, nccl.ErrPeerLost) {
						t.Errorf("rank %d: %v; want ErrMismatch or ErrPeerLost", r, err)
					}
					continue
				}
				if !errors.Is(err, nccl.ErrMismatch) {
					t.Errorf("rank %d: %v; want ErrMismatch", r, err)
					continue
				}
				for _, w := range tt.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("rank %d: %q does not say %q", r, err, w)
					}
				}
			}
			if err := comms[0].AllReduce(bg, f32(4)); !errors.Is(err, nccl.ErrClosed) {
				t.Errorf("next call on a broken communicator: %v, want ErrClosed", err)
			}
		})
	}
}

// A rank that finished a call and closes at once does not fail the peers
// still finishing the same call: they fail only at a barrier it never
// passed.
func TestShmCloseAfterCall(t *testing.T) {
	if !shmSupported {
		t.Skip("no shared memory on this OS")
	}
	t.Cleanup(func() { leakCheck(t) })
	for i := range 30 {
		comms := newShmGroup(t, 3)
		count := 1000 // one barrier
		if i%2 == 1 {
			count = 1 << 18 // two a slot, two slots
		}
		errs := onAll(3, func(r int) error {
			err := comms[r].AllReduce(context.Background(), f32(count))
			if r == 0 {
				comms[r].Close()
			}
			return err
		})
		noErrors(t, errs)
		for r := 1; r < 3; r++ {
			if err := comms[r].AllReduce(context.Background(), f32(count)); !errors.Is(err, nccl.ErrPeerLost) {
				t.Fatalf("round %d, rank %d, the call after rank 0 closed: %v, want ErrPeerLost", i, r, err)
			}
		}
	}
}

// A rank 0 that says the group shares memory it never offered, or sends
// a corrupt offer, fails the handshake with a mismatch, not a panic.
func TestShmHandshakeRefusesNonsense(t *testing.T) {
	t.Cleanup(func() { leakCheck(t) })
	fp := newFakePeer(t)
	yes := greeting(0)
	yes[len(yes)-1] = shmYes
	corrupt := greeting(0)
	corrupt[len(corrupt)-1-offerBytes] ^= 0xff // the offer's magic
	for name, data := range map[string][]byte{"verdict": yes, "offer": corrupt} {
		if err := fp.exchange(t, data, 0, true); !errors.Is(err, nccl.ErrMismatch) || !strings.Contains(err.Error(), "shared-memory") {
			t.Errorf("%s: %v, want a shared-memory handshake mismatch", name, err)
		}
	}
}

// A peer that stalls in the shared-memory handshake cannot hold Connect
// past a cancellation (ctx without a deadline).
func TestShmHandshakeCancel(t *testing.T) {
	t.Cleanup(func() { leakCheck(t) })
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stalled := make(chan net.Conn, 1)
	go func() {
		c, err := net.Dial("tcp", ln.Addr())
		if err != nil {
			cancel()
			return
		}
		stalled <- c
		c.Write(greeting(1)[:helloBytes])
		// Rank 0's status, empty reason and offer: it now waits for an
		// answer that never comes.
		io.ReadFull(c, make([]byte, 3+offerBytes))
		cancel()
	}()
	done := make(chan error, 1)
	go func() {
		c, err := Connect(ctx, ln, 0, []string{ln.Addr(), "127.0.0.1:1"}, Options{Logger: slog.New(slog.DiscardHandler)})
		if c != nil {
			c.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Connect: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Connect ignored its cancelled ctx during the shared-memory handshake")
	}
	(<-stalled).Close()
}

// Over mutual TLS, a rank that closes while the others wait in a barrier
// is a lost peer, not a mismatch, though its close_notify alert reaches
// them before its FIN.
func TestShmTLSPeerClosed(t *testing.T) {
	if !shmSupported {
		t.Skip("no shared memory on this OS")
	}
	t.Cleanup(func() { leakCheck(t) })
	dir := newCA(t)
	names := []string{"a", "b", "c"}
	for round := range 5 {
		comms := formGroup(t, 3, func(r int) Options { return tlsOptions(t, dir, names[r]) }, true)
		if !comms[0].SharedMemory() {
			t.Fatal("a TLS group on one host does not share memory")
		}
		checkAllReduce(t, comms, nccl.F32, 1000)
		errs := onAll(3, func(r int) error {
			if r == 2 {
				return comms[r].Close()
			}
			return comms[r].AllReduce(context.Background(), f32(1000))
		})
		for r := range 2 {
			if !errors.Is(errs[r], nccl.ErrPeerLost) {
				t.Fatalf("round %d, rank %d: %v, want ErrPeerLost", round, r, errs[r])
			}
		}
	}
}
