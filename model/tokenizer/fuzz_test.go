package tokenizer

import (
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"
)

// FuzzParse feeds arbitrary bytes to Parse: it must return a tokenizer or
// an error, never panic, and a tokenizer it returns must encode and decode.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"sentencepiece-bytefallback.json", "metaspace.json", "bad/merge-unknown.json"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}, "pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"}}`))
	f.Add([]byte(`{"added_tokens": [{"id": 3, "content": "<x>", "lstrip": true, "rstrip": true, "single_word": true}], "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}, {"type": "Strip", "strip_left": true}]}, "model": {"vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"], "unk_token": "a", "fuse_unk": true}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tok, err := Parse(data)
		if err != nil {
			return
		}
		for _, s := range []string{"", "ab ba <x> abab", "\xff a\u00e9 <s>"} {
			ids := tok.Encode(s, true)
			text, err := tok.Decode(ids, false)
			if err != nil {
				t.Fatalf("Decode(Encode(%q)) = %v", s, err)
			}
			if !utf8.ValidString(text) {
				t.Fatalf("Decode returned invalid UTF-8 %q", text)
			}
			d := tok.NewStreamDecoder(false)
			for _, id := range ids {
				if _, err := d.Add(id); err != nil {
					t.Fatal(err)
				}
			}
			d.Flush()
		}
	})
}

// FuzzEncodeDecode checks that GPT-2 round-trips any valid UTF-8 exactly
// and any other input up to U+FFFD replacement.
func FuzzEncodeDecode(f *testing.F) {
	for _, s := range []string{"Hello, world!", "  \n\n\t x", "I'll 12345 🎉", "\xff\xfe<|endoftext|>", "e\u0301"} {
		f.Add(s)
	}
	tok := gpt2(f)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := tok.Decode(tok.Encode(s, false), false)
		if err != nil {
			t.Fatal(err)
		}
		if want := lossyUTF8([]byte(s)); got != want {
			t.Fatalf("%q: decoded %q, want %q", s, got, want)
		}
	})
}
