package ring

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemllm/tandem/internal/half"
	"github.com/tandemllm/tandem/nccl"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	os.Exit(m.Run())
}

// leakCheck fails t if goroutines of this package outlive the test: the
// writers, Connect's dialers and acceptors, context watchers.
func leakCheck(t testing.TB) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		stacks := strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n")
		var leaked []string
		for _, s := range stacks[1:] { // the first is this goroutine
			if strings.Contains(s, "/nccl/ring.") && !strings.Contains(s, "testing.tRunner(") {
				leaked = append(leaked, s)
			}
		}
		if len(leaked) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d goroutines leaked:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
			return
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond) // polling for exits that have no event to wait on
	}
}

// newGroup connects n ranks on loopback over TCP, each in this process;
// opts(r) gives rank r's options.
func newGroup(t testing.TB, n int, opts func(r int) Options) []*Comm {
	t.Helper()
	return formGroup(t, n, opts, false)
}

// newShmGroup connects n ranks as newGroup does, but with the shared
// memory segment every rank of one host uses by default.
func newShmGroup(t testing.TB, n int) []*Comm {
	t.Helper()
	comms := formGroup(t, n, nil, true)
	for r, c := range comms {
		if n > 1 && !c.SharedMemory() {
			t.Fatalf("rank %d of %d on one host: no shared memory", r, n)
		}
	}
	return comms
}

func formGroup(t testing.TB, n int, opts func(r int) Options, shm bool) []*Comm {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lns := make([]*Listener, n)
	addrs := make([]string, n)
	for r := range n {
		ln, err := Listen("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[r], addrs[r] = ln, ln.Addr()
	}
	comms := make([]*Comm, n)
	errs := onAll(n, func(r int) error {
		var o Options
		if opts != nil {
			o = opts(r)
		}
		o.DisableSharedMemory = o.DisableSharedMemory || !shm
		var err error
		comms[r], err = Connect(ctx, lns[r], r, addrs, o)
		return err
	})
	t.Cleanup(func() {
		for _, c := range comms {
			if c != nil {
				c.Close()
			}
		}
	})
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	return comms
}

// group connects n ranks over shared memory or TCP.
func group(t testing.TB, n int, shm bool) []*Comm {
	t.Helper()
	if shm {
		return newShmGroup(t, n)
	}
	return newGroup(t, n, nil)
}

// onAll runs f for ranks 0..n-1 concurrently and returns their errors.
func onAll(n int, f func(r int) error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r := range n {
		wg.Go(func() { errs[r] = f(r) })
	}
	wg.Wait()
	return errs
}

func noErrors(t *testing.T, errs []error) {
	t.Helper()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
}

// inputs are each rank's values: multiples of 1/8 in [-12.5, 12.5), so
// every f32 sum of up to 8 ranks is exact and every input is exact in
// bf16.
func inputs(n, count int, seed uint64) [][]float32 {
	return randomInputs(n, count, rand.New(rand.NewPCG(seed, 7)), func(rng *rand.Rand) float32 {
		return float32(rng.IntN(200)-100) / 8
	})
}

// randomInputs are n ranks' count values drawn by value.
func randomInputs(n, count int, rng *rand.Rand, value func(*rand.Rand) float32) [][]float32 {
	out := make([][]float32, n)
	for r := range out {
		out[r] = make([]float32, count)
		for i := range out[r] {
			out[r][i] = value(rng)
		}
	}
	return out
}

func TestAllReduce(t *testing.T) {
	t.Cleanup(func() { leakCheck(t) }) // registered first: runs after every Close
	const big = 4 << 20                // elements: 16 MiB of f32, 8 MiB of bf16
	// Around the 64 KiB threshold (16384 f32, 32768 bf16), uneven
	// counts, fewer elements than ranks.
	// Shared memory: around its one-barrier limit (256 KiB over n
	// copies) and its 512 KiB slot (131072 f32, 262144 bf16).
	counts := []int{1, 3, 7, 1000, 16383, 16384, 16385, 32767, 32769, 100003, 131071, 131072, 131073, 262145}
	for _, shm := range []bool{false, true} {
		for n := 1; n <= 8; n++ {
			comms := group(t, n, shm)
			for _, dt := range []nccl.DType{nccl.F32, nccl.BF16} {
				cs := counts
				if n == 2 || n == 3 || n == 8 {
					cs = append(cs[:len(cs):len(cs)], big)
				}
				for _, count := range cs {
					t.Run(fmt.Sprintf("%s/n%d/%s/%d", transport(shm), n, dt, count), func(t *testing.T) {
						checkAllReduce(t, comms, dt, count)
					})
				}
			}
		}
	}
}

func transport(shm bool) string {
	if shm {
		return "shm"
	}
	return "tcp"
}

func checkAllReduce(t *testing.T, comms []*Comm, dt nccl.DType, count int) {
	n := len(comms)
	in := inputs(n, count, uint64(count*n))
	want := make([]float64, count)
	for r := range n {
		for i, v := range in[r] {
			want[i] += float64(v)
		}
	}
	got := make([][]float32, n)
	noErrors(t, onAll(n, func(r int) error {
		if dt == nccl.F32 {
			got[r] = append([]float32(nil), in[r]...)
			return comms[r].AllReduce(context.Background(), nccl.Float32s(got[r]))
		}
		buf := make([]uint16, count)
		for i, v := range in[r] {
			buf[i] = half.BF16FromFloat32(v)
		}
		err := comms[r].AllReduce(context.Background(), nccl.BFloat16s(buf))
		got[r] = make([]float32, count)
		for i, v := range buf {
			got[r][i] = half.BF16ToFloat32(v)
		}
		return err
	}))
	// f32 sums of these inputs are exact. bf16: the ring rounds each of
	// its n-1 partial sums to bf16 (unit roundoff 2^-8) and partial sums
	// stay below 12.5n, so the error is at most (n-1)·2^-8·12.5n — the
	// direct path rounds once and stays well inside.
	tol := 0.0
	if dt == nccl.BF16 {
		tol = float64(max(n-1, 1)) * 12.5 * float64(n) / 256
	}
	for i := range want {
		if d := math.Abs(float64(got[0][i]) - want[i]); d > tol {
			t.Fatalf("element %d: %v, want %v (tolerance %v)", i, got[0][i], want[i], tol)
		}
	}
	for r := 1; r < n; r++ {
		for i := range want {
			if math.Float32bits(got[r][i]) != math.Float32bits(got[0][i]) {
				t.Fatalf("rank %d element %d: %v, rank 0 has %v: ranks disagree", r, i, got[r][i], got[0][i])
			}
		}
	}
}

func TestAllGather(t *testing.T) {
	t.Cleanup(func() { leakCheck(t) }) // registered first: runs after every Close
	for _, n := range []int{1, 2, 3, 5, 8} {
		comms := newGroup(t, n, nil)
		for _, count := range []int{1, 7, 16385, 300001} {
			t.Run(fmt.Sprintf("n%d/%d", n, count), func(t *testing.T) {
				in := inputs(n, count, 3)
				got := make([][]float32, n)
				noErrors(t, onAll(n, func(r int) error {
					got[r] = make([]float32, n*count)
					return comms[r].AllGather(context.Background(), nccl.Float32s(in[r]), nccl.Float32s(got[r]))
				}))
				for r := range n {
					for src := range n {
						for i := range count {
							if got[r][src*count+i] != in[src][i] {
								t.Fatalf("rank %d: slot of rank %d, element %d: %v, want %v", r, src, i, got[r][src*count+i], in[src][i])
							}
						}
					}
				}
			})
		}
	}
}

func TestBroadcastFromEveryRoot(t *testing.T) {
	t.Cleanup(func() { leakCheck(t) }) // registered first: runs after every Close
	for _, n := range []int{1, 2, 3, 5, 8} {
		comms := newGroup(t, n, nil)
		for _, count := range []int{1, 7, 16385, 300001} {
			for root := range n {
				t.Run(fmt.Sprintf("n%d/%d/root%d", n, count, root), func(t *testing.T) {
					in := inputs(n, count, uint64(root))
					bufs := make([][]uint16, n)
					noErrors(t, onAll(n, func(r int) error {
						bufs[r] = make([]uint16, count)
						for i, v := range in[r] {
							bufs[r][i] = half.BF16FromFloat32(v)
						}
						return comms[r].Broadcast(context.Background(), nccl.BFloat16s(bufs[r]), root)
					}))
					for r := range n {
						for i := range count {
							if want := half.BF16FromFloat32(in[root][i]); bufs[r][i] != want {
								t.Fatalf("rank %d element %d: %#x, want %#x", r, i, bufs[r][i], want)
							}
						}
					}
				})
			}
		}
	}
}

func TestSendRecv(t *testing.T) {
	t.Cleanup(func() { leakCheck(t) }) // registered first: runs after every Close
	for _, n := range []int{2, 3, 4} {
		comms := newGroup(t, n, nil)
		for _, count := range []int{1, 7, 16385, 300001} {
			// Every ordered pair, one at a time, while the other ranks wait
			// at a barrier.
			for from := range n {
				for to := range n {
					if from == to {
						continue
					}
					t.Run(fmt.Sprintf("n%d/%d/%d-to-%d", n, count, from, to), func(t *testing.T) {
						in := inputs(1, count, uint64(from*n+to))[0]
						got := make([]float32, count)
						noErrors(t, onAll(n, func(r int) error {
							switch r {
							case from:
								return comms[r].Send(context.Background(), nccl.Float32s(in), to)
							case to:
								return comms[r].Recv(context.Background(), nccl.Float32s(got), from)
							}
							return nil
						}))
						for i := range count {
							if got[i] != in[i] {
								t.Fatalf("element %d: %v, want %v", i, got[i], in[i])
							}
						}
						noErrors(t, onAll(n, func(r int) error { return comms[r].Barrier(context.Background()) }))
					})
				}
			}
		}
	}
}

func TestBarrier(t *testing.T) {
	t.Cleanup(func() { leakCheck(t) }) // registered first: runs after every Close
	for _, n := range []int{1, 2, 5, 8} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			comms := newGroup(t, n, nil)
			// The last rank enters only after every other rank has gone in;
			// nobody may come out before it enters.
			var others sync.WaitGroup
			others.Add(n - 1)
			left := make([]time.Time, n)
			var enteredAt time.Time
			noErrors(t, onAll(n, func(r int) error {
				if r == n-1 {
					others.Wait()
					enteredAt = time.Now()
				} else {
					others.Done()
				}
				err := comms[r].Barrier(context.Background())
				left[r] = time.Now()
				return err
			}))
			for r, at := range left {
				if at.Before(enteredAt) {
					t.Errorf("rank %d left the barrier before rank %d entered", r, n-1)
				}
			}
		})
	}
}

type recorderFunc func(nccl.Call)

func (f recorderFunc) Record(c nccl.Call) { f(c) }

func TestRecorder(t *testing.T) {
	t.Cleanup(func() { leakCheck(t) }) // registered first: runs after every Close
	var mu sync.Mutex
	calls := map[int][]nccl.Call{}
	comms := newGroup(t, 2, func(r int) Options {
		return Options{Recorder: recorderFunc(func(c nccl.Call) { mu.Lock(); calls[r] = append(calls[r], c); mu.Unlock() })}
	})
	ctx := context.Background()
	before := time.Now()
	noErrors(t, onAll(2, func(r int) error {
		c := comms[r]
		if err := c.AllReduce(ctx, nccl.Float32s(make([]float32, 256))); err != nil {
			return err
		}
		if err := c.AllGather(ctx, nccl.Float32s(make([]float32, 3)), nccl.Float32s(make([]float32, 6))); err != nil {
			return err
		}
		if err := c.Broadcast(ctx, nccl.BFloat16s(make([]uint16, 5)), 1); err != nil {
			return err
		}
		if r == 0 {
			if err := c.Send(ctx, nccl.Float32s(make([]float32, 2)), 1); err != nil {
				return err
			}
		} else if err := c.Recv(ctx, nccl.Float32s(make([]float32, 2)), 0); err != nil {
			return err
		}
		return c.Barrier(ctx)
	}))
	want := []nccl.Call{
		{Kind: nccl.KindAllReduce, Bytes: 1024, Peer: -1},
		{Kind: nccl.KindAllGather, Bytes: 12, Peer: -1},
		{Kind: nccl.KindBroadcast, Bytes: 10, Peer: 1},
		{Kind: nccl.KindSend, Bytes: 8, Peer: 1},
		{Kind: nccl.KindBarrier, Bytes: 0, Peer: -1},
	}
	got := calls[0]
	if len(got) != len(want) {
		t.Fatalf("rank 0 recorded %d calls, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Kind != w.Kind || g.Bytes != w.Bytes || g.Peer != w.Peer || g.Start.Before(before) || g.Dur <= 0 {
			t.Errorf("call %d: %+v, want %+v with a start and a duration", i, g, w)
		}
	}
	if r := calls[1][3]; r.Kind != nccl.KindRecv || r.Peer != 0 {
		t.Errorf("rank 1's fourth call: %+v, want a recv from 0", r)
	}
}
