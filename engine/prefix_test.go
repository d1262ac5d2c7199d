package engine

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/tandemllm/tandem/blockhash"
)

// withPrefix is a prompt of prefix followed by n tokens of its own.
func withPrefix(prefix []int32, n, vocab, seed int) []int32 {
	return append(slices.Clone(prefix), testPrompt(n, vocab, seed)...)
}

// TestPrefixCacheEqualsScratch: a request whose prompt starts with a
// cached prefix computes only the rest, and its tokens and logprobs are
// those computed from scratch (up to reordered fp32 arithmetic), for both
// architectures, GQA, chunked prefill and both KV dtypes; with prefix
// caching off nothing is reused.
func TestPrefixCacheEqualsScratch(t *testing.T) {
	type tc struct {
		name  string
		kv    KVCacheDType
		chunk int
	}
	cases := []tc{{"tiny", KVFP32, 64}, {"gqa-tiny", KVFP32, 64}, {"gpt2-124m", KVFP32, 64}, {"gqa-tiny", KVBF16, 64}, {"tiny", KVFP32, 12}}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/%s/chunk%d", c.name, c.kv, c.chunk), func(t *testing.T) {
			m := testModel(t, c.name, "f32", "auto")
			v := m.cfg.VocabSize
			prefix := testPrompt(37, v, 7) // 4 full blocks of 8, and 5 tokens
			first := Request{ID: "first", Prompt: withPrefix(prefix, 9, v, 1), Params: greedy(3)}
			second := Request{ID: "second", Prompt: withPrefix(prefix, 11, v, 2), Params: greedy(10)}

			scratch := testEngine(t, m, Options{BlockSize: 8, KVCacheDType: c.kv, MaxBatchTokens: c.chunk, DisablePrefixCaching: true})
			if err := scratch.Add(second); err != nil {
				t.Fatal(err)
			}
			want := run(t, scratch)["second"]

			var prefill int
			e := testEngine(t, m, Options{BlockSize: 8, KVCacheDType: c.kv, MaxBatchTokens: c.chunk, ModelID: "m",
				OnStep: func(r *StepRecord) { prefill += r.PrefillTokens }})
			if err := e.Add(first); err != nil {
				t.Fatal(err)
			}
			run(t, e)
			prefill = 0
			before := e.PrefixStats()
			if err := e.Add(second); err != nil {
				t.Fatal(err)
			}
			got := run(t, e)["second"]
			sameResult(t, "second", got, want, reorderTol)
			// The first 32 tokens (4 blocks) are shared; the 37th sits in a
			// block the first request's own tokens filled differently.
			st := e.PrefixStats()
			if hits := st.Hits - before.Hits; hits != 32 {
				t.Errorf("%d prompt tokens hit the cache, want 32", hits)
			}
			if q := st.Queries - before.Queries; q != int64(len(second.Prompt)) {
				t.Errorf("%d prompt tokens queried, want %d", q, len(second.Prompt))
			}
			if want := len(second.Prompt) - 32; prefill != want {
				t.Errorf("%d prompt tokens computed, want %d", prefill, want)
			}
			if free, total := e.KVBlocks(); free != total {
				t.Errorf("%d of %d blocks free when idle (cached ones count as free)", free, total)
			}
		})
	}
}

// TestWholePromptCached: a prompt made of full cached blocks still
// computes its last block (logits of its last token), writing it into a
// fresh block, never into the cached one.
func TestWholePromptCached(t *testing.T) {
	m := testModel(t, "tiny", "f32", "auto")
	prompt := testPrompt(32, m.cfg.VocabSize, 3)
	e := testEngine(t, m, Options{BlockSize: 8})
	var res []*result
	for i := range 3 {
		id := fmt.Sprint(i)
		if err := e.Add(Request{ID: id, Prompt: prompt, Params: greedy(6)}); err != nil {
			t.Fatal(err)
		}
		res = append(res, run(t, e)[id])
	}
	for i := 1; i < 3; i++ {
		sameResult(t, fmt.Sprint(i), res[i], res[0], reorderTol)
	}
	if st := e.PrefixStats(); st.Hits != 2*24 {
		t.Fatalf("%d tokens hit, want 48 (3 of 4 blocks, twice)", st.Hits)
	}
}

// TestPrefixEvictedRecomputes: under memory pressure cached blocks are
// evicted, least recently used first, as reported by the events; a prompt
// whose prefix was evicted is recomputed and still correct.
func TestPrefixEvictedRecomputes(t *testing.T) {
	m := testModel(t, "tiny", "f32", "auto")
	v := m.cfg.VocabSize
	cfg := m.cfg
	perBlock := int64(2 * cfg.Layers * cfg.KVHeads * cfg.HeadDim * 4 * 8)
	e := testEngine(t, m, Options{BlockSize: 8, KVCacheBytes: 12 * perBlock})
	old, recent := testPrompt(40, v, 11), testPrompt(40, v, 12)
	serve := func(id string, prompt []int32) *result {
		if err := e.Add(Request{ID: id, Prompt: prompt, Params: greedy(4)}); err != nil {
			t.Fatal(err)
		}
		return run(t, e)[id]
	}
	wantOld := serve("old", old)
	serve("recent", recent)
	e.TakeKVEvents()
	// Two more prompts of 5 blocks each: 10 blocks needed, 12 in all, 10
	// of them cached (5 each for old and recent), so the eviction must
	// take old's blocks, the least recently used, first.
	serve("recent-again", recent)
	serve("x", testPrompt(40, v, 13))
	oldHashes := blockhash.Chain(nil, "", old, 8)
	var removed []blockhash.Hash
	for _, ev := range e.TakeKVEvents() {
		if ev.Kind == KVRemoved {
			removed = append(removed, ev.Hashes...)
		}
	}
	if len(removed) == 0 {
		t.Fatal("no block was evicted: the test does not exercise eviction")
	}
	for _, h := range removed {
		if !slices.Contains(oldHashes, h) {
			t.Fatalf("evicted %#x, which is not the least recently used prefix's", h)
		}
	}
	before := e.PrefixStats()
	got := serve("old-again", old)
	sameResult(t, "old after eviction", got, wantOld, reorderTol)
	if hits := e.PrefixStats().Hits - before.Hits; hits >= 32 {
		t.Fatalf("%d tokens of the evicted prefix hit the cache", hits)
	}
}

// TestKVEventsMirrorCache: replaying the events from a snapshot gives
// exactly the cache's contents, through stores, evictions, preemption and
// aborts.
func TestKVEventsMirrorCache(t *testing.T) {
	m := testModel(t, "tiny", "f32", "auto")
	v := m.cfg.VocabSize
	cfg := m.cfg
	perBlock := int64(2 * cfg.Layers * cfg.KVHeads * cfg.HeadDim * 4 * 4)
	e := testEngine(t, m, Options{BlockSize: 4, KVCacheBytes: 16 * perBlock})
	mirror := map[blockhash.Hash]bool{}
	apply := func() {
		for _, ev := range e.TakeKVEvents() {
			for _, h := range ev.Hashes {
				switch ev.Kind {
				case KVStored:
					if mirror[h] {
						t.Fatalf("stored %#x twice", h)
					}
					mirror[h] = true
				case KVRemoved:
					if !mirror[h] {
						t.Fatalf("removed %#x, never stored", h)
					}
					delete(mirror, h)
				}
			}
		}
		got := e.CachedHashes()
		if len(got) != len(mirror) || e.PrefixStats().CachedBlocks != len(got) {
			t.Fatalf("cache holds %d blocks (stats say %d), events say %d", len(got), e.PrefixStats().CachedBlocks, len(mirror))
		}
		for _, h := range got {
			if !mirror[h] {
				t.Fatalf("cache holds %#x, events never stored it", h)
			}
		}
	}
	for round := range 6 {
		for i := range 3 {
			id := fmt.Sprint(round, "-", i)
			if err := e.Add(Request{ID: id, Prompt: testPrompt(9+5*i, v, round%3+i), Params: greedy(12)}); err != nil {
				t.Fatal(err)
			}
		}
		for range 4 {
			if _, err := e.Step(t.Context()); err != nil {
				t.Fatal(err)
			}
			apply()
		}
		if err := e.Abort(fmt.Sprint(round, "-", 0)); err != nil {
			t.Fatal(err)
		}
		drain(t, e)
		apply()
	}
}

// TestAbortKeepsFinishedBlocks: a request aborted in the middle of its
// prefill leaves the blocks it had computed in full in the cache, free
// for others to reuse, and frees the rest.
func TestAbortKeepsFinishedBlocks(t *testing.T) {
	m := testModel(t, "tiny", "f32", "auto")
	prompt := testPrompt(100, m.cfg.VocabSize, 21)
	e := testEngine(t, m, Options{BlockSize: 8, MaxBatchTokens: 36})
	if err := e.Add(Request{ID: "a", Prompt: prompt, Params: greedy(4)}); err != nil {
		t.Fatal(err)
	}
	for range 2 { // 72 tokens computed: 9 full blocks
		if _, err := e.Step(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Abort("a"); err != nil {
		t.Fatal(err)
	}
	free, total := e.KVBlocks()
	if st := e.PrefixStats(); st.CachedBlocks != 9 || free != total {
		t.Fatalf("after abort: %d blocks cached, %d of %d free; want 9 cached, all free", st.CachedBlocks, free, total)
	}
	if err := e.Add(Request{ID: "b", Prompt: prompt, Params: greedy(4)}); err != nil {
		t.Fatal(err)
	}
	before := e.PrefixStats()
	run(t, e)
	if hits := e.PrefixStats().Hits - before.Hits; hits != 72 {
		t.Fatalf("%d tokens of the aborted request's computed blocks hit, want 72", hits)
	}
}

// TestReserveKeepsCachedPrefix: a decode engine that holds a prompt's
// first blocks keeps them and loads only the rest; output equals the
// whole prompt loaded.
func TestReserveKeepsCachedPrefix(t *testing.T) {
	m := testModel(t, "gqa-tiny", "f32", "auto")
	cfg, v := m.cfg, m.cfg.VocabSize
	prefix := testPrompt(32, v, 5)
	p1, p2 := withPrefix(prefix, 7, v, 1), withPrefix(prefix, 13, v, 2)
	params := greedy(8)

	alone := testEngine(t, m, Options{BlockSize: 8})
	if err := alone.Add(Request{ID: "b", Prompt: p2, Params: params}); err != nil {
		t.Fatal(err)
	}
	want := run(t, alone)["b"]

	prefill := testEngine(t, m, Options{BlockSize: 16})
	perBlock := int64(2 * cfg.Layers * m.attnSpec.KVHeads * cfg.HeadDim * 4 * 8)
	decode := testEngine(t, m, Options{BlockSize: 8, KVCacheBytes: 10 * perBlock})
	heads := m.attnSpec.KVHeads
	move := func(id string, prompt []int32, skip int) *result {
		one := params
		one.MaxTokens = 1
		if err := prefill.Add(Request{ID: id, Prompt: prompt, Params: one, HoldKV: true}); err != nil {
			t.Fatal(err)
		}
		first := map[string]*result{}
		collect(first, drain(t, prefill))
		h, _ := prefill.Held(id)
		r, err := decode.Reserve(id, prompt, skip)
		if err != nil {
			t.Fatal(err)
		}
		if r.Skip != skip {
			t.Fatalf("reserved with skip %d, asked %d", r.Skip, skip)
		}
		buf := make([]byte, 2*(len(prompt)-skip)*heads*cfg.HeadDim*kvSize(prefill))
		for l := range cfg.Layers {
			prefill.ReadKV(l, h.Blocks, skip, h.Tokens, 0, heads, buf)
			decode.WriteKV(l, r.Blocks, skip, r.Tokens, 0, heads, buf)
		}
		if err := prefill.Release(id); err != nil {
			t.Fatal(err)
		}
		if err := decode.AddPrefilled(Request{ID: id, Prompt: prompt, Params: params}, first[id].tokens[0], true); err != nil {
			t.Fatal(err)
		}
		got := first
		collect(got, drain(t, decode))
		return got[id]
	}
	move("a", p1, 0)
	got := move("b", p2, 32)
	sameResult(t, "b", got, want, reorderTol)
	if st := decode.PrefixStats(); st.Hits != 32 {
		t.Fatalf("decode engine reused %d tokens, want 32", st.Hits)
	}
	// A reservation of every block evicts the whole cache; the prefix can
	// then no longer be kept, and the caller recomputes.
	if _, err := decode.Reserve("fill", testPrompt(80, v, 100), 0); err != nil {
		t.Fatal(err)
	}
	if err := decode.Release("fill"); err != nil {
		t.Fatal(err)
	}
	if _, err := decode.Reserve("c", p2, 32); !errors.Is(err, ErrPrefixEvicted) {
		t.Fatalf("Reserve of an evicted prefix: %v, want ErrPrefixEvicted", err)
	}
	if free, total := decode.KVBlocks(); free != total {
		t.Fatalf("a failed Reserve left %d of %d blocks free", free, total)
	}
}
