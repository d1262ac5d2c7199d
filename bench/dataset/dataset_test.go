package dataset

import (
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/tandemllm/tandem/model/tokenizer"
)

func gpt2(t testing.TB) *tokenizer.Tokenizer {
	t.Helper()
	tok, err := tokenizer.GPT2Tokenizer(tokenizer.GPT2VocabSize)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestRandomExactLengths(t *testing.T) {
	tok := gpt2(t)
	tests := []struct {
		name string
		o    RandomOptions
	}{
		{"fixed", RandomOptions{InputLen: 64, OutputLen: 16, Num: 20, Seed: 1}},
		{"ranged", RandomOptions{InputLen: 100, OutputLen: 10, RangeRatio: 0.5, Num: 30, Seed: 2}},
		{"one token", RandomOptions{InputLen: 1, OutputLen: 1, Num: 5, Seed: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reqs, err := Random(tok, tt.o)
			if err != nil {
				t.Fatal(err)
			}
			if len(reqs) != tt.o.Num {
				t.Fatalf("%d prompts, want %d", len(reqs), tt.o.Num)
			}
			r := tt.o.RangeRatio
			for i, q := range reqs {
				if n := len(tok.Encode(q.Prompt, true)); n != q.PromptLen {
					t.Errorf("prompt %d: encodes to %d tokens, PromptLen says %d", i, n, q.PromptLen)
				}
				if lo, hi := float64(tt.o.InputLen)*(1-r)-1, float64(tt.o.InputLen)*(1+r)+1; float64(q.PromptLen) < lo || float64(q.PromptLen) > hi {
					t.Errorf("prompt %d: %d tokens, outside [%v, %v]", i, q.PromptLen, lo, hi)
				}
				if lo, hi := float64(tt.o.OutputLen)*(1-r)-1, float64(tt.o.OutputLen)*(1+r)+1; q.OutputLen < 1 || float64(q.OutputLen) < lo || float64(q.OutputLen) > hi {
					t.Errorf("prompt %d: output %d, outside [%v, %v]", i, q.OutputLen, lo, hi)
				}
			}
			if r == 0 {
				for i, q := range reqs {
					if q.PromptLen != tt.o.InputLen || q.OutputLen != tt.o.OutputLen {
						t.Errorf("prompt %d: %d/%d tokens, want exactly %d/%d", i, q.PromptLen, q.OutputLen, tt.o.InputLen, tt.o.OutputLen)
					}
				}
			}
		})
	}
}

func TestRandomSeed(t *testing.T) {
	tok := gpt2(t)
	o := RandomOptions{InputLen: 32, OutputLen: 8, RangeRatio: 0.25, Num: 10, Seed: 42}
	a, err := Random(tok, o)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Random(tok, o)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("one seed gave two different workloads")
	}
	o.Seed = 43
	c, _ := Random(tok, o)
	if reflect.DeepEqual(a, c) {
		t.Fatal("seeds 42 and 43 gave the same workload")
	}
	seen := map[string]bool{}
	for _, q := range a {
		seen[q.Prompt] = true
	}
	if len(seen) != len(a) {
		t.Fatalf("%d distinct prompts of %d", len(seen), len(a))
	}
}

func TestRandomBadOptions(t *testing.T) {
	tok := gpt2(t)
	tests := []struct {
		o    RandomOptions
		flag string
	}{
		{RandomOptions{InputLen: 8, OutputLen: 8, Num: 0}, "--num-prompts"},
		{RandomOptions{InputLen: 0, OutputLen: 8, Num: 1}, "--random-input-len"},
		{RandomOptions{InputLen: 8, OutputLen: 0, Num: 1}, "--random-output-len"},
		{RandomOptions{InputLen: 8, OutputLen: 8, Num: 1, RangeRatio: 1}, "--random-range-ratio"},
		{RandomOptions{InputLen: 8, OutputLen: 8, Num: 1, RangeRatio: -0.1}, "--random-range-ratio"},
	}
	for _, tt := range tests {
		_, err := Random(tok, tt.o)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.flag) {
			t.Errorf("%+v: %v, want an error naming %s", tt.o, err, tt.flag)
		}
	}
}

func TestShareGPT(t *testing.T) {
	tok := gpt2(t)
	o := FileOptions{Path: filepath.Join("testdata", "sharegpt.json"), Num: 5, Seed: 1}
	reqs, err := ShareGPT(tok, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(reqs) != 5 {
		t.Fatalf("%d prompts, want 5 (two usable conversations, used again in order)", len(reqs))
	}
	prompts := map[string]bool{}
	for _, q := range reqs {
		prompts[q.Prompt] = true
		if q.PromptLen != len(tok.Encode(q.Prompt, true)) || q.OutputLen < 4 {
			t.Errorf("%+v: lengths disagree with the tokenizer", q)
		}
	}
	// "b" has no reply and "d"'s prompt is shorter than 4 tokens.
	if len(prompts) != 2 || prompts["Hi"] || prompts["A lonely turn with no reply."] {
		t.Fatalf("prompts used: %v", prompts)
	}
	if reqs[0] != reqs[2] || reqs[1] != reqs[3] {
		t.Fatal("a short sample was not repeated in order")
	}
	o.OutputLen = 7
	fixed, err := ShareGPT(tok, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range fixed {
		if q.OutputLen != 7 {
			t.Fatalf("--sharegpt-output-len 7: got %d", q.OutputLen)
		}
	}
	again, _ := ShareGPT(tok, FileOptions{Path: o.Path, Num: 5, Seed: 1})
	if !reflect.DeepEqual(reqs, again) {
		t.Fatal("one seed gave two different samples")
	}
}

func TestJSONL(t *testing.T) {
	tok := gpt2(t)
	reqs, err := JSONL(tok, FileOptions{Path: filepath.Join("testdata", "prompts.jsonl"), Num: 3})
	if err != nil {
		t.Fatal(err)
	}
	want := []int{12, DefaultOutputLen, 40}
	for i, q := range reqs {
		if q.OutputLen != want[i] {
			t.Errorf("line %d: output %d, want %d", i, q.OutputLen, want[i])
		}
	}
	if !strings.HasPrefix(reqs[0].Prompt, "Summarize") || !strings.HasPrefix(reqs[2].Prompt, "Explain") {
		t.Fatalf("prompts out of file order: %q, %q", reqs[0].Prompt, reqs[2].Prompt)
	}
}

func TestFileErrors(t *testing.T) {
	tok := gpt2(t)
	tests := []struct {
		name, path string
		load       func(Tokenizer, FileOptions) ([]Request, error)
		want       string
	}{
		{"missing", "testdata/nope.jsonl", JSONL, "--dataset-path"},
		{"no path", "", JSONL, "--dataset-path is required"},
		{"syntax", "testdata/bad_syntax.jsonl", JSONL, "line 3"},
		{"no prompt", "testdata/no_prompt.jsonl", JSONL, `line 2: no "prompt"`},
		{"zero output", "testdata/zero_output.jsonl", JSONL, `line 3: "output_tokens" 0`},
		{"sharegpt type", "testdata/bad_sharegpt.json", ShareGPT, "line 3"},
		{"sharegpt not an array", "testdata/prompts.jsonl", ShareGPT, "line 1"},
		{"sharegpt missing", "testdata/nope.json", ShareGPT, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.load(tok, FileOptions{Path: tt.path, Num: 2})
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestPrefixRepetition: prompts come NumPrefixes to a prefix, shuffled,
// each encoding to exactly its prefix's tokens then its own suffix's, the
// same options giving the same prompts; bad options name their flag.
func TestPrefixRepetition(t *testing.T) {
	tok := gpt2(t)
	o := PrefixRepetitionOptions{PrefixLen: 48, SuffixLen: 9, OutputLen: 5, NumPrefixes: 3, Num: 20, Seed: 4}
	reqs, err := PrefixRepetition(tok, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(reqs) != 18 {
		t.Fatalf("%d prompts, want 18 (6 for each of 3 prefixes)", len(reqs))
	}
	byPrefix := map[string]int{}
	var order []string
	for i, q := range reqs {
		ids := tok.Encode(q.Prompt, true)
		if len(ids) != q.PromptLen || q.PromptLen != 57 || q.OutputLen != 5 {
			t.Fatalf("prompt %d: %d tokens (PromptLen %d, output %d), want 57 and 5", i, len(ids), q.PromptLen, q.OutputLen)
		}
		key := fmt.Sprint(ids[:48])
		byPrefix[key]++
		order = append(order, key)
	}
	if len(byPrefix) != 3 {
		t.Fatalf("%d distinct prefixes, want 3", len(byPrefix))
	}
	for _, n := range byPrefix {
		if n != 6 {
			t.Fatalf("prefix counts %v, want 6 each", byPrefix)
		}
	}
	changes := 0
	for i := 1; i < len(order); i++ {
		if order[i] != order[i-1] {
			changes++
		}
	}
	if changes <= 2 {
		t.Error("prompts come grouped by prefix: not shuffled")
	}
	again, err := PrefixRepetition(tok, o)
	if err != nil || !reflect.DeepEqual(again, reqs) {
		t.Fatalf("same options, other prompts (err %v)", err)
	}
	for _, c := range []struct {
		o    PrefixRepetitionOptions
		flag string
	}{
		{PrefixRepetitionOptions{SuffixLen: 1, OutputLen: 1, NumPrefixes: 1, Num: 1}, "--prefix-repetition-prefix-len"},
		{PrefixRepetitionOptions{PrefixLen: 1, OutputLen: 1, NumPrefixes: 1, Num: 1}, "--prefix-repetition-suffix-len"},
		{PrefixRepetitionOptions{PrefixLen: 1, SuffixLen: 1, NumPrefixes: 1, Num: 1}, "--prefix-repetition-output-len"},
		{PrefixRepetitionOptions{PrefixLen: 1, SuffixLen: 1, OutputLen: 1, Num: 1}, "--prefix-repetition-num-prefixes"},
		{PrefixRepetitionOptions{PrefixLen: 1, SuffixLen: 1, OutputLen: 1, NumPrefixes: 4, Num: 3}, "--num-prompts"},
	} {
		if _, err := PrefixRepetition(tok, c.o); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.flag) {
			t.Errorf("%+v: %v, want ErrInvalid naming %s", c.o, err, c.flag)
		}
	}
}
