package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tandemllm/tandem/model/tokenizer"
)

func runTokenize(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(append([]string{"tokenize"}, args...))
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestTokenizeCommand(t *testing.T) {
	data, err := tokenizer.GPT2JSON(0)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "tokenizer.json")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	const text = "Hello, wörld! 你好 🙂<|endoftext|>"
	want := tok.Encode(text, false)

	out, err := runTokenize(t, text, "--tokenizer", file, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var ids []int32
	if err := json.Unmarshal([]byte(out), &ids); err != nil || !slices.Equal(ids, want) {
		t.Fatalf("--json printed %q (%v), want %v", out, err, want)
	}
	plain, err := runTokenize(t, text, "--tokenizer", file)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tokenizer.ParseIDs(plain); err != nil || !slices.Equal(got, want) {
		t.Fatalf("plain output %q (%v), want %v", plain, err, want)
	}
	back, err := runTokenize(t, plain, "--tokenizer", file, "--decode")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSuffix(back, "\n") != text {
		t.Fatalf("--decode printed %q, want %q", back, text)
	}

	for _, tt := range []struct {
		name, stdin string
		args        []string
		wantErr     string
	}{
		{"no tokenizer flag", "x", nil, "--tokenizer"},
		{"missing file", "x", []string{"--tokenizer", file + ".missing"}, file + ".missing"},
		{"unknown id", "1 999999", []string{"--tokenizer", file, "--decode"}, "999999"},
		{"not an id", "1 x", []string{"--tokenizer", file, "--decode"}, `"x"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := runTokenize(t, tt.stdin, tt.args...); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}
