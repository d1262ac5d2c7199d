package engine

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/tandemllm/tandem/compute"
	"github.com/tandemllm/tandem/compute/cpu"
	"github.com/tandemllm/tandem/model/preset"
	"github.com/tandemllm/tandem/nccl/ring"
)

// tpTol bounds |Δlogprob| between TP-N and TP-1: the row-parallel sums
// are added in a different order.
const tpTol = 2e-3

// group is a TP group of ranks in this process: goroutines with their
// own backend, joined by the TCP ring on loopback. Rank 0's engine is
// returned to drive; the others follow.
type group struct {
	leader *Engine
	wait   func() error // after the leader's Shutdown: the followers' errors
	close  func()
}

func startGroup(tb testing.TB, ctx context.Context, name, dtype string, tp int, opts Options) *group {
	tb.Helper()
	dt, err := preset.ParseDType(dtype)
	if err != nil {
		tb.Fatal(err)
	}
	dir, err := preset.Ensure(ctx, name, preset.DefaultCacheDir(), preset.Options{DType: dt})
	if err != nil {
		tb.Fatal(err)
	}
	lns := make([]*ring.Listener, tp)
	addrs := make([]string, tp)
	for r := range tp {
		if lns[r], err = ring.Listen("127.0.0.1:0"); err != nil {
			tb.Fatal(err)
		}
		addrs[r] = lns[r].Addr()
	}
	engines := make([]*Engine, tp)
	var closers []func()
	var mu sync.Mutex
	errs := make([]error, tp)
	var wg sync.WaitGroup
	for r := range tp {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[r] = func() error {
				comm, err := ring.Connect(ctx, lns[r], r, addrs, ring.Options{})
				if err != nil {
					return err
				}
				be, err := cpu.New(cpu.Options{Threads: max(1, runtime.NumCPU()/tp)})
				if err != nil {
					comm.Close()
					return err
				}
				mu.Lock()
				closers = append(closers, func() { comm.Close(); be.Close() })
				mu.Unlock()
				m, err := Open(dir, be, Shard{TP: tp, Rank: r})
				if err != nil {
					return err
				}
				o := opts
				o.Comm = comm
				engines[r], err = New(m, o)
				return err
			}()
		}()
	}
	wg.Wait()
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	for r, err := range errs {
		if err != nil {
			closeAll()
			tb.Fatalf("rank %d: %v", r, err)
		}
	}
	followErrs := make(chan error, tp)
	for r := 1; r < tp; r++ {
		go func() {
			if err := engines[r].Follow(ctx); !errors.Is(err, ErrShutdown) {
				followErrs <- fmt.Errorf("rank %d: Follow = %w, want ErrShutdown", r, err)
				return
			}
			followErrs <- nil
		}()
	}
	wait := func() error {
		var all []error
		for r := 1; r < tp; r++ {
			all = append(all, <-followErrs)
		}
		return errors.Join(all...)
	}
	return &group{leader: engines[0], wait: wait, close: closeAll}
}

// runTP runs reqs on a TP-tp group and returns rank 0's results.
func runTP(t *testing.T, name string, tp int, reqs []Request) map[string]*result {
	t.Helper()
	res, _ := runTPWaves(t, name, tp, Options{}, [][]Request{reqs})
	return res
}

// runTPWaves runs each wave of requests on a TP-tp group once the wave
// before it has finished, and returns rank 0's results and prefix stats.
func runTPWaves(t *testing.T, name string, tp int, opts Options, waves [][]Request) (map[string]*result, PrefixStats) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts.MaxBatchTokens, opts.MaxSeqs, opts.KVCacheBytes = 64, 16, 16<<20
	g := startGroup(t, ctx, name, "f32", tp, opts)
	defer g.close()
	e := g.leader
	res := map[string]*result{}
	for _, reqs := range waves {
		for _, q := range reqs {
			if err := e.Add(q); err != nil {
				t.Fatal(err)
			}
		}
		for e.HasWork() {
			outs, err := e.Step(ctx)
			if err != nil {
				t.Fatal(err)
			}
			collect(res, outs)
		}
	}
	st := e.PrefixStats()
	if err := e.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.wait(); err != nil {
		t.Fatal(err)
	}
	return res, st
}

// TestTensorParallelPrefixCache: under TP 2 and 4 requests that start
// from a prefix cached by an earlier one (rank 0 decides, every rank
// follows its block tables) produce what TP 1 computes from scratch.
func TestTensorParallelPrefixCache(t *testing.T) {
	prefix := testPrompt(40, 50257, 9)
	waves := [][]Request{
		{{ID: "a", Prompt: withPrefix(prefix, 5, 50257, 1), Params: greedy(6)}},
		{{ID: "b", Prompt: withPrefix(prefix, 9, 50257, 2), Params: greedy(6)}, {ID: "c", Prompt: withPrefix(prefix, 3, 50257, 3), Params: greedy(6)}},
	}
	want, _ := runTPWaves(t, "gqa-tiny", 1, Options{DisablePrefixCaching: true}, waves)
	for _, tp := range []int{2, 4} {
		got, st := runTPWaves(t, "gqa-tiny", tp, Options{}, waves)
		if st.Hits != 2*32 {
			t.Errorf("TP-%d: %d prompt tokens hit the cache, want 64", tp, st.Hits)
		}
		for id := range want {
			sameResult(t, fmt.Sprintf("TP-%d %s", tp, id), got[id], want[id], tpTol)
		}
	}
}

// TestTensorParallelMatchesTP1: greedy tokens of TP 1, 2, 4 and 8 are
// identical and their logprobs within tpTol of TP-1, with and without KV
// head replication (gqa-tiny has 2 KV heads).
func TestTensorParallelMatchesTP1(t *testing.T) {
	for _, name := range []string{"tiny", "gqa-tiny"} {
		t.Run(name, func(t *testing.T) {
			var reqs []Request
			for i, n := range []int{5, 19, 40} {
				reqs = append(reqs, Request{ID: fmt.Sprint(i), Prompt: testPrompt(n, 50257, i), Params: greedy(8)})
			}
			want := runTP(t, name, 1, reqs)
			for _, tp := range []int{2, 4, 8} {
				got := runTP(t, name, tp, reqs)
				for _, r := range reqs {
					sameResult(t, fmt.Sprintf("TP-%d %s", tp, r.ID), got[r.ID], want[r.ID], tpTol)
				}
			}
		})
	}
}

func TestPlanRoundTrip(t *testing.T) {
	b := &batch{
		tokens: []int32{1, 2, 3}, positions: []int32{0, 1, 7}, slots: []int32{16, 17, 39},
		logitRows: []int32{1, 2},
	}
	b.seqs = append(b.seqs, seqOf(0, 2, 0, 1), seqOf(2, 1, 7, 2, 5))
	words := encodePlan(nil, b)
	var got batch
	if err := decodePlan(&got, words[:headerWords], words[headerWords:]); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(*b) {
		t.Fatalf("decoded %+v, want %+v", got, *b)
	}
	for cut := range len(words) - headerWords {
		var x batch
		if err := decodePlan(&x, words[:headerWords], words[headerWords:headerWords+cut]); err == nil {
			t.Fatalf("a plan cut to %d words decoded without error", cut)
		}
	}
}

func seqOf(row, n, pos int, blocks ...int32) compute.AttnSeq {
	return compute.AttnSeq{QRow: row, QLen: n, Pos: pos, Blocks: blocks}
}

// BenchmarkTPDecode times batch-1 decode of llama-160m at TP 1, 2 and 4
// (ranks as goroutines sharing this machine's cores, joined by the TCP
// ring) and reports the share of step time spent in collectives.
func BenchmarkTPDecode(b *testing.B) {
	for _, tp := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("llama-160m/f32/tp-%d", tp), func(b *testing.B) {
			ctx := context.Background()
			var coll, total time.Duration
			g := startGroup(b, ctx, "llama-160m", "f32", tp, Options{KVCacheBytes: 64 << 20, OnStep: func(r *StepRecord) {
				if r.PrefillTokens == 0 {
					coll += r.CollectiveTime
					total += r.Compute
				}
			}})
			defer g.close()
			e := g.leader
			const maxTokens = 256
			left := 0
			b.ResetTimer()
			for range b.N {
				if left == 0 {
					b.StopTimer()
					for id := range e.byID {
						_ = e.Abort(id)
					}
					if err := e.Add(Request{ID: fmt.Sprint(b.N, left, time.Now().UnixNano()), Prompt: testPrompt(16, 50257, 0), Params: SamplingParams{MaxTokens: maxTokens, IgnoreEOS: true}}); err != nil {
						b.Fatal(err)
					}
					if _, err := e.Step(ctx); err != nil {
						b.Fatal(err)
					}
					left = maxTokens - 1
					b.StartTimer()
				}
				if _, err := e.Step(ctx); err != nil {
					b.Fatal(err)
				}
				left--
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tok/s")
			if total > 0 {
				b.ReportMetric(100*coll.Seconds()/total.Seconds(), "%collective")
			}
			if err := e.Shutdown(ctx); err != nil {
				b.Fatal(err)
			}
			if err := g.wait(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// TestTensorParallelGPT2: GPT-2 (Conv1D weights transposed at load, its
// embedding tied to the output layer, each rank's head a view of its
// rows in the one copy) gives TP-1's greedy tokens at TP 2.
func TestTensorParallelGPT2(t *testing.T) {
	var reqs []Request
	for i, n := range []int{5, 19} {
		reqs = append(reqs, Request{ID: fmt.Sprint(i), Prompt: testPrompt(n, 50257, i), Params: greedy(4)})
	}
	want := runTP(t, "gpt2-124m", 1, reqs)
	got := runTP(t, "gpt2-124m", 2, reqs)
	for _, r := range reqs {
		sameResult(t, "TP-2 "+r.ID, got[r.ID], want[r.ID], tpTol)
	}
}
