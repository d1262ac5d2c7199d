package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/tandemllm/tandem/compute"
	"github.com/tandemllm/tandem/compute/cpu"
)

// Tolerances of the equivalence tests. Logits of the same computation
// done in a different order (chunked, batched, incremental) differ by
// float32 reassociation only.
const (
	reorderTol = 2e-4 // max |Δlogit| for reordered fp32 computation
	bf16Tol    = 0.1  // max |Δlogit| / (logit std) between bf16 and fp32 weights
)

func testEngine(t *testing.T, m *Model, opts Options) *Engine {
	t.Helper()
	if opts.MaxBatchTokens == 0 {
		opts.MaxBatchTokens = 64
	}
	if opts.MaxSeqs == 0 {
		opts.MaxSeqs = 64
	}
	if opts.KVCacheBytes == 0 {
		opts.KVCacheBytes = 64 << 20
	}
	e, err := New(m, opts)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func testPrompt(n, vocab int, seed int) []int32 {
	p := make([]int32, n)
	for i := range p {
		p[i] = int32((i*7919 + seed*104729 + 13) % vocab)
	}
	return p
}

// rowLogits runs rows [computed, computed+n) of request id as one chunk
// and returns the logits of every row.
func rowLogits(t *testing.T, e *Engine, id string, n int) [][]float32 {
	t.Helper()
	s := e.byID[id]
	if !e.reserve(s, n) {
		t.Fatal("out of KV blocks")
	}
	e.batch.reset()
	e.add(nil, s, n)
	e.batch.logitRows = e.batch.logitRows[:0]
	for i := range n {
		e.batch.logitRows = append(e.batch.logitRows, int32(i))
	}
	flat, err := e.forward(context.Background(), &e.batch)
	if err != nil {
		t.Fatal(err)
	}
	s.computed += n
	v := e.m.cfg.VocabSize
	out := make([][]float32, n)
	for i := range out {
		out[i] = slices.Clone(flat[i*v : (i+1)*v])
	}
	return out
}

func maxAbsDiff(a, b []float32) float64 {
	var d float64
	for i := range a {
		d = max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

func std(a []float32) float64 {
	var s, s2 float64
	for _, v := range a {
		s += float64(v)
		s2 += float64(v) * float64(v)
	}
	n := float64(len(a))
	return math.Sqrt(max(s2/n-(s/n)*(s/n), 0))
}

func greedy(n int) SamplingParams {
	return SamplingParams{MaxTokens: n, IgnoreEOS: true, Logprobs: true}
}

// TestIncrementalDecodeEqualsPrefill: the logits of each position are the
// same whether the prompt is run as one chunk or one token at a time.
func TestIncrementalDecodeEqualsPrefill(t *testing.T) {
	for _, name := range testPresets {
		t.Run(name, func(t *testing.T) {
			m := testModel(t, name, "f32", "auto")
			const n = 40
			prompt := testPrompt(n, m.cfg.VocabSize, 1)
			full := testEngine(t, m, Options{})
			if err := full.Add(Request{ID: "a", Prompt: prompt, Params: greedy(1)}); err != nil {
				t.Fatal(err)
			}
			want := rowLogits(t, full, "a", n)
			inc := testEngine(t, m, Options{BlockSize: 4})
			if err := inc.Add(Request{ID: "a", Prompt: prompt, Params: greedy(1)}); err != nil {
				t.Fatal(err)
			}
			for pos := range n {
				got := rowLogits(t, inc, "a", 1)[0]
				if d := maxAbsDiff(got, want[pos]); d > reorderTol {
					t.Fatalf("position %d: max |Δlogit| = %g > %g", pos, d, reorderTol)
				}
			}
		})
	}
}

type result struct {
	tokens   []int32
	logprobs []float32
	finish   FinishReason
}

// run drives e until every request finished and collects their outputs.
func run(t *testing.T, e *Engine) map[string]*result {
	t.Helper()
	res := map[string]*result{}
	for steps := 0; e.HasWork(); steps++ {
		if steps > 10000 {
			t.Fatal("engine did not finish")
		}
		outs, err := e.Step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range outs {
			if r := res[o.RequestID]; r != nil && o.Index != len(r.tokens) || r == nil && o.Index != 0 {
				t.Fatalf("%s: output index %d out of order", o.RequestID, o.Index)
			}
		}
		collect(res, outs)
	}
	return res
}

// collect appends outputs to their requests' results.
func collect(res map[string]*result, outs []Output) {
	for _, o := range outs {
		r := res[o.RequestID]
		if r == nil {
			r = &result{}
			res[o.RequestID] = r
		}
		r.tokens = append(r.tokens, o.Token)
		if o.Logprob != nil {
			r.logprobs = append(r.logprobs, o.Logprob.Logprob)
		}
		r.finish = o.FinishReason
	}
}

func sameResult(t *testing.T, label string, got, want *result, tol float64) {
	t.Helper()
	if got == nil || want == nil {
		t.Fatalf("%s: missing result (got %v, want %v)", label, got, want)
	}
	if !slices.Equal(got.tokens, want.tokens) {
		t.Fatalf("%s: tokens %v, want %v", label, got.tokens, want.tokens)
	}
	if d := maxAbsDiff(got.logprobs, want.logprobs); d > tol {
		t.Fatalf("%s: logprobs differ by %g > %g", label, d, tol)
	}
	if got.finish != want.finish {
		t.Fatalf("%s: finish %q, want %q", label, got.finish, want.finish)
	}
}

// TestBatchedStepEqualsAlone: sequences batched together produce what
// each produces alone.
func TestBatchedStepEqualsAlone(t *testing.T) {
	for _, name := range testPresets {
		t.Run(name, func(t *testing.T) {
			m := testModel(t, name, "f32", "auto")
			lens := []int{3, 17, 33, 8}
			reqs := make([]Request, len(lens))
			for i, n := range lens {
				reqs[i] = Request{ID: fmt.Sprint("r", i), Prompt: testPrompt(n, m.cfg.VocabSize, i), Params: greedy(6 + i)}
			}
			alone := map[string]*result{}
			for _, r := range reqs {
				e := testEngine(t, m, Options{})
				if err := e.Add(r); err != nil {
					t.Fatal(err)
				}
				alone[r.ID] = run(t, e)[r.ID]
			}
			e := testEngine(t, m, Options{})
			for _, r := range reqs {
				if err := e.Add(r); err != nil {
					t.Fatal(err)
				}
			}
			batched := run(t, e)
			for _, r := range reqs {
				sameResult(t, r.ID, batched[r.ID], alone[r.ID], reorderTol)
			}
		})
	}
}

// TestChunkedPrefillEqualsOneShot: a prompt prefilled in chunks gives the
// same tokens and logprobs as in one chunk, also when chunks of several
// sequences share steps.
func TestChunkedPrefillEqualsOneShot(t *testing.T) {
	m := testModel(t, "gqa-tiny", "f32", "auto")
	reqs := []Request{
		{ID: "long", Prompt: testPrompt(50, m.cfg.VocabSize, 3), Params: greedy(5)},
		{ID: "short", Prompt: testPrompt(9, m.cfg.VocabSize, 4), Params: greedy(5)},
	}
	outs := map[int]map[string]*result{}
	for _, chunk := range []int{64, 7, 3} {
		e := testEngine(t, m, Options{MaxBatchTokens: chunk, MaxSeqs: 2})
		for _, r := range reqs {
			if err := e.Add(r); err != nil {
				t.Fatal(err)
			}
		}
		outs[chunk] = run(t, e)
	}
	for _, chunk := range []int{7, 3} {
		for _, r := range reqs {
			sameResult(t, fmt.Sprintf("chunk %d %s", chunk, r.ID), outs[chunk][r.ID], outs[64][r.ID], reorderTol)
		}
	}
}

// TestBF16NearF32: bf16 weights (the fp32 weights rounded) give logits
// within bf16Tol standard deviations of fp32's.
func TestBF16NearF32(t *testing.T) {
	for _, name := range testPresets {
		t.Run(name, func(t *testing.T) {
			prompt := testPrompt(24, 50257, 5)
			logits := map[string][]float32{}
			for _, dt := range []string{"f32", "bf16"} {
				e := testEngine(t, testModel(t, name, dt, "auto"), Options{})
				if err := e.Add(Request{ID: "a", Prompt: prompt, Params: greedy(1)}); err != nil {
					t.Fatal(err)
				}
				rows := rowLogits(t, e, "a", len(prompt))
				logits[dt] = rows[len(rows)-1]
			}
			d := maxAbsDiff(logits["bf16"], logits["f32"]) / std(logits["f32"])
			t.Logf("max |Δlogit| = %.4f std", d)
			if d > bf16Tol {
				t.Fatalf("bf16 logits differ from fp32 by %.4f std > %v", d, bf16Tol)
			}
		})
	}
}

// TestAsmKernelsMatchGo: greedy output with each assembly kernel set this
// machine has equals the pure-Go kernels'. The AMX set rounds a BF16
// model's activations to bfloat16 for prefill-sized products (as PyTorch
// does), so its log-probabilities get a bfloat16-sized tolerance.
func TestAsmKernelsMatchGo(t *testing.T) {
	var sets []string
	for _, k := range []string{"go", "avx2", "avx512", "amx"} {
		be, err := cpu.New(cpu.Options{Kernels: k})
		if errors.Is(err, compute.ErrUnsupported) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		be.Close()
		sets = append(sets, k)
	}
	for _, name := range testPresets {
		for _, dt := range []string{"f32", "bf16"} {
			t.Run(name+"/"+dt, func(t *testing.T) {
				var want map[string]*result
				for _, k := range sets {
					e := testEngine(t, testModel(t, name, dt, k), Options{})
					for i := range 3 {
						r := Request{ID: fmt.Sprint(i), Prompt: testPrompt(5+11*i, 50257, i), Params: greedy(12)}
						if err := e.Add(r); err != nil {
							t.Fatal(err)
						}
					}
					got := run(t, e)
					if want == nil {
						want = got
						continue
					}
					tol := 1e-3
					if k == "amx" && dt == "bf16" {
						tol = 1e-2
					}
					for id := range want {
						sameResult(t, k+" "+id, got[id], want[id], tol)
					}
				}
			})
		}
	}
}

// TestPreemptionRecomputes: with too few KV blocks for all sequences at
// once, sequences are preempted and recomputed, and every one still
// produces what it produces alone.
func TestPreemptionRecomputes(t *testing.T) {
	m := testModel(t, "tiny", "f32", "auto")
	cfg := m.cfg
	perBlock := int64(2 * cfg.Layers * cfg.KVHeads * cfg.HeadDim * 4 * 4)
	var preempted int
	e := testEngine(t, m, Options{BlockSize: 4, KVCacheBytes: 12 * perBlock, OnStep: func(r *StepRecord) {
		for _, s := range r.Seqs {
			if s.Prefill && s.Pos == 0 && s.Tokens > 10 {
				preempted++
			}
		}
	}})
	want := map[string]*result{}
	var reqs []Request
	for i := range 4 {
		r := Request{ID: fmt.Sprint(i), Prompt: testPrompt(6+i, cfg.VocabSize, i), Params: greedy(20)}
		reqs = append(reqs, r)
		alone := testEngine(t, m, Options{})
		if err := alone.Add(r); err != nil {
			t.Fatal(err)
		}
		want[r.ID] = run(t, alone)[r.ID]
		if err := e.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	got := run(t, e)
	for _, r := range reqs {
		sameResult(t, r.ID, got[r.ID], want[r.ID], reorderTol)
	}
	if preempted == 0 {
		t.Fatal("no sequence was preempted: the test does not exercise preemption")
	}
	if free, total := e.KVBlocks(); free != total {
		t.Fatalf("%d of %d blocks free after all requests finished", free, total)
	}
}

func TestAbortFreesBlocks(t *testing.T) {
	m := testModel(t, "tiny", "f32", "auto")
	e := testEngine(t, m, Options{BlockSize: 4})
	for i := range 3 {
		if err := e.Add(Request{ID: fmt.Sprint(i), Prompt: testPrompt(30, m.cfg.VocabSize, i), Params: greedy(50)}); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		if _, err := e.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if free, total := e.KVBlocks(); free == total {
		t.Fatal("no blocks in use after three steps")
	}
	for i := range 3 {
		if err := e.Abort(fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	if free, total := e.KVBlocks(); free != total || e.HasWork() {
		t.Fatalf("after abort: %d of %d blocks free, work left %v", free, total, e.HasWork())
	}
	if err := e.Abort("0"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second abort: %v, want ErrNotFound", err)
	}
}

func TestFinishReasons(t *testing.T) {
	m := testModel(t, "tiny", "f32", "auto")
	prompt := testPrompt(10, m.cfg.VocabSize, 0)
	e := testEngine(t, m, Options{})
	if err := e.Add(Request{ID: "a", Prompt: prompt, Params: greedy(8)}); err != nil {
		t.Fatal(err)
	}
	ref := run(t, e)["a"]
	if len(ref.tokens) != 8 || ref.finish != FinishLength {
		t.Fatalf("max_tokens 8: %d tokens, finish %q", len(ref.tokens), ref.finish)
	}
	// Stopping on the fourth token's id ends the request there.
	stop := ref.tokens[3]
	first := slices.Index(ref.tokens, stop)
	p := greedy(8)
	p.StopTokenIDs = []int32{stop}
	if err := e.Add(Request{ID: "b", Prompt: prompt, Params: p}); err != nil {
		t.Fatal(err)
	}
	got := run(t, e)["b"]
	if len(got.tokens) != first+1 || got.finish != FinishStop {
		t.Fatalf("stop token %d: %d tokens, finish %q; want %d tokens, stop", stop, len(got.tokens), got.finish, first+1)
	}
}

func TestAddRejectsBadRequests(t *testing.T) {
	m := testModel(t, "tiny", "f32", "auto")
	e := testEngine(t, m, Options{})
	v, ctx := m.cfg.VocabSize, m.cfg.MaxPositions
	if err := e.Add(Request{ID: "dup", Prompt: []int32{1}, Params: greedy(1)}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		req  Request
		want error
		text string
	}{
		{"empty id", Request{Prompt: []int32{1}, Params: greedy(1)}, ErrInvalidRequest, "id"},
		{"duplicate id", Request{ID: "dup", Prompt: []int32{1}, Params: greedy(1)}, ErrInvalidRequest, "already"},
		{"empty prompt", Request{ID: "x", Params: greedy(1)}, ErrInvalidRequest, "empty"},
		{"prompt longer than context", Request{ID: "x", Prompt: make([]int32, ctx+1), Params: greedy(1)}, ErrInvalidRequest, "context"},
		{"max_tokens past context", Request{ID: "x", Prompt: make([]int32, ctx-2), Params: greedy(5)}, ErrInvalidRequest, "max_tokens"},
		{"token outside vocab", Request{ID: "x", Prompt: []int32{1, int32(v)}, Params: greedy(1)}, ErrInvalidRequest, "vocabulary"},
		{"negative token", Request{ID: "x", Prompt: []int32{-1}, Params: greedy(1)}, ErrInvalidRequest, "vocabulary"},
		{"bad stop token", Request{ID: "x", Prompt: []int32{1}, Params: SamplingParams{MaxTokens: 1, StopTokenIDs: []int32{int32(v)}}}, ErrInvalidParams, "stop token"},
		{"stop strings without detokenizer", Request{ID: "x", Prompt: []int32{1}, Params: SamplingParams{MaxTokens: 1, Stop: []string{"x"}}}, ErrInvalidParams, "detokenizer"},
		{"bad temperature", Request{ID: "x", Prompt: []int32{1}, Params: SamplingParams{MaxTokens: 1, Temperature: -1}}, ErrInvalidParams, "temperature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := e.Add(tt.req)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Add = %v, want %v", err, tt.want)
			}
			if !contains(err.Error(), tt.text) {
				t.Fatalf("error %q does not mention %q", err, tt.text)
			}
		})
	}
	_ = cpu.Options{}
}
