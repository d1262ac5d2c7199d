package dataset

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzFiles feeds arbitrary bytes to both file readers: each either
// returns prompts or an ErrInvalid naming the file, never panics.
func FuzzFiles(f *testing.F) {
	for _, name := range []string{"sharegpt.json", "prompts.jsonl", "bad_syntax.jsonl", "bad_sharegpt.json"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	tok := gpt2(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "data")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, load := range []func(Tokenizer, FileOptions) ([]Request, error){JSONL, ShareGPT} {
			reqs, err := load(tok, FileOptions{Path: path, Num: 3})
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			if err == nil && len(reqs) != 3 {
				t.Fatalf("%d prompts, want 3", len(reqs))
			}
		}
	})
}
