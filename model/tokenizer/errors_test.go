package tokenizer

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	const vocab = `"vocab": {"a": 0, "b": 1, "ab": 2}`
	tests := []struct {
		name, json, want string
	}{
		{"malformed JSON", `{"model": `, "malformed JSON"},
		{"not an object", `[1, 2]`, "malformed JSON"},
		{"no model", `{}`, "no model"},
		{"unsupported model", `{"model": {"type": "WordPiece", "vocab": {"a": 0}}}`, `"WordPiece"`},
		{"missing vocab", `{"model": {"type": "BPE", "merges": []}}`, "missing vocab"},
		{"empty vocab", `{"model": {"type": "BPE", "vocab": {}, "merges": []}}`, "empty vocab"},
		{"missing merges", `{"model": {"type": "BPE", ` + vocab + `}}`, "missing merges"},
		{"merge names unknown token", `{"model": {"type": "BPE", ` + vocab + `, "merges": ["a c"]}}`, `merges[0] "a" "c" names a token not in the vocab`},
		{"merge makes unknown token", `{"model": {"type": "BPE", ` + vocab + `, "merges": ["b a"]}}`, `makes "ba"`},
		{"merge not a pair", `{"model": {"type": "BPE", ` + vocab + `, "merges": ["ab"]}}`, "not two tokens"},
		{"merge pair of three", `{"model": {"type": "BPE", ` + vocab + `, "merges": [["a", "b", "c"]]}}`, "has 3 tokens"},
		{"duplicate id", `{"model": {"type": "BPE", "vocab": {"a": 0, "b": 0}, "merges": []}}`, `"a" and "b" share id 0`},
		{"negative id", `{"model": {"type": "BPE", "vocab": {"a": -1}, "merges": []}}`, "id -1 out of range"},
		{"huge id", `{"model": {"type": "BPE", "vocab": {"a": 99999999}, "merges": []}}`, "id 99999999 out of range"},
		{"added token without id", `{"added_tokens": [{"content": "<x>"}], "model": {"type": "BPE", ` + vocab + `, "merges": []}}`, `"<x>": no id`},
		{"added tokens clash", `{"added_tokens": [{"id": 3, "content": "<x>"}, {"id": 3, "content": "<y>"}], "model": {"type": "BPE", ` + vocab + `, "merges": []}}`, "already taken"},
		{"unknown unk", `{"model": {"type": "BPE", ` + vocab + `, "merges": [], "unk_token": "<unk>"}}`, `unk_token "<unk>"`},
		{"unknown normalizer", `{"normalizer": {"type": "Fancy"}, "model": {"type": "BPE", ` + vocab + `, "merges": []}}`, `normalizer: unsupported type "Fancy"`},
		{"unknown pre_tokenizer", `{"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Juggle"}]}, "model": {"type": "BPE", ` + vocab + `, "merges": []}}`, `pre_tokenizer Sequence[0]: pre_tokenizer: unsupported type "Juggle"`},
		{"unknown decoder", `{"decoder": {"type": "CTC"}, "model": {"type": "BPE", ` + vocab + `, "merges": []}}`, `decoder: unsupported type "CTC"`},
		{"unknown post_processor", `{"post_processor": {"type": "Magic"}, "model": {"type": "BPE", ` + vocab + `, "merges": []}}`, `post_processor: unsupported type "Magic"`},
		{"component without type", `{"decoder": {}, "model": {"type": "BPE", ` + vocab + `, "merges": []}}`, "no type"},
		{"bad regex", `{"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(("}, "behavior": "Isolated"}, "model": {"type": "BPE", ` + vocab + `, "merges": []}}`, `pattern "(("`},
		{"bad split behavior", `{"pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "Sideways"}, "model": {"type": "BPE", ` + vocab + `, "merges": []}}`, `unknown behavior "Sideways"`},
		{"template names unknown token", `{"post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}], "special_tokens": {}}, "model": {"type": "BPE", ` + vocab + `, "merges": []}}`, `special token "<s>" not in special_tokens`},
		{"template id out of range", `{"post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}], "special_tokens": {"<s>": {"ids": [7]}}}, "model": {"type": "BPE", ` + vocab + `, "merges": []}}`, "id 7 is not a token id"},
		{"subword prefix", `{"model": {"type": "BPE", ` + vocab + `, "merges": [], "continuing_subword_prefix": "##"}}`, "continuing_subword_prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.json))
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.want) || !strings.HasPrefix(msg, "tokenizer.json: ") {
				t.Errorf("error %q does not name the file and %q", msg, tt.want)
			}
		})
	}
}

func TestLoadErrorsNameThePath(t *testing.T) {
	path := filepath.Join("testdata", "bad", "merge-unknown.json")
	_, err := Load(path)
	if err == nil || !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), path+": ") {
		t.Fatalf("Load(%s) = %v", path, err)
	}
	missing := filepath.Join("testdata", "no-such-file.json")
	if _, err := Load(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("Load(%s) = %v", missing, err)
	}
}

func TestDecodeUnknownID(t *testing.T) {
	tok := gpt2(t)
	for _, id := range []int32{-1, GPT2VocabSize, 1 << 30} {
		if _, err := tok.Decode([]int32{1, id}, false); !errors.Is(err, ErrUnknownID) {
			t.Errorf("Decode(%d) error %v, want ErrUnknownID", id, err)
		}
	}
}
