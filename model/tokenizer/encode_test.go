package tokenizer

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	tiktoken "github.com/tiktoken-go/tokenizer"
)

// TestGPT2MatchesTiktoken checks GPT2JSON's tokenizer against tiktoken's
// independent rank-based GPT-2 encoder on a generated corpus.
func TestGPT2MatchesTiktoken(t *testing.T) {
	tok := gpt2(t)
	ref, err := tiktoken.Get(tiktoken.R50kBase)
	if err != nil {
		t.Fatal(err)
	}
	n := 10000
	if testing.Short() {
		n = 1000
	}
	r := rand.New(rand.NewPCG(7, 7))
	for range n {
		s := randomText(r, true)
		// tiktoken-go's generated GPT-2 matcher skips U+007F, and it does
		// not know <|endoftext|>; neither is what this test is about.
		s = strings.ReplaceAll(s, "\x7f", "")
		want, _, err := ref.Encode(s)
		if err != nil {
			t.Fatal(err)
		}
		got := tok.Encode(s, false)
		ok := len(got) == len(want)
		for i := 0; ok && i < len(got); i++ {
			ok = uint(got[i]) == want[i]
		}
		if !ok {
			t.Fatalf("%q:\n got %v\nwant %v", s, got, want)
		}
	}
}

type goldenRow struct {
	Text    string  `json:"text"`
	Special bool    `json:"special"`
	IDs     []int32 `json:"ids"`
}

// TestGolden compares with encodings made by Hugging Face's JavaScript
// implementation (testdata/golden/gen.mjs).
func TestGolden(t *testing.T) {
	for _, name := range []string{"gpt2", "llama3", "qwen3", "sentencepiece", "metaspace"} {
		t.Run(name, func(t *testing.T) {
			tok := testTokenizer(t, name)
			data, err := os.ReadFile(filepath.Join("testdata", "golden", name+".json"))
			if err != nil {
				t.Fatal(err)
			}
			var rows []goldenRow
			if err := json.Unmarshal(data, &rows); err != nil {
				t.Fatal(err)
			}
			if len(rows) < 100 {
				t.Fatalf("only %d golden rows", len(rows))
			}
			for _, row := range rows {
				if got := tok.Encode(row.Text, row.Special); !equalIDs(got, row.IDs) {
					t.Errorf("%q (special %v):\n got %v\nwant %v", row.Text, row.Special, got, row.IDs)
				}
			}
		})
	}
}

// TestRoundTrip checks Decode(Encode(s)) == s for random Unicode text, and
// that invalid UTF-8 comes back with U+FFFD in place of each maximal
// invalid subsequence.
func TestRoundTrip(t *testing.T) {
	toks := map[string]*Tokenizer{"gpt2": gpt2(t)}
	for _, name := range realFiles {
		toks[name] = realTokenizer(t, name)
	}
	n := 3000
	if testing.Short() {
		n = 300
	}
	for name, tok := range toks {
		t.Run(name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(3, uint64(len(name))))
			for i := range n {
				s := randomText(r, true)
				if i%5 == 0 {
					s = withInvalidUTF8(r, s)
				}
				want := s
				if tok.norm != nil {
					want = tok.norm.normalize(want) // Qwen3 applies NFC
				}
				want = lossyUTF8([]byte(want))
				ids := tok.Encode(s, false)
				got, err := tok.Decode(ids, false)
				if err != nil {
					t.Fatal(err)
				}
				if got != want {
					t.Fatalf("%q: decoded %q", s, got)
				}
				if !utf8.ValidString(got) {
					t.Fatalf("%q: decoded invalid UTF-8 %q", s, got)
				}
			}
		})
	}
}

func TestSpecialTokens(t *testing.T) {
	llama := realTokenizer(t, "llama3")
	qwen := realTokenizer(t, "qwen3")
	tests := []struct {
		name string
		tok  *Tokenizer
		text string
		skip bool
		want string
	}{
		{"llama keeps", llama, "<|begin_of_text|>Hi<|eot_id|>", false, "<|begin_of_text|>Hi<|eot_id|>"},
		{"llama skips", llama, "<|begin_of_text|>Hi<|eot_id|>", true, "Hi"},
		{"qwen skips special only", qwen, "<|im_start|>user\n<think>x</think><|im_end|>", true, "user\n<think>x</think>"},
	}
	for _, tt := range tests {
		ids := tt.tok.Encode(tt.text, false)
		got, err := tt.tok.Decode(ids, tt.skip)
		if err != nil || got != tt.want {
			t.Errorf("%s: got %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
	if id, ok := llama.TokenID("<|eot_id|>"); !ok || id != 128009 {
		t.Errorf("llama <|eot_id|> = %d, %v", id, ok)
	}
	if id, ok := llama.BOS(); !ok || id != 128000 {
		t.Errorf("llama BOS = %d, %v", id, ok)
	}
	if id, ok := qwen.EOS(); !ok || id != 151643 {
		t.Errorf("qwen EOS = %d, %v", id, ok)
	}
	if !llama.IsSpecial(128000) || llama.IsSpecial(9906) {
		t.Error("IsSpecial wrong for llama")
	}
	if got := llama.VocabSize(); got != 128256 {
		t.Errorf("llama VocabSize = %d", got)
	}
}
