package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runTandem runs the root command with args and returns its stdout.
func runTandem(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestModelCommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tiny")
	tests := []struct {
		name    string
		args    []string
		want    []string
		wantErr string
	}{
		{"presets", []string{"model", "presets"}, []string{"tiny", "gqa-tiny", "gpt2-124m", "llama-160m", "llama-1b", "1.24B", "bf16"}, ""},
		{"init", []string{"model", "init", "--preset", "tiny", "--out", dir, "--dtype", "bf16", "--seed", "5"}, []string{"wrote preset tiny to " + dir}, ""},
		{"inspect", []string{"model", "inspect", dir}, []string{"model_type llama", "kv heads 8", "20 tensors in 1 file(s) (BF16×20)", "6.9M parameters", "weights match config.json"}, ""},
		{"init over existing", []string{"model", "init", "--preset", "tiny", "--out", dir}, nil, "already exists"},
		{"init over existing, exist-ok", []string{"model", "init", "--preset", "tiny", "--out", dir, "--exist-ok"}, []string{dir + " already holds a model"}, ""},
		{"exist-ok over a directory without a model", []string{"model", "init", "--preset", "tiny", "--out", filepath.Dir(dir), "--exist-ok"}, nil, "already exists"},
		{"bad dtype", []string{"model", "init", "--preset", "tiny", "--out", dir + "2", "--dtype", "q4"}, nil, `--dtype: unsupported weight dtype "q4"`},
		{"bad preset", []string{"model", "init", "--preset", "huge", "--out", dir + "2"}, nil, `--preset: unknown preset "huge"`},
		{"no preset", []string{"model", "init", "--out", dir + "2"}, nil, "--preset is required"},
		{"no out", []string{"model", "init", "--preset", "tiny"}, nil, "--out is required"},
		{"bad seed", []string{"model", "init", "--preset", "tiny", "--out", dir + "2", "--seed", "x"}, nil, "--seed"},
		{"bad shard size", []string{"model", "init", "--preset", "tiny", "--out", dir + "2", "--max-shard-mb", "-1"}, nil, "--max-shard-mb"},
		{"init without weights", []string{"model", "init", "--preset", "tiny", "--out", dir + "-nw", "--no-weights"}, []string{"wrote config and tokenizer of preset tiny to " + dir + "-nw"}, ""},
		{"inspect without weights", []string{"model", "inspect", dir + "-nw"}, nil, "no model.safetensors"},
		{"inspect missing", []string{"model", "inspect", filepath.Join(dir, "none")}, nil, "config.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runTandem(t, tt.args...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output %q does not contain %q", out, w)
				}
			}
		})
	}
}

func TestModelInspectMismatch(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if _, err := runTandem(t, "model", "init", "--preset", "tiny", "--out", dir); err != nil {
		t.Fatal(err)
	}
	// A config that disagrees with the weights: fewer KV heads.
	path := filepath.Join(dir, "config.json")
	cfg, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg = bytes.Replace(cfg, []byte(`"num_key_value_heads": 8`), []byte(`"num_key_value_heads": 2`), 1)
	if err := os.WriteFile(path, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = runTandem(t, "model", "inspect", dir)
	if err == nil || !strings.Contains(err.Error(), "model.layers.0.self_attn.k_proj.weight has shape [128 128], config.json says [32 128]") {
		t.Errorf("got %v", err)
	}
}
