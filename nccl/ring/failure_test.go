package ring

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemllm/tandem/nccl"
)

func f32(n int) nccl.Buffer  { return nccl.Float32s(make([]float32, n)) }
func bf16(n int) nccl.Buffer { return nccl.BFloat16s(make([]uint16, n)) }

func TestMismatchReportedOnEveryRank(t *testing.T) {
	t.Cleanup(func() { leakCheck(t) }) // registered first: runs after every Close
	bg := context.Background()
	tests := []struct {
		name string
		n    int
		opts func(r int) Options
		call func(r int, c *Comm) error
		want []string // every rank's error contains each
	}{
		{"sizes", 3, nil, func(r int, c *Comm) error {
			if r == 1 {
				return c.AllReduce(bg, f32(4096))
			}
			return c.AllReduce(bg, f32(1024))
		}, []string{"rank 1 called allreduce of 4096 f32", "rank 0 called allreduce of 1024 f32"}},
		{"dtypes", 3, nil, func(r int, c *Comm) error {
			if r == 2 {
				return c.AllReduce(bg, bf16(10))
			}
			return c.AllReduce(bg, f32(10))
		}, []string{"rank 2 called allreduce of 10 bf16", "rank 0 called allreduce of 10 f32"}},
		// Recursive doubling relays the headers: a folded rank's and a
		// core's mismatch reach every rank in the same words.
		{"sizes of 5", 5, nil, func(r int, c *Comm) error {
			if r == 4 {
				return c.AllReduce(bg, f32(100))
			}
			return c.AllReduce(bg, f32(99))
		}, []string{"rank 4 called allreduce of 100 f32 (doubling)", "rank 0 called allreduce of 99 f32 (doubling)"}},
		{"dtypes of 8", 8, nil, func(r int, c *Comm) error {
			if r == 5 {
				return c.AllReduce(bg, bf16(4096))
			}
			return c.AllReduce(bg, f32(4096))
		}, []string{"rank 5 called allreduce of 4096 bf16", "rank 0 called allreduce of 4096 f32"}},
		{"kinds", 3, nil, func(r int, c *Comm) error {
			if r == 0 {
				return c.Barrier(bg)
			}
			return c.Broadcast(bg, f32(4), 0)
		}, []string{"rank 1 called broadcast of 4 f32 from root 0", "rank 0 called barrier"}},
		{"roots", 2, nil, func(r int, c *Comm) error { return c.Broadcast(bg, f32(4), r) },
			[]string{"rank 1 called broadcast of 4 f32 from root 1", "rank 0 called broadcast of 4 f32 from root 0"}},
		{"small and large", 2, nil, func(r int, c *Comm) error {
			if r == 1 {
				return c.AllReduce(bg, f32(1<<20))
			}
			return c.AllReduce(bg, f32(16))
		}, []string{"rank 1 called allreduce of 1048576 f32 (ring)", "rank 0 called allreduce of 16 f32 (doubling)"}},
		{"thresholds", 2, func(r int) Options { return Options{SmallMessageBytes: 1 << (10 + 10*r)} },
			func(r int, c *Comm) error { return c.AllReduce(bg, f32(4096)) },
			[]string{"rank 1 called allreduce of 4096 f32 (doubling)", "rank 0 called allreduce of 4096 f32 (ring)"}},
		{"send and recv sizes", 2, nil, func(r int, c *Comm) error {
			if r == 0 {
				return c.Send(bg, f32(8), 1)
			}
			return c.Recv(bg, f32(4), 0)
		}, []string{"called send of 8 f32", "called recv of 4 f32"}},
		{"two large sends", 2, nil, func(r int, c *Comm) error { return c.Send(bg, f32(1<<20), 1-r) },
			[]string{"called send of 1048576 f32 with rank"}},
		{"two recvs", 2, nil, func(r int, c *Comm) error { return c.Recv(bg, f32(3), 1-r) },
			[]string{"called recv of 3 f32 with rank"}},
		{"send and allreduce", 2, nil, func(r int, c *Comm) error {
			if r == 0 {
				return c.Send(bg, f32(8), 1)
			}
			return c.AllReduce(bg, f32(8))
		}, []string{"called allreduce of 8 f32", "called send of 8 f32"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			comms := newGroup(t, tt.n, tt.opts)
			errs := onAll(tt.n, func(r int) error { return tt.call(r, comms[r]) })
			for r, err := range errs {
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
			// The communicator stays unusable, and says why.
			if err := comms[0].Barrier(bg); !errors.Is(err, nccl.ErrClosed) || !errors.Is(err, nccl.ErrMismatch) {
				t.Errorf("next call on a broken communicator: %v, want ErrClosed wrapping the mismatch", err)
			}
		})
	}
}

// Ranks of a group of 4 whose SmallMessageBytes differ split an
// allreduce between recursive doubling and the ring. Ranks 0 and 2 read
// the ring rank's header (rank 0 from it, rank 2 relayed by rank 0) and
// report the mismatch; rank 3, whose partner at its second step is the
// ring rank, gets one header where it waits for two, and the ring rank
// waits for headers that doubling never sends it: both see the others'
// abort. Nobody hangs.
func TestThresholdsDisagree(t *testing.T) {
	t.Cleanup(func() { leakCheck(t) }) // registered first: runs after every Close
	comms := newGroup(t, 4, func(r int) Options {
		if r == 1 {
			return Options{SmallMessageBytes: 1 << 10}
		}
		return Options{}
	})
	errs := onAll(4, func(r int) error { return comms[r].AllReduce(context.Background(), f32(1024)) })
	for r, want := range []error{nccl.ErrMismatch, nccl.ErrPeerLost, nccl.ErrMismatch, nccl.ErrPeerLost} {
		if !errors.Is(errs[r], want) {
			t.Errorf("rank %d: %v, want %v", r, errs[r], want)
		}
		if want == nccl.ErrMismatch && !strings.Contains(errs[r].Error(), "rank 1 called allreduce of 1024 f32 (ring)") {
			t.Errorf("rank %d: %q does not name the ring rank's call", r, errs[r])
		}
	}
}

func TestPeerLost(t *testing.T) {
	t.Cleanup(func() { leakCheck(t) }) // registered first: runs after every Close
	tests := []struct {
		name  string
		n     int
		count int // f32 elements of the allreduce the others are in
		shm   bool
	}{
		{"small", 4, 1024, false},
		{"small, a folded rank leaves", 5, 1024, false},
		{"small of 8", 8, 4096, false},
		{"ring", 4, 1 << 20, false},
		{"pair", 2, 4 << 20, false},
		{"shm small", 4, 1024, true},
		{"shm small of 8", 8, 4096, true},
		{"shm large", 4, 1 << 20, true},
		{"shm pair", 2, 4 << 20, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			comms := group(t, tt.n, tt.shm)
			last := tt.n - 1
			start := time.Now()
			errs := onAll(tt.n, func(r int) error {
				if r == last {
					return comms[r].Close() // leaves while the others are in the call
				}
				return comms[r].AllReduce(context.Background(), f32(tt.count))
			})
			took := time.Since(start)
			for r := range last {
				if !errors.Is(errs[r], nccl.ErrPeerLost) {
					t.Errorf("rank %d: %v, want ErrPeerLost", r, errs[r])
				}
				// Later calls fail at once, naming the cause.
				if err := comms[r].Barrier(context.Background()); !errors.Is(err, nccl.ErrPeerLost) {
					t.Errorf("rank %d, next call: %v, want ErrPeerLost", r, err)
				}
			}
			if took > 2*time.Second {
				t.Errorf("ranks took %v to notice", took)
			}
		})
	}
}

func TestContext(t *testing.T) {
	t.Cleanup(func() { leakCheck(t) }) // registered first: runs after every Close
	tests := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 50*time.Millisecond)
		}, context.DeadlineExceeded},
		{"cancel", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			return ctx, cancel
		}, context.Canceled},
	}
	// The ring, and recursive doubling where rank 0 waits for the rank
	// folded into it.
	for _, tt := range tests {
		for _, shm := range []bool{false, true} {
			for _, count := range []int{1 << 20, 1000} {
				t.Run(fmt.Sprintf("%s/%s/%d", transport(shm), tt.name, count), func(t *testing.T) {
					contextEnds(t, tt.ctx, tt.want, count, shm)
				})
			}
		}
	}
	t.Run("completed calls keep the group", func(t *testing.T) {
		comms := newGroup(t, 2, nil)
		for range 20 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			noErrors(t, onAll(2, func(r int) error { return comms[r].AllReduce(ctx, f32(100)) }))
			cancel()
		}
		noErrors(t, onAll(2, func(r int) error { return comms[r].AllReduce(context.Background(), f32(1<<18)) }))
	})
}

// contextEnds: rank 0 of 3 calls an allreduce of count elements alone, so
// its ctx ends inside the call; the others come late and see it gone.
func contextEnds(t *testing.T, mkCtx func() (context.Context, context.CancelFunc), want error, count int, shm bool) {
	comms := group(t, 3, shm)
	ctx, cancel := mkCtx()
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- comms[0].AllReduce(ctx, f32(count)) }()
	if want == context.Canceled {
		cancel()
	}
	select {
	case err := <-done:
		if !errors.Is(err, want) {
			t.Fatalf("rank 0: %v, want %v", err, want)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("rank 0 ignored its context")
	}
	errs := onAll(3, func(r int) error {
		if r == 0 {
			return nil
		}
		return comms[r].AllReduce(context.Background(), f32(count))
	})
	for r := 1; r < 3; r++ {
		if !errors.Is(errs[r], nccl.ErrPeerLost) {
			t.Errorf("rank %d: %v, want ErrPeerLost", r, errs[r])
		}
	}
}

func TestCloseUnblocksCall(t *testing.T) {
	t.Cleanup(func() { leakCheck(t) }) // registered first: runs after every Close
	comms := newGroup(t, 2, nil)
	done := make(chan error, 1)
	go func() { done <- comms[0].Recv(context.Background(), f32(10), 1) }()
	comms[0].Close()
	select {
	case err := <-done:
		if !errors.Is(err, nccl.ErrClosed) {
			t.Fatalf("blocked call after Close: %v, want ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not unblock a pending call")
	}
	if err := comms[1].Barrier(context.Background()); !errors.Is(err, nccl.ErrPeerLost) {
		t.Fatalf("peer of a closed rank: %v, want ErrPeerLost", err)
	}
}

// connectAll runs Connect for the given ranks (rank, addresses, options)
// on their listeners and returns the errors and how long it took.
func connectAll(t *testing.T, ctx context.Context, lns []*Listener, ranks []int, addrs [][]string, opts []Options) ([]error, time.Duration) {
	t.Helper()
	start := time.Now()
	comms := make([]*Comm, len(ranks))
	var mu sync.Mutex
	errs := onAll(len(ranks), func(i int) error {
		c, err := Connect(ctx, lns[i], ranks[i], addrs[i], opts[i])
		mu.Lock()
		comms[i] = c
		mu.Unlock()
		return err
	})
	for _, c := range comms {
		if c != nil {
			c.Close()
		}
	}
	return errs, time.Since(start)
}

func listeners(t *testing.T, n int) ([]*Listener, []string) {
	lns := make([]*Listener, n)
	addrs := make([]string, n)
	for i := range lns {
		ln, err := Listen("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		lns[i], addrs[i] = ln, ln.Addr()
	}
	return lns, addrs
}

func TestConnectErrors(t *testing.T) {
	t.Cleanup(func() { leakCheck(t) }) // registered first: runs after every Close
	tests := []struct {
		name string
		// build returns the ranks each listener plays, their address
		// lists and options.
		build   func(addrs []string) ([]int, [][]string, []Options)
		nLn     int
		timeout time.Duration
		want    [][]string // per Connect, substrings of its error (nil: no error)
	}{
		{"rank never starts", func(a []string) ([]int, [][]string, []Options) {
			all := []string{a[0], a[1], a[2]} // nobody runs rank 1
			return []int{0, 2}, [][]string{all, all}, []Options{{}, {}}
		}, 3, 300 * time.Millisecond, [][]string{{"no connection with rank(s) 1"}, {"no connection with rank(s) 1"}}},
		{"wrong group size", func(a []string) ([]int, [][]string, []Options) {
			return []int{0, 1}, [][]string{a[:2], {a[0], a[1], a[2]}}, []Options{{}, {}}
		}, 3, 5 * time.Second, [][]string{{"rank 1 says the group has 3 ranks, rank 0 says 2"}, {"rank 0 refused rank 1", "says the group has 3"}}},
		{"duplicate rank", func(a []string) ([]int, [][]string, []Options) {
			all := a[:3]
			return []int{0, 1, 1}, [][]string{all, all, all}, []Options{{}, {}, {}}
		}, 3, 500 * time.Millisecond, [][]string{{"rank 1 connected twice"}, {"no connection with rank(s)"}, {"no connection with rank(s)"}}},
		{"other group", func(a []string) ([]int, [][]string, []Options) {
			return []int{0, 1}, [][]string{a[:2], a[:2]}, []Options{{Group: "a"}, {Group: "b"}}
		}, 2, 300 * time.Millisecond, [][]string{{"no connection with rank(s) 1", "another group"}, {"rank 0 refused rank 1: peer belongs to another group"}}},
		{"addresses out of order", func(a []string) ([]int, [][]string, []Options) {
			swapped := []string{a[1], a[0]}
			return []int{0, 1}, [][]string{a[:2], swapped}, []Options{{}, {}}
		}, 2, 300 * time.Millisecond, [][]string{{"no connection with rank(s) 1"}, {"no connection with rank(s) 0"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lns, addrs := listeners(t, tt.nLn)
			ranks, lists, opts := tt.build(addrs)
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			errs, took := connectAll(t, ctx, lns[:len(ranks)], ranks, lists, opts)
			if took > tt.timeout+time.Second {
				t.Errorf("took %v with a deadline of %v", took, tt.timeout)
			}
			for i, err := range errs {
				if err == nil {
					t.Errorf("Connect %d (rank %d) formed a group", i, ranks[i])
					continue
				}
				for _, w := range tt.want[i] {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("Connect %d (rank %d): %q does not say %q", i, ranks[i], err, w)
					}
				}
			}
		})
	}
}

// A client that is not a peer (a port scanner, a health check) is refused
// without spoiling the group.
func TestConnectIgnoresStrangers(t *testing.T) {
	t.Cleanup(func() { leakCheck(t) }) // registered first: runs after every Close
	lns, addrs := listeners(t, 2)
	stranger, err := net.Dial("tcp", addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	stranger.Write([]byte("GET / HTTP/1.0\r\n\r\nxxxxxxxxxxxxxxxxxx"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	errs, _ := connectAll(t, ctx, lns, []int{0, 1}, [][]string{addrs, addrs}, []Options{{}, {}})
	noErrors(t, errs)
}
