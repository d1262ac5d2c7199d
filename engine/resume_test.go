package engine

import (
	"fmt"
	"slices"
	"testing"
)

// TestResumeSamplesTheSame: a request cut after k tokens and resumed from
// its prompt plus those tokens (what a migration to another group does)
// produces the tokens the uninterrupted run produced, for greedy and
// seeded sampling, whether the rest runs as a new request or as a
// prefilled one whose prompt is recomputed.
func TestResumeSamplesTheSame(t *testing.T) {
	m := testModel(t, "tiny", "f32", "auto")
	seed := uint64(7)
	params := map[string]SamplingParams{
		"greedy":        {IgnoreEOS: true, Logprobs: true},
		"seeded":        {Temperature: 1, Seed: &seed, IgnoreEOS: true, Logprobs: true},
		"seeded top-kp": {Temperature: 0.8, TopK: 40, TopP: 0.9, Seed: &seed, IgnoreEOS: true, Logprobs: true},
	}
	const n = 24
	prompt := testPrompt(11, m.cfg.VocabSize, 3)
	for name, p := range params {
		t.Run(name, func(t *testing.T) {
			p.MaxTokens = n
			whole := testEngine(t, m, Options{})
			if err := whole.Add(Request{ID: "a", Prompt: prompt, Params: p}); err != nil {
				t.Fatal(err)
			}
			want := run(t, whole)["a"]
			for _, k := range []int{1, 5, n - 1} {
				rest := p
				rest.MaxTokens = n - k
				resumed := append(slices.Clone(prompt), want.tokens[:k]...)
				e := testEngine(t, m, Options{})
				if err := e.Add(Request{ID: "b", Prompt: resumed, Params: rest}); err != nil {
					t.Fatal(err)
				}
				got := run(t, e)["b"]
				tail := &result{tokens: want.tokens[k:], logprobs: want.logprobs[k:], finish: want.finish}
				sameResult(t, fmt.Sprintf("resumed as a new request after %d tokens", k), got, tail, reorderTol)

				// A decode group taking over recomputes the prompt and
				// continues from the last token already sent.
				rest.MaxTokens = n - k + 1
				e = testEngine(t, m, Options{})
				if err := e.AddPrefilled(Request{ID: "c", Prompt: resumed[:len(resumed)-1], Params: rest}, want.tokens[k-1], false); err != nil {
					t.Fatal(err)
				}
				res := map[string]*result{}
				collect(res, drain(t, e))
				got = res["c"]
				sameResult(t, fmt.Sprintf("resumed as a prefilled request after %d tokens", k), got, tail, reorderTol)
			}
		})
	}
}
