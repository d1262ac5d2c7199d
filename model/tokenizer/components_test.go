package tokenizer

import (
	"encoding/json"
	"reflect"
	"sync"
	"testing"
)

// TestSplitBehaviors uses the examples of Hugging Face's documentation of
// SplitDelimiterBehavior.
func TestSplitBehaviors(t *testing.T) {
	const in = "the-final--countdown"
	tests := []struct {
		behavior string
		invert   bool
		want     []string
	}{
		{splitRemoved, false, []string{"the", "final", "countdown"}},
		{splitIsolated, false, []string{"the", "-", "final", "-", "-", "countdown"}},
		{splitMergedWithPrevious, false, []string{"the-", "final-", "-", "countdown"}},
		{splitMergedWithNext, false, []string{"the", "-final", "-", "-countdown"}},
		{splitContiguous, false, []string{"the", "-", "final", "--", "countdown"}},
		{splitRemoved, true, []string{"-", "-", "-"}},
	}
	for _, tt := range tests {
		p := &splitPre{pat: &pattern{literal: "-"}, behavior: tt.behavior, invert: tt.invert}
		if got := p.split([]string{"before"}, in, true); !reflect.DeepEqual(got[1:], tt.want) || got[0] != "before" {
			t.Errorf("%s invert=%v: got %q, want %q", tt.behavior, tt.invert, got, tt.want)
		}
	}
}

func TestMetaspacePrependScheme(t *testing.T) {
	tests := []struct {
		scheme  string
		atStart bool
		want    []string
	}{
		{"always", false, []string{"▁hello", "▁world"}},
		{"first", true, []string{"▁hello", "▁world"}},
		{"first", false, []string{"hello", "▁world"}},
		{"never", true, []string{"hello", "▁world"}},
	}
	for _, tt := range tests {
		p := &metaspacePre{replacement: "▁", prepend: tt.scheme, splitOnMark: true}
		if got := p.split(nil, "hello world", tt.atStart); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s atStart=%v: got %q, want %q", tt.scheme, tt.atStart, got, tt.want)
		}
	}
}

func TestAddedTokenOptions(t *testing.T) {
	tests := []struct {
		name string
		tok  AddedToken
		in   string
		want []string // pieces; added tokens in <>
	}{
		{"plain", AddedToken{ID: 1, Content: "<x>"}, "a <x> b", []string{"a ", "<<x>>", " b"}},
		{"lstrip", AddedToken{ID: 1, Content: "<x>", LStrip: true}, "a  <x> b", []string{"a", "<  <x>>", " b"}},
		{"rstrip", AddedToken{ID: 1, Content: "<x>", RStrip: true}, "a <x>  b", []string{"a ", "<<x>  >", "b"}},
		{"single word inside a word", AddedToken{ID: 1, Content: "ab", SingleWord: true}, "xab ab", []string{"xab ", "<ab>"}},
		{"longest first", AddedToken{ID: 1, Content: "<x"}, "<xy>", []string{"<<xy>>"}},
	}
	for _, tt := range tests {
		toks := []AddedToken{tt.tok, {ID: 2, Content: "<xy>"}}
		var got []string
		newAddedMatcher(toks).split(tt.in, func(s string, id int32) {
			if id >= 0 {
				s = "<" + s + ">"
			}
			got = append(got, s)
		})
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

// tinyJSON returns a small BPE tokenizer.json with the given extra
// top-level fields and model options.
func tinyJSON(t *testing.T, top map[string]any, model map[string]any) []byte {
	t.Helper()
	m := map[string]any{
		"type":   "BPE",
		"vocab":  map[string]int{"<unk>": 0, "<s>": 1, "</s>": 2, "a": 3, "b": 4, "c": 5, "ab": 6, "abc": 7, "bc": 8},
		"merges": []string{"a b", "ab c", "b c"},
	}
	for k, v := range model {
		m[k] = v
	}
	f := map[string]any{"model": m, "added_tokens": []map[string]any{
		{"id": 1, "content": "<s>", "special": true}, {"id": 2, "content": "</s>", "special": true},
	}}
	for k, v := range top {
		f[k] = v
	}
	data, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestModelOptionsAndPostProcessors(t *testing.T) {
	bert := map[string]any{"type": "BertProcessing", "sep": []any{"</s>", 2}, "cls": []any{"<s>", 1}}
	template := map[string]any{"type": "TemplateProcessing",
		"single":         []any{map[string]any{"SpecialToken": map[string]any{"id": "<s>"}}, map[string]any{"Sequence": map[string]any{"id": "A"}}, map[string]any{"SpecialToken": map[string]any{"id": "</s>"}}},
		"special_tokens": map[string]any{"<s>": map[string]any{"ids": []int{1}}, "</s>": map[string]any{"ids": []int{2}}}}
	tests := []struct {
		name       string
		top, model map[string]any
		in         string
		special    bool
		want       []int32
	}{
		{"merges", nil, nil, "abcab", false, []int32{7, 6}},
		{"merge order", nil, nil, "bcab", false, []int32{8, 6}},
		{"unknown chars dropped without unk", nil, nil, "axb", false, []int32{6}}, // as in Hugging Face, the neighbours then merge
		{"unk", nil, map[string]any{"unk_token": "<unk>"}, "axyb", false, []int32{3, 0, 0, 4}},
		{"fuse unk", nil, map[string]any{"unk_token": "<unk>", "fuse_unk": true}, "axyb", false, []int32{3, 0, 4}},
		{"ignore merges", nil, map[string]any{"ignore_merges": true, "merges": []string{"a b", "b c"}}, "abc", false, []int32{7}},
		{"no ignore merges", nil, map[string]any{"merges": []string{"a b", "b c"}}, "abc", false, []int32{6, 5}},
		{"bert", map[string]any{"post_processor": bert}, nil, "ab", true, []int32{1, 6, 2}},
		{"template", map[string]any{"post_processor": template}, nil, "ab", true, []int32{1, 6, 2}},
		{"template off", map[string]any{"post_processor": template}, nil, "ab", false, []int32{6}},
		{"lowercase and strip", map[string]any{"normalizer": map[string]any{"type": "Sequence", "normalizers": []any{
			map[string]any{"type": "Lowercase"}, map[string]any{"type": "Strip", "strip_left": true, "strip_right": true}}}}, nil, "  ABC ", false, []int32{7}},
		{"NFKC", map[string]any{"normalizer": map[string]any{"type": "NFKC"}}, nil, "ａｂｃ", false, []int32{7}},
		{"regex split", map[string]any{"pre_tokenizer": map[string]any{"type": "Split", "pattern": map[string]any{"Regex": "c+"}, "behavior": "Isolated"}}, nil, "abcab", false, []int32{6, 5, 6}},
		{"added token in text", nil, nil, "ab<s>c", false, []int32{6, 1, 5}},
		{"normalized added token", map[string]any{"normalizer": map[string]any{"type": "Lowercase"}, "added_tokens": []map[string]any{
			{"id": 9, "content": "<X>", "normalized": true}, {"id": 1, "content": "<S>"}}}, nil, "A<X>b<x><S><s>", false, []int32{3, 9, 4, 9, 1}}, // <s> is plain text here: chars not in the vocab
	}
	for _, tt := range tests {
		tok, err := Parse(tinyJSON(t, tt.top, tt.model))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := tok.Encode(tt.in, tt.special); !equalIDs(got, tt.want) {
			t.Errorf("%s: Encode(%q) = %v, want %v", tt.name, tt.in, got, tt.want)
		}
	}
}

// TestConcurrentEncode shares one tokenizer (and its word cache) between
// goroutines; run with -race.
func TestConcurrentEncode(t *testing.T) {
	tok := gpt2(t)
	texts := []string{"Hello, world!", "The quick brown fox", "I'll be there at 10:30", "日本語 🎉"}
	want := make([][]int32, len(texts))
	for i, s := range texts {
		want[i] = tok.Encode(s, false)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				k := (g + i) % len(texts)
				if got := tok.Encode(texts[k], false); !equalIDs(got, want[k]) {
					t.Errorf("goroutine %d: %q = %v, want %v", g, texts[k], got, want[k])
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestWordCacheBounded(t *testing.T) {
	c := newWordCache(4)
	for i := range 10 {
		c.put(string(rune('a'+i)), []int32{int32(i)})
		if len(c.m) > 4 {
			t.Fatalf("cache holds %d words, capacity 4", len(c.m))
		}
	}
	if ids, ok := c.get("j"); !ok || ids[0] != 9 {
		t.Fatalf("latest word missing: %v %v", ids, ok)
	}
	long := string(make([]byte, maxCachedWord+1))
	c.put(long, []int32{1})
	if _, ok := c.get(long); ok {
		t.Fatal("cached a word longer than maxCachedWord")
	}
}
