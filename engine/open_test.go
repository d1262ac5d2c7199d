package engine

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandemllm/tandem/compute"
	"github.com/tandemllm/tandem/compute/cpu"
	"github.com/tandemllm/tandem/model"
	"github.com/tandemllm/tandem/model/preset"
	"github.com/tandemllm/tandem/model/safetensors"
)

// badModelDir copies the tiny preset into a temporary directory, letting
// edit change its config and tensors first.
func badModelDir(t *testing.T, editConfig func(map[string]any), editTensors func([]safetensors.Tensor) []safetensors.Tensor) string {
	t.Helper()
	src, err := preset.Ensure(context.Background(), "tiny", preset.DefaultCacheDir(), preset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	raw, err := os.ReadFile(filepath.Join(src, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	if editConfig != nil {
		editConfig(cfg)
	}
	raw, _ = json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := safetensors.OpenDir(src)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	var tensors []safetensors.Tensor
	for _, n := range set.Names() {
		tt, err := set.Tensor(n)
		if err != nil {
			t.Fatal(err)
		}
		tensors = append(tensors, tt)
	}
	if editTensors != nil {
		tensors = editTensors(tensors)
	}
	if err := safetensors.Write(filepath.Join(dir, "model.safetensors"), tensors, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestOpenRejectsBadModels(t *testing.T) {
	without := func(name string) func([]safetensors.Tensor) []safetensors.Tensor {
		return func(ts []safetensors.Tensor) []safetensors.Tensor {
			var out []safetensors.Tensor
			for _, t := range ts {
				if t.Name != name {
					out = append(out, t)
				}
			}
			return out
		}
	}
	retype := func(ts []safetensors.Tensor) []safetensors.Tensor {
		for i := range ts {
			if ts[i].Name == "model.norm.weight" {
				ts[i].DType = safetensors.I32
			}
		}
		return ts
	}
	tests := []struct {
		name        string
		config      func(map[string]any)
		tensors     func([]safetensors.Tensor) []safetensors.Tensor
		file, wants string
	}{
		{"shape does not match config", func(c map[string]any) { c["intermediate_size"] = 400 }, nil,
			"model.safetensors", "mlp.up_proj.weight has shape [384 128], config.json says [400 128]"},
		{"missing tensor", nil, without("model.norm.weight"), "", "model.norm.weight is missing"},
		{"unsupported dtype", nil, retype, "model.safetensors", "dtype I32"},
		{"unknown architecture", func(c map[string]any) { c["model_type"] = "mamba" }, nil, "config.json", `unknown model_type "mamba"`},
		{"heads not divisible", func(c map[string]any) { c["num_key_value_heads"] = 3 }, nil, "config.json", "num_key_value_heads"},
	}
	be, err := cpu.New(cpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := badModelDir(t, tt.config, tt.tensors)
			m, err := Open(dir, be, Shard{})
			if err == nil {
				m.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), filepath.Join(dir, tt.file)) || !strings.Contains(err.Error(), tt.wants) {
				t.Fatalf("error %q: want it to name %s and say %q", err, tt.file, tt.wants)
			}
		})
	}
	t.Run("truncated weights", func(t *testing.T) {
		dir := badModelDir(t, nil, nil)
		path := filepath.Join(dir, "model.safetensors")
		st, _ := os.Stat(path)
		if err := os.Truncate(path, st.Size()/2); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(dir, be, Shard{}); err == nil || !strings.Contains(err.Error(), path) {
			t.Fatalf("Open of a truncated file: %v; want an error naming %s", err, path)
		}
	})
}

// closeCounter is an io.Closer that counts its calls.
type closeCounter struct{ n int }

func (c *closeCounter) Close() error { c.n++; return nil }

// deviceLike is a CPU backend that says its matrices are not computed on
// in host memory, as a GPU backend's are not.
type deviceLike struct{ *cpu.Backend }

func (deviceLike) HostResident() bool { return false }

// TestWeightsCopiedForHostBackends: on a backend that computes on host
// memory the loader copies every weight matrix but the token embedding
// into its arena; on any other it uses full-width matrices in place. Both
// leave the files to Model.Close.
func TestWeightsCopiedForHostBackends(t *testing.T) {
	dir, err := preset.Ensure(context.Background(), "tiny", preset.DefaultCacheDir(), preset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := model.LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []bool{true, false} {
		set, err := safetensors.OpenDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer set.Close()
		cb, err := cpu.New(cpu.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer cb.Close()
		var be compute.Backend = cb
		if !host {
			be = deviceLike{cb}
		}
		closer := &closeCounter{}
		m, err := LoadModel(cfg, set, be, closer, Shard{})
		if err != nil {
			t.Fatal(err)
		}
		var copied int
		for _, c := range m.arena.chunks {
			copied += len(c)
		}
		copied -= len(m.arena.free)
		// The projections and the LM head; the embedding and the small
		// vectors (norms, which go to the backend's own buffers either
		// way) are not copied.
		var matBytes int
		for _, w := range append(matrices(m), m.w.lmHead) {
			matBytes += w.Rows() * w.Cols() * w.DType().Size()
		}
		if host && (copied < matBytes || copied >= matBytes+m.w.embed.Rows()*m.w.embed.Cols()*4) {
			t.Errorf("host backend: %d bytes copied, want the %d bytes of the matrices and not the embedding", copied, matBytes)
		}
		if !host && copied != 0 {
			t.Errorf("device-like backend: %d bytes copied, want none", copied)
		}
		if closer.n != 0 {
			t.Errorf("host %v: files closed %d times at load", host, closer.n)
		}
		e := testEngine(t, m, Options{})
		if err := e.Add(Request{ID: "a", Prompt: testPrompt(5, cfg.VocabSize, 0), Params: greedy(2)}); err != nil {
			t.Fatal(err)
		}
		if got := run(t, e)["a"]; len(got.tokens) != 2 {
			t.Errorf("host %v: %d tokens, want 2", host, len(got.tokens))
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		if closer.n != 1 {
			t.Errorf("host %v: files closed %d times in all, want once", host, closer.n)
		}
	}
}
