package engine

import (
	"fmt"
	"testing"

	"github.com/tandemllm/tandem/compute"
)

// Tolerances of a 16-bit KV cache against an fp32 one, the weights being
// the same fp32. Keys and values rounded to bf16 (8 mantissa bits, a
// relative error of at most 2^-9) or to fp16 (11 bits, 2^-12) move the
// logits by a small fraction of their spread; a greedy token can only
// change where fp32's two best logprobs are closer than kvTieMargin.
const (
	halfKVTol   = 0.05 // max |Δlogit| / (logit std) of prompt rows; max |Δlogprob| (nats) of generated tokens
	kvTieMargin = 0.05 // nats between fp32's best two tokens below which a step is a near tie
)

// TestHalfKVNearFP32: a bf16 or fp16 KV cache gives the greedy tokens of
// an fp32 one up to the first near tie, with logits (every prompt row and
// every generated token's logprob) within halfKVTol.
func TestHalfKVNearFP32(t *testing.T) {
	for _, name := range testPresets {
		t.Run(name, func(t *testing.T) {
			m := testModel(t, name, "f32", "auto")
			prompt := testPrompt(45, m.cfg.VocabSize, 9)
			rows := map[KVCacheDType][][]float32{}
			outs := map[KVCacheDType][]Output{}
			for _, kv := range []KVCacheDType{KVFP32, KVBF16, KVFP16} {
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
			for _, kv := range []KVCacheDType{KVBF16, KVFP16} {
				compareKV(t, kv, rows[KVFP32], rows[kv], outs[KVFP32], outs[kv])
			}
		})
	}
}

// compareKV holds a kv cache's prompt rows and greedy outputs (got) to an
// fp32 cache's (want): see TestHalfKVNearFP32.
func compareKV(t *testing.T, kv KVCacheDType, want, got [][]float32, wantOut, gotOut []Output) {
	t.Helper()
	worst := 0.0
	for i := range want {
		worst = max(worst, maxAbsDiff(got[i], want[i])/std(want[i]))
	}
	t.Logf("%s: prompt rows: max |Δlogit| = %.4f std", kv, worst)
	if worst > halfKVTol {
		t.Fatalf("%s KV moves the prompt's logits by %.4f std > %v", kv, worst, halfKVTol)
	}
	compared := 0
	for i := range min(len(wantOut), len(gotOut)) {
		if wantOut[i].Token != gotOut[i].Token {
			t.Fatalf("token %d: %s KV chose %d, fp32 KV %d, with no near tie before it", i, kv, gotOut[i].Token, wantOut[i].Token)
		}
		if d := float64(gotOut[i].Logprob.Logprob - wantOut[i].Logprob.Logprob); d > halfKVTol || d < -halfKVTol {
			t.Fatalf("token %d: logprob %v with %s KV, %v with fp32", i, gotOut[i].Logprob.Logprob, kv, wantOut[i].Logprob.Logprob)
		}
		compared++
		if top := wantOut[i].TopLogprobs; top[0].Logprob-top[1].Logprob < kvTieMargin {
			t.Logf("near tie at token %d (margin %.4f): later tokens may differ", i, top[0].Logprob-top[1].Logprob)
			break
		}
	}
	t.Logf("%s: %d of %d greedy tokens compared", kv, compared, len(wantOut))
	if compared < 4 {
		t.Fatalf("%s: only %d tokens before a near tie: the test shows nothing", kv, compared)
	}
}

// TestKVCacheDType: the auto dtype follows the weights on the CPU, an
// explicit one wins, and the cache's size halves in bf16 and fp16.
func TestKVCacheDType(t *testing.T) {
	cases := []struct {
		weights string
		opt     KVCacheDType
		want    KVCacheDType
	}{
		{"f32", KVAuto, KVFP32},
		{"bf16", KVAuto, KVBF16},
		{"f16", KVAuto, KVFP16},
		{"f32", KVFP16, KVFP16},
		{"f16", KVFP32, KVFP32},
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
			if c.want != KVFP32 {
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
		{"bf16", KVBF16, true}, {"BFloat16", KVBF16, true}, {"fp16", KVFP16, true}, {"float16", KVFP16, true}, {"Half", KVFP16, true}, {"fp8", "", false}, {"f8", "", false}} {
		got, err := ParseKVCacheDType(c.in)
		if got != c.want || (err == nil) != c.ok {
			t.Errorf("ParseKVCacheDType(%q) = %q, %v", c.in, got, err)
		}
	}
}
