package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tandemllm/tandem/model/preset"
	"github.com/tandemllm/tandem/model/tokenizer"
)

// runTandemStreams runs the root command and returns stdout and stderr.
func runTandemStreams(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func generateJSON(t *testing.T, args ...string) generateResult {
	t.Helper()
	out, _, err := runTandemStreams(t, append([]string{"generate", "--local", "--preset", "tiny", "--json"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	var r generateResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, out)
	}
	return r
}

func TestGenerateLocalJSON(t *testing.T) {
	const prompt = "The quick brown fox"
	r := generateJSON(t, "--max-tokens", "6", "--logprobs", "3", prompt)
	dir, err := preset.Ensure(context.Background(), "tiny", preset.DefaultCacheDir(), preset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	if want := tok.Encode(prompt, true); !slices.Equal(r.PromptTokenIDs, want) {
		t.Errorf("prompt_token_ids %v, want %v", r.PromptTokenIDs, want)
	}
	if len(r.TokenIDs) != 6 || r.Tokens != 6 || r.FinishReason != "length" {
		t.Errorf("%d token_ids, tokens %d, finish %q; want 6, 6, length", len(r.TokenIDs), r.Tokens, r.FinishReason)
	}
	if text, err := tok.Decode(r.TokenIDs, true); err != nil || text != r.Text {
		t.Errorf("text %q, want the decoded tokens %q (%v)", r.Text, text, err)
	}
	if len(r.Logprobs) != 6 {
		t.Fatalf("%d logprobs, want 6", len(r.Logprobs))
	}
	for i, lp := range r.Logprobs {
		if lp.Token != r.TokenIDs[i] || len(lp.TopLogprobs) != 3 || lp.Logprob > 0 {
			t.Errorf("logprob %d: %+v", i, lp)
		}
		// Greedy: the chosen token is the most likely one.
		if lp.TopLogprobs[0].Token != lp.Token {
			t.Errorf("logprob %d: greedy token %d is not the top alternative %d", i, lp.Token, lp.TopLogprobs[0].Token)
		}
	}
	if r.TTFTMs <= 0 || r.MsPerToken <= 0 || r.TokensPerS <= 0 || r.PeakRSSMB <= 0 {
		t.Errorf("timings not filled: %+v", r)
	}
}

func TestGenerateLocalStreamsTextAndSummary(t *testing.T) {
	const prompt = "Once upon a time"
	want := generateJSON(t, "--max-tokens", "8", prompt)
	out, errOut, err := runTandemStreams(t, "generate", "--local", "--preset", "tiny", "--max-tokens", "8", prompt)
	if err != nil {
		t.Fatal(err)
	}
	if out != want.Text+"\n" {
		t.Errorf("streamed %q, want %q", out, want.Text+"\n")
	}
	for _, col := range []string{"prompt_len", "tokenize ms", "TTFT ms", "steady ms", "tokens", "ms/token", "tok/s", "peak RSS MB"} {
		if !strings.Contains(errOut, col) {
			t.Errorf("summary lacks column %q:\n%s", col, errOut)
		}
	}
}

func TestGenerateStopString(t *testing.T) {
	const prompt = "Hello"
	full := generateJSON(t, "--max-tokens", "12", prompt)
	// Stop at a piece of the greedy text past its first characters.
	if len(full.Text) < 6 {
		t.Skipf("greedy text %q too short to cut", full.Text)
	}
	stop := full.Text[3:6]
	cut := strings.Index(full.Text, stop)
	r := generateJSON(t, "--max-tokens", "12", "--stop", stop, prompt)
	if r.Text != full.Text[:cut] || r.FinishReason != "stop" {
		t.Fatalf("with --stop %q: text %q finish %q; want %q stop", stop, r.Text, r.FinishReason, full.Text[:cut])
	}
}

func TestGenerateSeedReproducible(t *testing.T) {
	a := generateJSON(t, "--max-tokens", "10", "--temperature", "1.5", "--seed", "7", "x")
	b := generateJSON(t, "--max-tokens", "10", "--temperature", "1.5", "--seed", "7", "x")
	c := generateJSON(t, "--max-tokens", "10", "--temperature", "1.5", "--seed", "8", "x")
	if !slices.Equal(a.TokenIDs, b.TokenIDs) {
		t.Errorf("same seed, different tokens: %v vs %v", a.TokenIDs, b.TokenIDs)
	}
	if slices.Equal(a.TokenIDs, c.TokenIDs) {
		t.Errorf("seeds 7 and 8 gave the same 10 tokens %v", a.TokenIDs)
	}
}

func TestGenerateBadInput(t *testing.T) {
	long := strings.Repeat("hello ", 2100)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"negative temperature", []string{"--temperature", "-1", "x"}, "--temperature"},
		{"top-p above one", []string{"--top-p", "1.5", "x"}, "--top-p"},
		{"zero max tokens", []string{"--max-tokens", "0", "x"}, "--max-tokens"},
		{"too many logprobs", []string{"--logprobs", "21", "x"}, "--logprobs"},
		{"prompt longer than context", []string{long}, "longer than the model's context of 2048"},
		{"max tokens past context", []string{"--max-tokens", "2047", "hello there"}, "max_tokens 2047"},
		{"missing model dir", []string{"--preset", "", "--model", "/nonexistent/model", "x"}, "/nonexistent/model"},
		{"unknown preset", []string{"--preset", "huge", "x"}, `unknown preset "huge"`},
		{"bad kernels", []string{"--kernels", "sse9", "x"}, "--kernels"},
		{"TP not dividing the heads", []string{"--tp", "3", "x"}, "--tp 3: parallel: model does not split"},
		{"zero TP", []string{"--tp", "0", "x"}, "--tp 0"},
		{"no local", []string{"--local=false", "x"}, "--local"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"generate", "--local", "--preset", "tiny"}, tt.args...)
			_, _, err := runTandemStreams(t, args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

// TestGenerateTensorParallelProcesses runs rank 0 here and the other
// ranks as real worker processes (rendezvous through an embedded etcd,
// collectives over the TCP ring): greedy output equals TP-1's.
func TestGenerateTensorParallelProcesses(t *testing.T) {
	const prompt = "Tensor parallel ranks"
	for _, name := range []string{"tiny", "gqa-tiny"} {
		want := generateJSON(t, "--preset", name, "--max-tokens", "8", "--logprobs", "1", prompt)
		for _, tp := range []string{"2", "4"} {
			got := generateJSON(t, "--preset", name, "--tp", tp, "--max-tokens", "8", "--logprobs", "1", prompt)
			if !slices.Equal(got.TokenIDs, want.TokenIDs) {
				t.Fatalf("%s TP-%s: tokens %v, TP-1 %v", name, tp, got.TokenIDs, want.TokenIDs)
			}
			for i := range got.Logprobs {
				if d := got.Logprobs[i].Logprob - want.Logprobs[i].Logprob; d > 2e-3 || d < -2e-3 {
					t.Fatalf("%s TP-%s: logprob %d differs by %g", name, tp, i, d)
				}
			}
		}
	}
}
