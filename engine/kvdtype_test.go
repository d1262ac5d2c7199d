package engine

import (
	"fmt"
	"testing"

	"github.com/tandemllm/tandem/compute"
)

// Tolerances of a bf16 KV cache against an fp32 one, the weights being
// the same fp32. Keys and values rounded to bf16 (8 mantissa bits, a
// relative error of at most 2^-9) move the logits by a small fraction of
// their spread; a greedy token can only change where fp32's two best
// logprobs are closer than kvTieMargin.
const (
	bf16KVTol   = 0.05 // max |Δlogit| / (logit std) of prompt rows; max |Δlogprob| (nats) of generated tokens
	kvTieMargin = 0.05 // nats between fp32's best two tokens below which a step is a near tie
)

// TestBF16KVNearFP32: a bf16 KV cache gives the greedy tokens of an fp32
// one up to the first near tie, with logits (every prompt row and every
// generated token's logprob) within bf16KVTol.
func TestBF16KVNearFP32(t *testing.T) {
	for _, name := range testPresets {
		t.Run(name, func(t *testing.T) {
			m := testModel(t, name, "f32", "auto")
			prompt := testPrompt(45, m.cfg.VocabSize, 9)
			rows := map[KVCacheDType][][]float32{}
			outs := map[KVCacheDType][]Output{}
			for _, kv := range []KVCacheDType{KVFP32, KVBF16} {
				e := testEngine(t, m, Options{KVCacheDType: kv, BlockSize: 8})
				if got := e.KVCacheDType(); got != kv {
					t.Fatalf("engine made a %s cache, asked for %s", got, kv)
				}
				if err := e.Add(Request{ID: "a", Prompt: prompt, Params: greedy(1)}); err != nil {
					t.Fatal(err)
				}
				rows[kv] = rowLogits(t, e, "a", len(prompt))
				p := greedy(24)
				p.TopLogprobs = 2
				g := testEngine(t, m, Options{KVCacheDType: kv, BlockSize: 8})
				if err := g.Add(Request{ID: "g", Prompt: prompt, Params: p}); err != nil {
					t.Fatal(err)
				}
				outs[kv] = drain(t, g)
			}
			worst := 0.0
			for i := range rows[KVFP32] {
				worst = max(worst, maxAbsDiff(rows[KVBF16][i], rows[KVFP32][i])/std(rows[KVFP32][i]))
			}
			t.Logf("prompt rows: max |Δlogit| = %.4f std", worst)
			if worst > bf16KVTol {
				t.Fatalf("bf16 KV moves the prompt's logits by %.4f std > %v", worst, bf16KVTol)
			}
			want, got := outs[KVFP32], outs[KVBF16]
			compared := 0
			for i := range min(len(want), len(got)) {
				if want[i].Token != got[i].Token {
					t.Fatalf("token %d: bf16 KV chose %d, fp32 KV %d, with no near tie before it", i, got[i].Token, want[i].Token)
				}
				if d := float64(got[i].Logprob.Logprob - want[i].Logprob.Logprob); d > bf16KVTol || d < -bf16KVTol {
					t.Fatalf("token %d: logprob %v with bf16 KV, %v with fp32", i, got[i].Logprob.Logprob, want[i].Logprob.Logprob)
				}
				compared++
				if top := want[i].TopLogprobs; top[0].Logprob-top[1].Logprob < kvTieMargin {
					t.Logf("near tie at token %d (margin %.4f): later tokens may differ", i, top[0].Logprob-top[1].Logprob)
					break
				}
			}
			t.Logf("%d of %d greedy tokens compared", compared, len(want))
			if compared < 4 {
				t.Fatalf("only %d tokens before a near tie: the test shows nothing", compared)
			}
		})
	}
}

// TestKVCacheDType: the auto dtype follows the weights on the CPU (bf16
// for bf16 weights; fp32 for fp32 and for f16, which the CPU runs in
// fp32), an explicit one wins, and the cache's size halves in bf16.
func TestKVCacheDType(t *testing.T) {
	cases := []struct {
		weights string
		opt     KVCacheDType
		want    KVCacheDType
	}{
		{"f32", KVAuto, KVFP32},
		{"bf16", KVAuto, KVBF16},
		{"f16", KVAuto, KVFP32},
		{"f32", KVBF16, KVBF16},
		{"bf16", KVFP32, KVFP32},
		{"f32", "", KVFP32},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/%s", c.weights, c.opt), func(t *testing.T) {
			m := testModel(t, "tiny", c.weights, "auto")
			const budget = 1 << 20
			e := testEngine(t, m, Options{KVCacheDType: c.opt, KVCacheBytes: budget, BlockSize: 16})
			if got := e.KVCacheDType(); got != c.want {
				t.Fatalf("KV cache dtype %s, want %s", got, c.want)
			}
			_, total := e.KVBlocks()
			size := compute.F32.Size()
			if c.want == KVBF16 {
				size = compute.BF16.Size()
			}
			perBlock := 2 * m.cfg.Layers * m.attnSpec.KVHeads * m.cfg.HeadDim * 16 * size
			if total != budget/perBlock {
				t.Fatalf("%d blocks in %d bytes, want %d of %d bytes", total, budget, budget/perBlock, perBlock)
			}
		})
	}
	for _, c := range []struct {
		in   string
		want KVCacheDType
		ok   bool
	}{{"auto", KVAuto, true}, {"", KVAuto, true}, {"fp32", KVFP32, true}, {"float32", KVFP32, true},
		{"bf16", KVBF16, true}, {"BFloat16", KVBF16, true}, {"fp8", "", false}, {"f16", "", false}} {
		got, err := ParseKVCacheDType(c.in)
		if got != c.want || (err == nil) != c.ok {
			t.Errorf("ParseKVCacheDType(%q) = %q, %v", c.in, got, err)
		}
	}
}
