package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/engine"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// The prefix-caching tests: requests that share a prompt prefix, through
// clusters of real worker processes.

// prefixTol bounds the difference of log-probabilities between a request
// served from a cached prefix (by a TP group) and the same request
// computed from scratch by one engine: the same fp32 arithmetic in
// another order (chunks, TP partial sums).
const prefixTol = 2e-3

// sharedPrompts are prompts of one 80-token prefix (5 blocks of 16) and
// suffixes of their own.
func sharedPrompts(seed int, suffixes ...int) [][]int32 {
	prefix := make([]int32, 80)
	for i := range prefix {
		prefix[i] = int32((seed*7907 + i*131 + 17) % 50000)
	}
	var out [][]int32
	for j, n := range suffixes {
		p := slices.Clone(prefix)
		for i := range n {
			p = append(p, int32((seed*31+j*1009+i*53+5)%50000))
		}
		out = append(out, p)
	}
	return out
}

// scored is a request's tokens and their log-probabilities.
type scored struct {
	tokens []int32
	lps    []*tandemv1.TokenLogprobs
}

func logprobParams(n int) *tandemv1.SamplingParams {
	return &tandemv1.SamplingParams{MaxTokens: int32(n), IgnoreEos: true, Logprobs: true, TopLogprobs: 5}
}

func (tc *testCluster) generateScored(t *testing.T, prompt []int32, n int) scored {
	t.Helper()
	stream, err := tc.client.Generate(t.Context(), &tandemv1.GenerateRequest{
		Prompt: &tandemv1.GenerateRequest_TokenIds{TokenIds: &tandemv1.TokenIds{Ids: prompt}}, Sampling: logprobParams(n),
	})
	if err != nil {
		t.Fatal(err)
	}
	var s scored
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return s
		}
		if err != nil {
			t.Fatal(err)
		}
		s.tokens = append(s.tokens, msg.GetTokenIds()...)
		s.lps = append(s.lps, msg.GetLogprobs()...)
	}
}

// fromScratch is what one in-process engine with no prefix cache gives for
// each prompt alone: the reference.
func fromScratch(t *testing.T, dir string, prompts [][]int32, n int) []scored {
	t.Helper()
	e := localEngine(t, dir, engine.Options{KVCacheBytes: 16 << 20, DisablePrefixCaching: true})
	out := make([]scored, len(prompts))
	for i, p := range prompts {
		err := e.Add(engine.Request{ID: fmt.Sprint(i), Prompt: p, Params: engine.SamplingParams{MaxTokens: n, IgnoreEOS: true, Logprobs: true, TopLogprobs: 5}})
		if err != nil {
			t.Fatal(err)
		}
		for e.HasWork() {
			outs, err := e.Step(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range outs {
				lp := &tandemv1.TokenLogprobs{Chosen: &tandemv1.Logprob{TokenId: o.Logprob.Token, Logprob: o.Logprob.Logprob}}
				for _, tl := range o.TopLogprobs {
					lp.Top = append(lp.Top, &tandemv1.Logprob{TokenId: tl.Token, Logprob: tl.Logprob})
				}
				out[i].tokens = append(out[i].tokens, o.Token)
				out[i].lps = append(out[i].lps, lp)
			}
		}
	}
	return out
}

// sameScored compares tokens exactly and log-probabilities (chosen and
// top 5) within prefixTol.
func sameScored(t *testing.T, label string, got, want scored) {
	t.Helper()
	if !slices.Equal(got.tokens, want.tokens) || len(got.lps) != len(want.lps) {
		t.Fatalf("%s: tokens %v (%d logprobs), want %v", label, got.tokens, len(got.lps), want.tokens)
	}
	worst := 0.0
	for i := range got.lps {
		g, w := got.lps[i], want.lps[i]
		pairs := [][2]float32{{g.GetChosen().GetLogprob(), w.GetChosen().GetLogprob()}}
		if len(g.GetTop()) != len(w.GetTop()) {
			t.Fatalf("%s token %d: %d top logprobs, want %d", label, i, len(g.GetTop()), len(w.GetTop()))
		}
		for j := range g.GetTop() {
			pairs = append(pairs, [2]float32{g.GetTop()[j].GetLogprob(), w.GetTop()[j].GetLogprob()})
		}
		for _, p := range pairs {
			worst = max(worst, float64(max(p[0]-p[1], p[1]-p[0])))
		}
	}
	if worst > prefixTol {
		t.Fatalf("%s: log-probabilities differ by %g > %g", label, worst, prefixTol)
	}
}

// indexBlocks scrapes the coordinator's /metrics for the blocks its
// prefix index holds for group.
func (tc *testCluster) indexBlocks(t *testing.T, group string) int {
	t.Helper()
	resp, err := http.Get("http://" + tc.coord.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "tandem:kv_index_blocks{") && strings.Contains(line, `group="`+group+`"`) {
			n, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(n)
		}
	}
	return 0
}

// waitIndexed waits until the coordinator's index holds at least blocks
// blocks of each group: its KV events have arrived.
func (tc *testCluster) waitIndexed(t *testing.T, blocks int, groups ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for _, g := range groups {
		for tc.indexBlocks(t, g) < blocks {
			if time.Now().After(deadline) {
				t.Fatalf("the coordinator's index holds %d blocks of %s, want %d", tc.indexBlocks(t, g), g, blocks)
			}
			<-tick.C
		}
	}
}

// TestClusterPrefixCacheMatchesScratch: requests served from a cached
// prefix, on unified and on disaggregated clusters at TP 1, 2 and 4, give
// the tokens and log-probabilities of the same prompts computed from
// scratch; the prefix is computed once on the prefill (or unified) group,
// and the decode group, which holds it from the first request, is sent
// only the rest.
func TestClusterPrefixCacheMatchesScratch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	const maxTokens = 6
	for _, mode := range []string{"unified", "disaggregated"} {
		for _, tp := range []int{1, 2, 4} {
			t.Run(fmt.Sprintf("%s/tp%d", mode, tp), func(t *testing.T) {
				specs := disaggregated(tp, tp)
				if mode == "unified" {
					specs = []groupSpec{{name: "unified-0", role: cluster.RoleUnified, tp: tp}}
				}
				tc := startCluster(t, "tiny", specs)
				prompts := sharedPrompts(tp, 9, 23, 40)
				want := fromScratch(t, tc.dir, prompts, maxTokens)
				computing := specs[0].name // the group that computes prompts
				sameScored(t, "first", tc.generateScored(t, prompts[0], maxTokens), want[0])
				groups := []string{computing}
				if mode == "disaggregated" {
					groups = append(groups, "decode-0")
				}
				tc.waitIndexed(t, 5, groups...)
				before := map[string]*tandemv1.StatsResponse{}
				for _, g := range groups {
					before[g] = tc.workerStats(t, g)
				}
				for i := 1; i < len(prompts); i++ {
					sameScored(t, fmt.Sprint("prompt ", i), tc.generateScored(t, prompts[i], maxTokens), want[i])
				}
				for _, g := range groups {
					hits := tc.workerStats(t, g).GetPrefixCacheHits() - before[g].GetPrefixCacheHits()
					if hits != 2*80 {
						t.Errorf("%s: %d prompt tokens from its prefix cache, want 160 (the prefix, twice)", g, hits)
					}
				}
			})
		}
	}
}

// TestClusterPrefixEvicted: with a KV cache of 32 blocks, a cached prefix
// is evicted by other prompts, and the request that wanted it is
// recomputed and still right.
func TestClusterPrefixEvicted(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	const maxTokens = 4
	tc := startClusterWith(t, "tiny", []groupSpec{{name: "unified-0", role: cluster.RoleUnified, tp: 1}},
		clusterOptions{workerArgs: []string{"--kv-cache-mb", "1"}}) // tiny: 32 KiB a block of 16 tokens
	victim := sharedPrompts(1, 120)[0] // 200 tokens: 12 full blocks
	others := [][]int32{sharedPrompts(2, 120)[0], sharedPrompts(3, 120)[0], sharedPrompts(4, 120)[0]}
	want := fromScratch(t, tc.dir, [][]int32{victim}, maxTokens)[0]
	sameScored(t, "first", tc.generateScored(t, victim, maxTokens), want)
	if st := tc.workerStats(t, "unified-0"); st.GetKvBlocksCached() < 12 || st.GetKvBlocksTotal() != 32 {
		t.Fatalf("%d of %d blocks cached after the first request, want 12 of 32", st.GetKvBlocksCached(), st.GetKvBlocksTotal())
	}
	for _, p := range others {
		tc.generateScored(t, p, maxTokens)
	}
	before := tc.workerStats(t, "unified-0").GetPrefixCacheHits()
	sameScored(t, "after eviction", tc.generateScored(t, victim, maxTokens), want)
	if hits := tc.workerStats(t, "unified-0").GetPrefixCacheHits() - before; hits >= 192 {
		t.Fatalf("%d tokens of the prefix hit the cache: it was not evicted, the test shows nothing", hits)
	}
}

// TestClusterCancelKeepsFinishedBlocks: a request cancelled while it
// decodes leaves the blocks it had filled cached, free for others to use
// (Worker.Stats: all blocks free, the full ones cached), and frees its
// partial one; the same prompt then starts from those blocks.
func TestClusterCancelKeepsFinishedBlocks(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	tc := startCluster(t, "tiny", []groupSpec{{name: "unified-0", role: cluster.RoleUnified, tp: 2}})
	prompt := sharedPrompts(5, 20)[0] // 100 tokens: 6 full blocks and a partial one
	ctx, cancel := context.WithCancel(t.Context())
	stream, err := tc.client.Generate(ctx, &tandemv1.GenerateRequest{
		Prompt: &tandemv1.GenerateRequest_TokenIds{TokenIds: &tandemv1.TokenIds{Ids: prompt}}, Sampling: greedyParams(1000),
	})
	if err != nil {
		t.Fatal(err)
	}
	for got := 0; got < 3; {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		got += len(msg.GetTokenIds())
	}
	cancel()
	// All blocks free (the partial one released, the full ones unused),
	// and the full ones cached: the prompt's 6, and any the tokens
	// generated before the abort landed filled.
	tc.waitAllBlocksFree(t, "unified-0")
	st := tc.workerStats(t, "unified-0")
	if st.GetKvBlocksCached() < 6 {
		t.Fatalf("%d blocks cached after the cancel, want at least the prompt's 6 full ones", st.GetKvBlocksCached())
	}
	before := st.GetPrefixCacheHits()
	if _, err := tc.generate(t.Context(), prompt, greedyParams(2)); err != nil {
		t.Fatal(err)
	}
	if hits := tc.workerStats(t, "unified-0").GetPrefixCacheHits() - before; hits != 96 {
		t.Fatalf("%d tokens of the cancelled request's blocks reused, want 96", hits)
	}
}

// TestClusterRoutesToPrefixHolder: two unified groups, each holding one of
// two prefixes; requests of each prefix go to the group that holds it (by
// the coordinator's own record of where each request ran), except while
// that group is at its load limit, when the other takes them.
func TestClusterRoutesToPrefixHolder(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	tc := startClusterWith(t, "tiny", []groupSpec{{name: "unified-0", role: cluster.RoleUnified, tp: 1}, {name: "unified-1", role: cluster.RoleUnified, tp: 1}},
		clusterOptions{coordinator: func(f *coordinatorFlags) { f.maxRequests = 2 }})
	p1, p2 := sharedPrompts(11, 5, 6, 7, 8, 9, 10), sharedPrompts(12, 5, 6, 7)
	// Each group computes one prefix, asked directly.
	for g, p := range map[string][]int32{"unified-0": p1[0], "unified-1": p2[0]} {
		stream, err := tc.leader(t, g).Generate(t.Context(), &tandemv1.WorkerGenerateRequest{RequestId: "warm-" + g, PromptTokenIds: p, Sampling: greedyParams(2)})
		if err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := stream.Recv(); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatal(err)
			}
		}
	}
	tc.waitIndexed(t, 5, "unified-0", "unified-1")
	ran := map[string]string{} // request id → the group that holds its prefix
	for i := 1; i < 3; i++ {
		for _, r := range []struct {
			prompt []int32
			holder string
		}{{p1[i], "unified-0"}, {p2[i], "unified-1"}} {
			g, err := tc.generate(t.Context(), r.prompt, greedyParams(3))
			if err != nil {
				t.Fatal(err)
			}
			ran[g.id] = r.holder
		}
	}
	got := tc.ranOn(t)
	for id, want := range ran {
		if got[id] != want {
			t.Errorf("request %s ran on %q, want %q, which holds its prefix", id, got[id], want)
		}
	}
	// Two long requests of the first prefix fill unified-0 up to its
	// limit of 2; the next one goes to unified-1.
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	long := make([]string, 2)
	for i := range long {
		stream, err := tc.client.Generate(ctx, &tandemv1.GenerateRequest{
			Prompt: &tandemv1.GenerateRequest_TokenIds{TokenIds: &tandemv1.TokenIds{Ids: p1[3+i]}}, Sampling: greedyParams(1500),
		})
		if err != nil {
			t.Fatal(err)
		}
		first, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		long[i] = first.GetRequestId()
		wg.Go(func() {
			for {
				if _, err := stream.Recv(); err != nil {
					return
				}
			}
		})
	}
	g, err := tc.generate(t.Context(), p1[5], greedyParams(3))
	if err != nil {
		t.Fatal(err)
	}
	got = tc.ranOn(t)
	for _, id := range long {
		if got[id] != "unified-0" {
			t.Errorf("long request %s ran on %q, want unified-0", id, got[id])
		}
	}
	if got[g.id] != "unified-1" {
		t.Errorf("with unified-0 at its limit, the request ran on %q, want unified-1", got[g.id])
	}
}

// ranOn asks the coordinator where each recent request ran.
func (tc *testCluster) ranOn(t *testing.T) map[string]string {
	t.Helper()
	resp, err := tandemv1.NewTracesClient(tc.conn).ListRequests(t.Context(), &tandemv1.ListRequestsRequest{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range resp.GetRequests() {
		out[r.GetRequestId()] = strings.Join(r.GetGroups(), ",")
	}
	return out
}
