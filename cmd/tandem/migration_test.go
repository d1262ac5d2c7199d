package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/engine"
	"github.com/tandemllm/tandem/model/tokenizer"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// Request migration, end to end: a group killed under its requests, the
// requests going on elsewhere with the text an uninterrupted run gives.

// localRun runs the prompts through one in-process engine with params:
// the uninterrupted reference.
func localRun(t *testing.T, dir string, prompts [][]int32, params engine.SamplingParams) [][]int32 {
	t.Helper()
	e := localEngine(t, dir, engine.Options{KVCacheBytes: 64 << 20})
	out := make([][]int32, len(prompts))
	for i, p := range prompts {
		if err := e.Add(engine.Request{ID: fmt.Sprint(i), Prompt: p, Params: params}); err != nil {
			t.Fatal(err)
		}
	}
	for e.HasWork() {
		outs, err := e.Step(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range outs {
			var i int
			fmt.Sscan(o.RequestID, &i)
			out[i] = append(out[i], o.Token)
		}
	}
	return out
}

// streamed is one request's stream as the client saw it.
type streamed struct {
	generated
	logprobs int
	err      error
}

// startStreams starts one Generate per prompt and returns their results
// (in prompt order, once all have ended) and a channel that gets a value
// as each stream passes after tokens.
func (tc *testCluster) startStreams(ctx context.Context, prompts [][]int32, sp func(i int) *tandemv1.SamplingParams, after int) (results func() []streamed, progressed <-chan struct{}) {
	out := make([]streamed, len(prompts))
	prog := make(chan struct{}, len(prompts))
	var wg sync.WaitGroup
	for i, p := range prompts {
		wg.Go(func() {
			r := &out[i]
			stream, err := tc.client.Generate(ctx, &tandemv1.GenerateRequest{
				Prompt: &tandemv1.GenerateRequest_TokenIds{TokenIds: &tandemv1.TokenIds{Ids: p}}, Sampling: sp(i),
			})
			if err != nil {
				r.err = err
				return
			}
			told := false
			for {
				msg, err := stream.Recv()
				if err != nil {
					if !errors.Is(err, io.EOF) {
						r.err = err
					}
					if !told {
						prog <- struct{}{}
					}
					return
				}
				if msg.GetRequestId() != "" {
					r.id = msg.GetRequestId()
				}
				r.tokens = append(r.tokens, msg.GetTokenIds()...)
				r.text += msg.GetText()
				r.logprobs += len(msg.GetLogprobs())
				if msg.GetFinishReason() != tandemv1.FinishReason_FINISH_REASON_UNSPECIFIED {
					r.finish, r.usage = msg.GetFinishReason(), msg.GetUsage()
				}
				if !told && len(r.tokens) > after {
					told = true
					prog <- struct{}{}
				}
			}
		})
	}
	return func() []streamed { wg.Wait(); return out }, prog
}

// waitProgress waits until n streams have passed their mark.
func waitProgress(t *testing.T, progressed <-chan struct{}, n int) {
	t.Helper()
	deadline := time.After(2 * time.Minute)
	for range n {
		select {
		case <-progressed:
		case <-deadline:
			t.Fatal("requests did not make progress")
		}
	}
}

// expected is how a stream should end: with tokens, their text and a
// finish reason.
type expected struct {
	tokens []int32
	text   string
	finish tandemv1.FinishReason
}

// expectAll: all of tokens (max_tokens reached) and their text, as the
// coordinator detokenizes.
func expectAll(tok *tokenizer.Tokenizer, tokens []int32) expected {
	return expected{tokens: tokens, text: streamText(tok, tokens), finish: tandemv1.FinishReason_FINISH_REASON_LENGTH}
}

// expectStop: tokens up to the one completing stop, the text before it.
func expectStop(tok *tokenizer.Tokenizer, tokens []int32, stop string) expected {
	for j := range tokens {
		if text := streamText(tok, tokens[:j+1]); strings.Contains(text, stop) {
			return expected{tokens: tokens[:j+1], text: text[:strings.Index(text, stop)], finish: tandemv1.FinishReason_FINISH_REASON_STOP}
		}
	}
	panic("stop string not in the text")
}

// streamText is tokens' text as the coordinator's stream decoder makes it.
func streamText(tok *tokenizer.Tokenizer, tokens []int32) string {
	d := tok.NewStreamDecoder(true)
	var b strings.Builder
	for _, id := range tokens {
		piece, _ := d.Add(id)
		b.WriteString(piece)
	}
	b.WriteString(d.Flush())
	return b.String()
}

// lateStop is a stop string that first appears three quarters into the
// text of tokens, well after the first tokens.
func lateStop(tok *tokenizer.Tokenizer, tokens []int32) string {
	text := streamText(tok, tokens)
	for p := len(text) * 3 / 4; p+8 < len(text); p++ {
		if stop := text[p : p+8]; utf8.ValidString(stop) && !strings.ContainsRune(stop, utf8.RuneError) && strings.Index(text, stop) == p {
			return stop
		}
	}
	panic("no stop string")
}

// checkStreams: every stream ended normally as want says, one logprob per
// token and exact usage.
func checkStreams(t *testing.T, prompts [][]int32, got []streamed, want []expected) {
	t.Helper()
	for i, g := range got {
		w := want[i]
		switch {
		case g.err != nil:
			t.Errorf("request %d failed after %d tokens: %v", i, len(g.tokens), g.err)
		case !slices.Equal(g.tokens, w.tokens):
			d := 0
			for d < min(len(g.tokens), len(w.tokens)) && g.tokens[d] == w.tokens[d] {
				d++
			}
			t.Errorf("request %d: %d tokens, want %d; they differ from token %d: %v, want %v", i, len(g.tokens), len(w.tokens), d,
				g.tokens[d:min(d+5, len(g.tokens))], w.tokens[d:min(d+5, len(w.tokens))])
		case g.text != w.text:
			t.Errorf("request %d: text %q\nwant %q", i, g.text, w.text)
		case g.logprobs != len(w.tokens):
			t.Errorf("request %d: %d logprobs for %d tokens", i, g.logprobs, len(w.tokens))
		case g.finish != w.finish ||
			g.usage.GetCompletionTokens() != int32(len(w.tokens)) || g.usage.GetPromptTokens() != int32(len(prompts[i])):
			t.Errorf("request %d: finish %v usage %v, want %v", i, g.finish, g.usage, w.finish)
		}
	}
}

// migrations returns each request's migrations from the coordinator's
// traces, and logs the longest the client waited for a token across one:
// the time from the last token before it to the first after.
func (tc *testCluster) migrations(t *testing.T, ids []string) map[string][]*tandemv1.Migration {
	t.Helper()
	traces := tandemv1.NewTracesClient(tc.conn)
	out := map[string][]*tandemv1.Migration{}
	var stall, find time.Duration
	for _, id := range ids {
		resp, err := traces.GetTrace(t.Context(), &tandemv1.GetTraceRequest{RequestId: id})
		if err != nil {
			t.Fatal(err)
		}
		tr := resp.GetTrace()
		out[id] = tr.GetMigrations()
		toks := tr.GetTokens()
		for _, m := range tr.GetMigrations() {
			find = max(find, time.Duration(m.GetResumedUnixNanos()-m.GetUnixNanos()))
			if k := int(m.GetTokensBefore()); k < len(toks) {
				before := tr.GetArrivalUnixNanos()
				if k > 0 {
					before = toks[k-1].GetUnixNanos()
				}
				stall = max(stall, time.Duration(toks[k].GetUnixNanos()-before))
			}
		}
	}
	if find > 0 {
		t.Logf("migrations: at most %v from a failure to the new groups' call, %v between the tokens either side", find, stall)
	}
	return out
}

func tinyTokenizer(t *testing.T, dir string) *tokenizer.Tokenizer {
	t.Helper()
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestMigrationDecodeRankKilled: kill -9 of one rank of a decode group
// while it streams: every request goes on on the other decode group and
// ends with exactly the tokens and text of an uninterrupted run, greedy
// and seeded, with logprobs and usage intact; the moves show in the
// traces.
func TestMigrationDecodeRankKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	seed := uint64(1234)
	cases := []struct {
		name   string
		params engine.SamplingParams
		wire   *tandemv1.SamplingParams
		stop   bool // each request has a stop string late in its text
	}{
		{name: "greedy", params: engine.SamplingParams{IgnoreEOS: true}, wire: &tandemv1.SamplingParams{IgnoreEos: true, Logprobs: true}},
		{name: "seeded", params: engine.SamplingParams{Temperature: 0.9, TopK: 50, Seed: &seed, IgnoreEOS: true},
			wire: &tandemv1.SamplingParams{Temperature: 0.9, TopK: 50, Seed: &seed, IgnoreEos: true, Logprobs: true}},
		// Seeded: greedy text of the tiny preset's random weights soon
		// repeats itself, so nothing late in it is new.
		{name: "seeded with stop strings", params: engine.SamplingParams{Temperature: 0.9, TopK: 50, Seed: &seed, IgnoreEOS: true},
			wire: &tandemv1.SamplingParams{Temperature: 0.9, TopK: 50, Seed: &seed, IgnoreEos: true, Logprobs: true}, stop: true},
	}
	const n, maxTokens = 8, 400
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tc := startCluster(t, "tiny", []groupSpec{
				{name: "prefill-0", role: cluster.RolePrefill, tp: 1},
				{name: "decode-0", role: cluster.RoleDecode, tp: 2},
				{name: "decode-1", role: cluster.RoleDecode, tp: 2},
			})
			prompts := make([][]int32, n)
			for i := range prompts {
				prompts[i] = []int32{int32(100 + i), 2, 3, int32(7 * i)}
			}
			c.params.MaxTokens = maxTokens
			c.wire.MaxTokens = maxTokens
			ref := localRun(t, tc.dir, prompts, c.params)
			tok := tinyTokenizer(t, tc.dir)
			want := make([]expected, n)
			wire := make([]*tandemv1.SamplingParams, n)
			for i, tokens := range ref {
				want[i], wire[i] = expectAll(tok, tokens), c.wire
				if c.stop {
					stop := lateStop(tok, tokens)
					want[i], wire[i] = expectStop(tok, tokens, stop), proto.CloneOf(c.wire)
					wire[i].Stop = []string{stop}
				}
			}
			// The second token comes from a decode group.
			results, progressed := tc.startStreams(t.Context(), prompts, func(i int) *tandemv1.SamplingParams { return wire[i] }, 1)
			waitProgress(t, progressed, n)
			for _, g := range []string{"decode-0", "decode-1"} {
				if st := tc.workerStats(t, g); st.GetRunningRequests() == 0 {
					t.Fatalf("%s runs no request (%v): the kill would test nothing", g, st)
				}
			}
			tc.kill(t, "decode-0", 1)
			got := results()
			checkStreams(t, prompts, got, want)
			var ids []string
			for _, g := range got {
				ids = append(ids, g.id)
			}
			moved, shown := 0, false
			for id, ms := range tc.migrations(t, ids) {
				if len(ms) > 0 && !shown {
					out, err := runTandem(t, "trace", "show", id, "--addr", tc.coord.grpcAddr)
					if err != nil || !strings.Contains(out, "migration 1 at") || !strings.Contains(out, "decode-0 failed the request after") {
						t.Errorf("trace show %s: %v\n%s", id, err, out)
					}
					shown = true
				}
				for _, m := range ms {
					if m.GetFromGroup() != "decode-0" || m.GetDecodeGroup() != "decode-1" || m.GetReason() == "" || m.GetTokensBefore() < 1 {
						t.Errorf("%s: migration %v, want from decode-0 to decode-1 after a token", id, m)
					}
				}
				if len(ms) > 0 {
					moved++
				}
			}
			if moved == 0 {
				t.Fatal("no request migrated: every request had finished before the kill")
			}
			t.Logf("%d of %d requests moved from decode-0 to decode-1", moved, n)
			// New requests go to the groups left.
			tc.waitServing(t, 2)
			for i := range 4 {
				if _, err := tc.generate(t.Context(), []int32{int32(i + 5), 6}, greedyParams(4)); err != nil {
					t.Fatalf("request after the group left: %v", err)
				}
			}
			tc.waitAllBlocksFree(t, "decode-1")
			tc.waitAllBlocksFree(t, "prefill-0")
		})
	}
}

// TestMigrationPrefillLeaderKilled: kill -9 of a prefill group's leader
// while it computes a long prompt: the request completes through another
// prefill group, or, when there is none, through the decode group
// recomputing the prompt, with the tokens of an uninterrupted run.
func TestMigrationPrefillLeaderKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	cases := []struct {
		name   string
		specs  []groupSpec
		moveTo [2]string // the migration's prefill and decode groups
	}{
		{"another prefill group", []groupSpec{
			{name: "prefill-0", role: cluster.RolePrefill, tp: 2},
			{name: "prefill-1", role: cluster.RolePrefill, tp: 1},
			{name: "decode-0", role: cluster.RoleDecode, tp: 1},
		}, [2]string{"prefill-1", "decode-0"}},
		{"decode group recomputes", []groupSpec{
			{name: "prefill-0", role: cluster.RolePrefill, tp: 2},
			{name: "decode-0", role: cluster.RoleDecode, tp: 1},
		}, [2]string{"", "decode-0"}},
	}
	const maxTokens = 16
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tc := startCluster(t, "tiny", c.specs)
			// A prompt of many chunks (256 rows a step), so the kill comes
			// during its prefill; the tie between the prefill groups goes
			// to prefill-0 by name.
			prompt := make([]int32, 1800)
			for i := range prompt {
				prompt[i] = int32((i*7919 + 11) % 50000)
			}
			ref := localRun(t, tc.dir, [][]int32{prompt}, engine.SamplingParams{MaxTokens: maxTokens, IgnoreEOS: true})
			sp := &tandemv1.SamplingParams{MaxTokens: maxTokens, IgnoreEos: true, Logprobs: true}
			results, _ := tc.startStreams(t.Context(), [][]int32{prompt}, func(int) *tandemv1.SamplingParams { return sp }, 0)
			tc.waitPrefilling(t, "prefill-0")
			tc.kill(t, "prefill-0", 0)
			got := results()
			checkStreams(t, [][]int32{prompt}, got, []expected{expectAll(tinyTokenizer(t, tc.dir), ref[0])})
			ms := tc.migrations(t, []string{got[0].id})[got[0].id]
			if len(ms) != 1 || ms[0].GetFromGroup() != "prefill-0" || ms[0].GetPrefillGroup() != c.moveTo[0] || ms[0].GetDecodeGroup() != c.moveTo[1] || ms[0].GetTokensBefore() != 0 {
				t.Fatalf("migrations %v, want one from prefill-0 to %v before any token", ms, c.moveTo)
			}
			tc.waitAllBlocksFree(t, "decode-0")
		})
	}
}

// waitPrefilling waits until group has prompt tokens in its queue.
func (tc *testCluster) waitPrefilling(t *testing.T, group string) {
	t.Helper()
	leader := tc.leader(t, group)
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		st, err := leader.Stats(t.Context(), &tandemv1.StatsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if st.GetPendingPrefillTokens() > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never had a prompt to compute", group)
		}
		<-tick.C
	}
}
