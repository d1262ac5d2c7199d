package model

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParamsOfPublishedModels(t *testing.T) {
	// Parameter counts the model authors publish.
	tests := []struct {
		file    string
		params  int64
		tensors int
	}{
		{"gpt2.json", 124_439_808, 2 + 12*12 + 2},
		{"llama-3.2-1b.json", 1_235_814_400, 1 + 16*9 + 1},
		{"qwen2.5-0.5b.json", 494_032_768, 1 + 24*12 + 1},
		{"qwen3-0.6b.json", 596_049_920, 1 + 28*11 + 1},
		{"mistral-7b.json", 7_248_023_552, 1 + 32*9 + 2},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			c, err := LoadConfig(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Params(); got != tt.params {
				t.Errorf("Params() = %d, want %d", got, tt.params)
			}
			if got := len(c.Tensors()); got != tt.tensors {
				t.Errorf("%d tensors, want %d", got, tt.tensors)
			}
		})
	}
}

func TestTensorNames(t *testing.T) {
	tests := []struct {
		file string
		want map[string][]int
	}{
		{"qwen2.5-0.5b.json", map[string][]int{
			"model.embed_tokens.weight":                      {151936, 896},
			"model.layers.0.self_attn.q_proj.weight":         {896, 896},
			"model.layers.0.self_attn.k_proj.weight":         {128, 896},
			"model.layers.0.self_attn.k_proj.bias":           {128},
			"model.layers.23.self_attn.o_proj.weight":        {896, 896},
			"model.layers.5.mlp.down_proj.weight":            {896, 4864},
			"model.layers.5.post_attention_layernorm.weight": {896},
			"model.norm.weight":                              {896},
		}},
		{"qwen3-0.6b.json", map[string][]int{
			"model.layers.0.self_attn.q_proj.weight":  {2048, 1024},
			"model.layers.0.self_attn.o_proj.weight":  {1024, 2048},
			"model.layers.0.self_attn.q_norm.weight":  {128},
			"model.layers.27.self_attn.k_norm.weight": {128},
		}},
		{"mistral-7b.json", map[string][]int{"lm_head.weight": {32768, 4096}}},
		{"gpt2.json", map[string][]int{
			"transformer.wte.weight":             {50257, 768},
			"transformer.wpe.weight":             {1024, 768},
			"transformer.h.0.attn.c_attn.weight": {768, 2304},
			"transformer.h.0.attn.c_attn.bias":   {2304},
			"transformer.h.11.mlp.c_fc.weight":   {768, 3072},
			"transformer.h.11.mlp.c_proj.weight": {3072, 768},
			"transformer.ln_f.bias":              {768},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			c, err := LoadConfig(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got := map[string][]int{}
			for _, s := range c.Tensors() {
				if _, dup := got[s.Name]; dup {
					t.Errorf("%s listed twice", s.Name)
				}
				got[s.Name] = s.Shape
			}
			for name, shape := range tt.want {
				if !slices.Equal(got[name], shape) {
					t.Errorf("%s: shape %v, want %v", name, got[name], shape)
				}
			}
			if _, ok := got["lm_head.weight"]; ok == c.TieEmbeddings {
				t.Errorf("lm_head.weight present = %v with tied embeddings = %v", ok, c.TieEmbeddings)
			}
		})
	}
}

// shapes is an in-memory TensorShapes.
type shapes map[string][]int

func (s shapes) Shape(name string) ([]int, bool) { v, ok := s[name]; return v, ok }
func (s shapes) Where(string) string             { return "model.safetensors" }

func fromSpecs(c *Config, strip string) shapes {
	s := shapes{}
	for _, t := range c.Tensors() {
		s[strings.TrimPrefix(t.Name, strip)] = t.Shape
	}
	return s
}

func TestCheckTensors(t *testing.T) {
	llama, err := ParseConfig([]byte(llamaJSON + `}`))
	if err != nil {
		t.Fatal(err)
	}
	gpt2, err := LoadConfig(filepath.Join("testdata", "gpt2.json"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  *Config
		edit func(shapes)
		want []string // empty: no error
	}{
		{"complete", llama, func(shapes) {}, nil},
		{"extra tensors are fine", llama, func(s shapes) { s["lm_head.weight"] = []int{100, 64}; s["rotary.inv_freq"] = []int{8} }, nil},
		{"missing", llama, func(s shapes) { delete(s, "model.layers.1.mlp.up_proj.weight") },
			[]string{"model.safetensors: ", "model.layers.1.mlp.up_proj.weight is missing (config.json implies [128 64])"}},
		{"wrong shape", llama, func(s shapes) { s["model.layers.1.mlp.up_proj.weight"] = []int{512, 64} },
			[]string{"model.layers.1.mlp.up_proj.weight has shape [512 64], config.json says [128 64]"}},
		{"many problems are capped", llama, func(s shapes) {
			for k := range s {
				if strings.Contains(k, "layers") {
					delete(s, k)
				}
			}
		}, []string{"and 13 more"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := fromSpecs(tt.cfg, "")
			tt.edit(s)
			err := CheckTensors(tt.cfg, s)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrTensorMismatch) {
				t.Fatalf("got %v, want ErrTensorMismatch", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	t.Run("gpt2 without prefix", func(t *testing.T) {
		s := fromSpecs(gpt2, "transformer.")
		if err := CheckTensors(gpt2, s); err != nil {
			t.Fatal(err)
		}
		if got := ResolveName(s, "transformer.h.3.attn.c_attn.weight"); got != "h.3.attn.c_attn.weight" {
			t.Errorf("ResolveName = %q", got)
		}
		delete(s, "h.3.ln_2.bias")
		if err := CheckTensors(gpt2, s); err == nil || !strings.Contains(err.Error(), "transformer.h.3.ln_2.bias is missing") {
			t.Errorf("got %v", err)
		}
	})
}

func TestTensorKinds(t *testing.T) {
	c, err := LoadConfig(filepath.Join("testdata", "gpt2.json"))
	if err != nil {
		t.Fatal(err)
	}
	count := map[TensorKind]int{}
	for _, s := range c.Tensors() {
		count[s.Kind]++
		if (s.Layer >= 0) != strings.HasPrefix(s.Name, "transformer.h.") {
			t.Errorf("%s in layer %d", s.Name, s.Layer)
		}
	}
	want := map[TensorKind]int{KindEmbedding: 2, KindMatrix: 48, KindNorm: 25, KindBias: 73}
	if fmt.Sprint(count) != fmt.Sprint(want) {
		t.Errorf("kinds %v, want %v", count, want)
	}
}
