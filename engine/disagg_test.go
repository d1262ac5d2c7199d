package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
)

// TestDisaggregatedEqualsUnified: a prefill engine that holds its KV, a
// decode engine that loads it (or recomputes the prompt) and continues
// from the first token together produce what one engine produces alone.
func TestDisaggregatedEqualsUnified(t *testing.T) {
	type tc struct {
		name   string
		loaded bool
		kv     KVCacheDType
	}
	var cases []tc
	for _, name := range []string{"tiny", "gqa-tiny", "gpt2-124m"} {
		cases = append(cases, tc{name, true, KVFP32}, tc{name, false, KVFP32})
	}
	cases = append(cases, tc{"gqa-tiny", true, KVBF16}, tc{"gqa-tiny", true, KVFP16})
	for _, c := range cases {
		name, loaded := c.name, c.loaded
		t.Run(fmt.Sprintf("%s/loaded=%v/%s", name, loaded, c.kv), func(t *testing.T) {
			m := testModel(t, name, "f32", "auto")
			cfg := m.Config()
			params := greedy(12)
			params.Logprobs = true
			prompts := map[string][]int32{"a": testPrompt(5, cfg.VocabSize, 1), "b": testPrompt(40, cfg.VocabSize, 2)}

			alone := testEngine(t, m, Options{KVCacheDType: c.kv})
			for id, p := range prompts {
				if err := alone.Add(Request{ID: id, Prompt: p, Params: params}); err != nil {
					t.Fatal(err)
				}
			}
			want := run(t, alone)

			prefill := testEngine(t, m, Options{KVCacheDType: c.kv})
			decode := testEngine(t, m, Options{BlockSize: 8, KVCacheDType: c.kv}) // other block ids and size than the sender's
			free0, _ := prefill.KVBlocks()
			first := map[string]*result{}
			for id, p := range prompts {
				one := params
				one.MaxTokens = 1
				if err := prefill.Add(Request{ID: id, Prompt: p, Params: one, HoldKV: true}); err != nil {
					t.Fatal(err)
				}
			}
			collect(first, drain(t, prefill))
			heads := m.attnSpec.KVHeads
			for id, p := range prompts {
				h, ok := prefill.Held(id)
				if !ok || h.Tokens != len(p) {
					t.Fatalf("%s: held %+v, %v; want %d tokens", id, h, ok, len(p))
				}
				if loaded {
					r, err := decode.Reserve(id, p, 0)
					if err != nil {
						t.Fatal(err)
					}
					buf := make([]byte, 2*len(p)*heads*cfg.HeadDim*kvSize(prefill))
					for l := range cfg.Layers {
						prefill.ReadKV(l, h.Blocks, 0, h.Tokens, 0, heads, buf)
						decode.WriteKV(l, r.Blocks, 0, r.Tokens, 0, heads, buf)
					}
				}
				if err := prefill.Release(id); err != nil {
					t.Fatal(err)
				}
				if err := decode.AddPrefilled(Request{ID: id, Prompt: p, Params: params}, first[id].tokens[0], loaded); err != nil {
					t.Fatal(err)
				}
			}
			if free, _ := prefill.KVBlocks(); free != free0 {
				t.Fatalf("prefill engine has %d free blocks after Release, want %d", free, free0)
			}
			got := first
			collect(got, drain(t, decode))
			for id := range prompts {
				sameResult(t, id, got[id], want[id], reorderTol)
			}
		})
	}
}

func drain(t *testing.T, e *Engine) []Output {
	t.Helper()
	var all []Output
	for steps := 0; e.HasWork(); steps++ {
		if steps > 10000 {
			t.Fatal("engine did not finish")
		}
		outs, err := e.Step(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, outs...)
	}
	return all
}

func TestDisaggregationErrors(t *testing.T) {
	m := testModel(t, "tiny", "f32", "auto")
	e := testEngine(t, m, Options{})
	p := testPrompt(4, m.Config().VocabSize, 3)
	if _, err := e.Reserve("x", p, 0); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"reserve twice", func() error { _, err := e.Reserve("x", p, 0); return err }(), ErrInvalidRequest},
		{"add over reserved id", e.Add(Request{ID: "x", Prompt: p, Params: greedy(2)}), ErrInvalidRequest},
		{"prefilled without reservation", e.AddPrefilled(Request{ID: "y", Prompt: p, Params: greedy(2)}, 1, true), ErrInvalidRequest},
		{"prefilled with one token left", e.AddPrefilled(Request{ID: "z", Prompt: p, Params: greedy(1)}, 1, false), ErrInvalidParams},
		{"release unknown", e.Release("nope"), ErrNotFound},
		{"reserve too much", func() error { _, err := e.Reserve("big", make([]int32, 1<<20), 0); return err }(), ErrInvalidRequest},
		{"skip a partial block", func() error { _, err := e.Reserve("s", testPrompt(40, 100, 1), 8); return err }(), ErrInvalidRequest},
		{"skip the last token's block", func() error { _, err := e.Reserve("s", testPrompt(32, 100, 1), 32); return err }(), ErrInvalidRequest},
		{"skip what is not cached", func() error { _, err := e.Reserve("s", testPrompt(40, 100, 1), 16); return err }(), ErrPrefixEvicted},
	}
	for _, c := range cases {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: error %v, want %v", c.name, c.err, c.want)
		}
	}
	if err := e.Abort("x"); err != nil {
		t.Fatalf("Abort of a reservation: %v", err)
	}
	if free, total := e.KVBlocks(); free != total {
		t.Fatalf("%d of %d blocks free after aborting the reservation", free, total)
	}
}

// TestReadKVWhileLayersRun: KV read as soon as WaitLayer says a layer is
// done, from another goroutine while the step's later layers run, equals
// the KV after the step.
func TestReadKVWhileLayersRun(t *testing.T) {
	m := testModel(t, "tiny", "f32", "auto")
	cfg := m.Config()
	heads := m.attnSpec.KVHeads
	prompt := testPrompt(37, cfg.VocabSize, 4)
	type early struct {
		layers [][]byte
		err    error
	}
	got := make(chan early, 1)
	var e *Engine
	e = testEngine(t, m, Options{BeforeForward: func(rec *StepRecord) {
		blocks, ok := e.Blocks("p")
		if !ok {
			got <- early{err: fmt.Errorf("no blocks for the prompt in step %d", rec.Step)}
			return
		}
		step := rec.Step
		go func() {
			var out early
			for l := range cfg.Layers {
				if err := e.WaitLayer(t.Context(), step, l); err != nil {
					out.err = err
					break
				}
				buf := make([]byte, 2*len(prompt)*heads*cfg.HeadDim*kvSize(e))
				e.ReadKV(l, blocks, 0, len(prompt), 0, heads, buf)
				out.layers = append(out.layers, buf)
			}
			got <- out
		}()
	}})
	if err := e.Add(Request{ID: "p", Prompt: prompt, Params: greedy(1), HoldKV: true}); err != nil {
		t.Fatal(err)
	}
	drain(t, e)
	res := <-got
	if res.err != nil {
		t.Fatal(res.err)
	}
	h, _ := e.Held("p")
	for l, early := range res.layers {
		after := make([]byte, len(early))
		e.ReadKV(l, h.Blocks, 0, h.Tokens, 0, heads, after)
		if !bytes.Equal(early, after) {
			t.Fatalf("layer %d: KV read during the step differs from after it", l)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := e.WaitLayer(ctx, e.step+5, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitLayer for a future step with a cancelled context: %v", err)
	}
}

// kvSize is the bytes of one element of e's KV cache.
func kvSize(e *Engine) int { return e.kv.DType().Size() }
