package model

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLoadConfigFixtures(t *testing.T) {
	tests := []struct {
		file          string
		arch          Arch
		hidden        int
		kvHeads       int
		headDim       int
		tie, bias, qk bool
		bos           int
		eos           []int
		dtype         string
		scaled        bool
	}{
		{"llama-3.2-1b.json", Llama, 2048, 8, 64, true, false, false, 128000, []int{128001}, "bfloat16", true},
		{"gpt2.json", GPT2, 768, 12, 64, true, true, false, 50256, []int{50256}, "", false},
		{"qwen2.5-0.5b.json", Llama, 896, 2, 64, true, true, false, 151643, []int{151643}, "bfloat16", false},
		{"qwen3-0.6b.json", Llama, 1024, 8, 128, true, false, true, 151643, []int{151645, 151643}, "bfloat16", false},
		{"mistral-7b.json", Llama, 4096, 8, 128, false, false, false, 1, []int{2}, "bfloat16", false},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			c, err := LoadConfig(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if c.Arch != tt.arch || c.Hidden != tt.hidden || c.KVHeads != tt.kvHeads || c.HeadDim != tt.headDim {
				t.Errorf("arch %s hidden %d kv %d head_dim %d", c.Arch, c.Hidden, c.KVHeads, c.HeadDim)
			}
			if c.TieEmbeddings != tt.tie || c.AttnBias != tt.bias || c.QKNorm != tt.qk {
				t.Errorf("tie %v bias %v qknorm %v", c.TieEmbeddings, c.AttnBias, c.QKNorm)
			}
			if c.BOSTokenID != tt.bos || !slices.Equal(c.EOSTokenIDs, tt.eos) || c.TorchDType != tt.dtype {
				t.Errorf("bos %d eos %v dtype %q", c.BOSTokenID, c.EOSTokenIDs, c.TorchDType)
			}
			if (c.RopeScaling != nil) != tt.scaled {
				t.Errorf("rope scaling %+v", c.RopeScaling)
			}
		})
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	_, err := LoadConfig(filepath.Join(t.TempDir(), "config.json"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "config.json") {
		t.Errorf("got %v", err)
	}
}

// llamaJSON is a valid small Llama config; bad cases edit one field.
const llamaJSON = `{"model_type":"llama","vocab_size":100,"hidden_size":64,"num_hidden_layers":2,
"num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":128,"max_position_embeddings":256,
"rms_norm_eps":1e-5,"rope_theta":10000,"bos_token_id":1,"eos_token_id":2`

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		json string
		want string
	}{
		{"garbage", `{"model_type":`, "unexpected end"},
		{"not an object", `[1]`, "cannot unmarshal"},
		{"missing model_type", `{"vocab_size":10}`, "model_type is missing"},
		{"unknown model_type", `{"model_type":"bert"}`, `unknown model_type "bert"`},
		{"zero hidden", llamaJSON + `,"hidden_size":0}`, "hidden_size = 0"},
		{"negative layers", llamaJSON + `,"num_hidden_layers":-3}`, "num_hidden_layers = -3"},
		{"huge vocab", llamaJSON + `,"vocab_size":1000000000}`, "vocab_size = 1000000000"},
		{"string dim", llamaJSON + `,"hidden_size":"64"}`, "hidden_size"},
		{"heads not multiple of kv", llamaJSON + `,"num_key_value_heads":3}`, "not a multiple of num_key_value_heads 3"},
		{"kv above heads", llamaJSON + `,"num_key_value_heads":8}`, "not a multiple"},
		{"hidden not divisible", llamaJSON + `,"hidden_size":66}`, "not divisible by num_attention_heads"},
		{"odd head_dim", llamaJSON + `,"head_dim":15}`, "head_dim 15 must be even"},
		{"negative eps", llamaJSON + `,"rms_norm_eps":-1}`, "epsilon"},
		{"negative theta", llamaJSON + `,"rope_theta":-5}`, "rope_theta"},
		{"linear rope", llamaJSON + `,"rope_scaling":{"type":"linear","factor":2}}`, `rope_scaling type "linear"`},
		{"yarn rope", llamaJSON + `,"rope_scaling":{"rope_type":"yarn","factor":2}}`, `"yarn"`},
		{"rope factor below 1", llamaJSON + `,"rope_scaling":{"rope_type":"llama3","factor":0.5,"low_freq_factor":1,"high_freq_factor":4,"original_max_position_embeddings":8192}}`, "factor 0.5"},
		{"rope high below low", llamaJSON + `,"rope_scaling":{"rope_type":"llama3","factor":8,"low_freq_factor":4,"high_freq_factor":1,"original_max_position_embeddings":8192}}`, "rope_scaling parameters"},
		{"rope missing original", llamaJSON + `,"rope_scaling":{"rope_type":"llama3","factor":8,"low_freq_factor":1,"high_freq_factor":4}}`, "original_max_position_embeddings 0"},
		{"rope not object", llamaJSON + `,"rope_scaling":3}`, "rope_scaling"},
		{"gelu act", llamaJSON + `,"hidden_act":"gelu"}`, `hidden_act "gelu"`},
		{"attention bias llama", llamaJSON + `,"attention_bias":true}`, "attention_bias"},
		{"mlp bias", llamaJSON + `,"mlp_bias":true}`, "mlp_bias"},
		{"bos outside vocab", llamaJSON + `,"bos_token_id":100}`, "bos_token_id 100"},
		{"negative bos", llamaJSON + `,"bos_token_id":-2}`, "bos_token_id -2 is negative"},
		{"eos outside vocab", llamaJSON + `,"eos_token_id":[2,500]}`, "eos_token_id 500"},
		{"eos string", llamaJSON + `,"eos_token_id":"2"}`, "eos_token_id must be an integer"},
		{"too many params", llamaJSON + `,"hidden_size":1048576,"intermediate_size":16777216,"num_hidden_layers":16777216}`, "parameters"},
		{"gpt2 zero heads", `{"model_type":"gpt2","vocab_size":10,"n_embd":8,"n_layer":1,"n_head":0,"n_positions":8}`, "n_head = 0"},
		{"gpt2 indivisible", `{"model_type":"gpt2","vocab_size":10,"n_embd":10,"n_head":4,"n_layer":1,"n_positions":8}`, "n_embd 10 is not divisible by n_head 4"},
		{"gpt2 relu", `{"model_type":"gpt2","vocab_size":10,"n_embd":8,"n_head":2,"n_layer":1,"n_positions":8,"activation_function":"relu"}`, `"relu"`},
		{"gpt2 no positions", `{"model_type":"gpt2","vocab_size":10,"n_embd":8,"n_head":2,"n_layer":1}`, "n_positions = 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Later keys override earlier ones in encoding/json, so each
			// case replaces one field of the valid config.
			_, err := ParseConfig([]byte(tt.json))
			if err == nil {
				t.Fatal("ParseConfig succeeded")
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("%v does not wrap ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestParseConfigDefaults(t *testing.T) {
	tests := []struct {
		name  string
		json  string
		check func(*Config) bool
	}{
		{"valid base", llamaJSON + `}`, func(c *Config) bool { return c.HeadDim == 16 && !c.TieEmbeddings && c.RopeScaling == nil }},
		{"kv heads default to heads", strings.Replace(llamaJSON, `"num_key_value_heads":2,`, "", 1) + `}`, func(c *Config) bool { return c.KVHeads == 4 }},
		{"default rope type is no scaling", llamaJSON + `,"rope_scaling":{"rope_type":"default"}}`, func(c *Config) bool { return c.RopeScaling == nil }},
		{"legacy type key", llamaJSON + `,"rope_scaling":{"type":"llama3","factor":8,"low_freq_factor":1,"high_freq_factor":4,"original_max_position_embeddings":128}}`,
			func(c *Config) bool { return c.RopeScaling != nil && c.RopeScaling.Factor == 8 }},
		{"rope_parameters", llamaJSON + `,"rope_theta":0,"rope_parameters":{"rope_type":"default","rope_theta":250000}}`,
			func(c *Config) bool { return c.RopeTheta == 250000 && c.RopeScaling == nil }},
		{"eps and theta defaults", llamaJSON + `,"rms_norm_eps":0,"rope_theta":0}`, func(c *Config) bool { return c.NormEps == 1e-6 && c.RopeTheta == 10000 }},
		{"absent bos", llamaJSON + `,"bos_token_id":null}`, func(c *Config) bool { return c.BOSTokenID == -1 }},
		{"gpt2 untied", `{"model_type":"gpt2","vocab_size":10,"n_embd":8,"n_head":2,"n_layer":1,"n_positions":8,"tie_word_embeddings":false,"n_inner":20}`,
			func(c *Config) bool { return !c.TieEmbeddings && c.Intermediate == 20 && c.NormEps == 1e-5 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.json))
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Errorf("unexpected config %+v", c)
			}
		})
	}
}

func TestInvFreqLlama3(t *testing.T) {
	c, err := LoadConfig(filepath.Join("testdata", "llama-3.2-1b.json"))
	if err != nil {
		t.Fatal(err)
	}
	f := c.InvFreq()
	if len(f) != 32 {
		t.Fatalf("%d frequencies, want 32", len(f))
	}
	// High frequencies (short wavelengths) are unscaled, the lowest are
	// divided by the factor, and the sequence stays decreasing.
	if f[0] != 1 {
		t.Errorf("f[0] = %v, want 1", f[0])
	}
	last := 1 / math.Pow(500000, 62.0/64) / 32
	if math.Abs(float64(f[31])-last) > 1e-6*last {
		t.Errorf("f[31] = %v, want %v", f[31], last)
	}
	for j := 1; j < len(f); j++ {
		if !(f[j] < f[j-1]) {
			t.Errorf("f[%d] = %v not below f[%d] = %v", j, f[j], j-1, f[j-1])
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	for _, name := range []string{"llama-3.2-1b.json", "gpt2.json", "qwen2.5-0.5b.json", "qwen3-0.6b.json", "mistral-7b.json"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(llamaJSON + `}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
			return
		}
		// Whatever is accepted must be usable without further checks.
		if p := c.Params(); p <= 0 {
			t.Fatalf("params %d", p)
		}
		for _, s := range c.Tensors() {
			for _, d := range s.Shape {
				if d <= 0 {
					t.Fatalf("%s has shape %v", s.Name, s.Shape)
				}
			}
		}
		if c.Arch == Llama {
			for j, v := range c.InvFreq() {
				if !(v >= 0) || math.IsInf(float64(v), 0) {
					t.Fatalf("inv freq %d = %v", j, v)
				}
			}
		}
	})
}

func TestSlidingWindowCapsContext(t *testing.T) {
	base := `{"model_type":"%s","vocab_size":100,"hidden_size":64,"num_hidden_layers":1,"num_attention_heads":4,"intermediate_size":128,"max_position_embeddings":32768%s}`
	tests := []struct {
		typ, extra string
		want       int
	}{
		{"mistral", `,"sliding_window":4096`, 4096},
		{"mistral", `,"sliding_window":null`, 32768},
		{"mistral", `,"sliding_window":65536`, 32768},
		{"qwen2", `,"sliding_window":4096,"use_sliding_window":false`, 32768},
		{"qwen2", `,"sliding_window":4096,"use_sliding_window":true`, 4096},
	}
	for _, tt := range tests {
		c, err := ParseConfig([]byte(fmt.Sprintf(base, tt.typ, tt.extra)))
		if err != nil {
			t.Fatalf("%s%s: %v", tt.typ, tt.extra, err)
		}
		if c.MaxPositions != tt.want {
			t.Errorf("%s%s: MaxPositions %d, want %d", tt.typ, tt.extra, c.MaxPositions, tt.want)
		}
	}
}
