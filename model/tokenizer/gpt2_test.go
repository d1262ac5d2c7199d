package tokenizer

import (
	"encoding/json"
	"testing"

	tiktoken "github.com/tiktoken-go/tokenizer"
)

func TestGPT2JSONShape(t *testing.T) {
	for _, padTo := range []int{0, GPT2VocabSize, 128256} {
		data, err := GPT2JSON(padTo)
		if err != nil {
			t.Fatal(err)
		}
		var f struct {
			AddedTokens []struct {
				ID      int    `json:"id"`
				Content string `json:"content"`
				Special bool   `json:"special"`
			} `json:"added_tokens"`
			Model struct {
				Vocab  map[string]int `json:"vocab"`
				Merges []string       `json:"merges"`
			} `json:"model"`
		}
		if err := json.Unmarshal(data, &f); err != nil {
			t.Fatalf("padTo %d: not JSON: %v", padTo, err)
		}
		want := max(padTo, GPT2VocabSize)
		if got := len(f.Model.Vocab) + len(f.AddedTokens) - 1; got != want {
			t.Errorf("padTo %d: %d tokens, want %d", padTo, got, want)
		}
		if len(f.Model.Merges) != 50000 {
			t.Errorf("padTo %d: %d merges, want 50000", padTo, len(f.Model.Merges))
		}
		last := f.AddedTokens[len(f.AddedTokens)-1]
		if last.ID != want-1 || !last.Special {
			t.Errorf("padTo %d: last added token %+v", padTo, last)
		}
		tok, err := Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		if tok.VocabSize() != want {
			t.Errorf("padTo %d: VocabSize %d, want %d", padTo, tok.VocabSize(), want)
		}
	}
}

func TestGPT2MatchesTiktokenSmall(t *testing.T) {
	tok, err := GPT2Tokenizer(0)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := tiktoken.Get(tiktoken.R50kBase)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"Hello, world!", "  leading spaces\n\n\ttabs", "I'm don't we'll they've", "12345 67.89", "日本語のテキスト 🎉🎉", "func main() { return x+1 }"} {
		want, _, err := ref.Encode(s)
		if err != nil {
			t.Fatal(err)
		}
		got := tok.Encode(s, false)
		if len(got) != len(want) {
			t.Errorf("%q: got %v want %v", s, got, want)
			continue
		}
		for i := range got {
			if uint(got[i]) != want[i] {
				t.Errorf("%q: got %v want %v", s, got, want)
				break
			}
		}
		back, err := tok.Decode(got, false)
		if err != nil || back != s {
			t.Errorf("%q: decoded %q, %v", s, back, err)
		}
	}
}
