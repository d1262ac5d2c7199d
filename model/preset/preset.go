package preset

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/tandemllm/tandem/model"
	"github.com/tandemllm/tandem/model/safetensors"
)

// Sentinel errors callers may branch on.
var (
	// ErrUnknown is wrapped when a preset name is not known.
	ErrUnknown = errors.New("unknown preset")
	// ErrDType is wrapped when a weight dtype is not one presets write.
	ErrDType = errors.New("unsupported weight dtype")
)

// gpt2Vocab and gpt2EOS are GPT-2's vocabulary size and <|endoftext|> id,
// which every preset's tokenizer starts from.
const (
	gpt2Vocab = 50257
	gpt2EOS   = 50256
)

// Preset is a model shape with a name.
type Preset struct {
	Name        string
	Description string
	Arch        model.Arch
	// DefaultDType is the weight dtype used when none is asked for.
	DefaultDType safetensors.DType

	vocab, hidden, layers, heads, kvHeads, headDim, intermediate, maxPos int
	ropeTheta                                                            float64
	ropeScaling                                                          *model.RopeScaling
}

// presets returns the table afresh so no caller can alter another's copy.
func presets() []Preset {
	tiny := Preset{
		Name: "tiny", Description: "Llama, 2 layers, hidden 128: unit tests, runs in milliseconds",
		Arch: model.Llama, DefaultDType: safetensors.F32,
		vocab: gpt2Vocab, hidden: 128, layers: 2, heads: 8, kvHeads: 8, headDim: 16, intermediate: 384,
		maxPos: 2048, ropeTheta: 10000,
	}
	gqa := tiny
	gqa.Name, gqa.Description, gqa.kvHeads = "gqa-tiny", "tiny with 2 KV heads (grouped-query attention)", 2
	return []Preset{
		tiny, gqa,
		{
			Name: "gpt2-124m", Description: "GPT-2 small's shape: 12 layers, hidden 768",
			Arch: model.GPT2, DefaultDType: safetensors.F32,
			vocab: gpt2Vocab, hidden: 768, layers: 12, heads: 12, kvHeads: 12, headDim: 64, intermediate: 4 * 768,
			maxPos: 1024,
		},
		{
			Name: "llama-160m", Description: "Llama, 12 layers, hidden 1024, 8 KV heads (TP-8 capable)",
			Arch: model.Llama, DefaultDType: safetensors.F32,
			vocab: gpt2Vocab, hidden: 1024, layers: 12, heads: 16, kvHeads: 8, headDim: 64, intermediate: 2048,
			maxPos: 4096, ropeTheta: 10000,
		},
		{
			Name: "llama-1b", Description: "Llama-3.2-1B's shape: 16 layers, hidden 2048, vocab 128256, llama3 RoPE scaling",
			Arch: model.Llama, DefaultDType: safetensors.BF16,
			vocab: 128256, hidden: 2048, layers: 16, heads: 32, kvHeads: 8, headDim: 64, intermediate: 8192,
			maxPos: 131072, ropeTheta: 500000,
			ropeScaling: &model.RopeScaling{Type: "llama3", Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 8192},
		},
	}
}

// All lists the presets, smallest first.
func All() []Preset { return presets() }

// Names lists the preset names, sorted.
func Names() []string {
	var out []string
	for _, p := range presets() {
		out = append(out, p.Name)
	}
	sort.Strings(out)
	return out
}

// Get returns the named preset.
func Get(name string) (Preset, error) {
	for _, p := range presets() {
		if p.Name == name {
			return p, nil
		}
	}
	return Preset{}, fmt.Errorf("%w %q (known: %s)", ErrUnknown, name, strings.Join(Names(), ", "))
}

// ParseDType reads a weight dtype as a flag gives it: f32, bf16 or f16
// (any case), or the torch names float32, bfloat16 and float16.
func ParseDType(s string) (safetensors.DType, error) {
	switch strings.ToLower(s) {
	case "f32", "float32":
		return safetensors.F32, nil
	case "bf16", "bfloat16":
		return safetensors.BF16, nil
	case "f16", "float16", "fp16":
		return safetensors.F16, nil
	}
	return "", fmt.Errorf("%w %q (want f32, bf16 or f16)", ErrDType, s)
}

// torchDType is config.json's name for a weight dtype.
func torchDType(d safetensors.DType) (string, error) {
	switch d {
	case safetensors.F32:
		return "float32", nil
	case safetensors.BF16:
		return "bfloat16", nil
	case safetensors.F16:
		return "float16", nil
	}
	return "", fmt.Errorf("%w %q (want F32, BF16 or F16)", ErrDType, d)
}

// ConfigJSON returns config.json for weights of dtype (the default when
// empty), with the fields transformers' LlamaConfig or GPT2Config read.
func (p Preset) ConfigJSON(dtype safetensors.DType) ([]byte, error) {
	if dtype == "" {
		dtype = p.DefaultDType
	}
	td, err := torchDType(dtype)
	if err != nil {
		return nil, err
	}
	c := map[string]any{
		"bos_token_id":        gpt2EOS,
		"eos_token_id":        gpt2EOS,
		"initializer_range":   0.02,
		"tie_word_embeddings": true,
		"torch_dtype":         td,
		"use_cache":           true,
		"vocab_size":          p.vocab,
	}
	if p.Arch == model.GPT2 {
		for k, v := range map[string]any{
			"architectures": []string{"GPT2LMHeadModel"}, "model_type": "gpt2",
			"activation_function": "gelu_new", "attn_pdrop": 0.1, "embd_pdrop": 0.1, "resid_pdrop": 0.1,
			"layer_norm_epsilon": 1e-5, "n_ctx": p.maxPos, "n_embd": p.hidden, "n_head": p.heads,
			"n_inner": nil, "n_layer": p.layers, "n_positions": p.maxPos,
			"reorder_and_upcast_attn": false, "scale_attn_by_inverse_layer_idx": false, "scale_attn_weights": true,
		} {
			c[k] = v
		}
	} else {
		for k, v := range map[string]any{
			"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama",
			"attention_bias": false, "attention_dropout": 0.0, "head_dim": p.headDim, "hidden_act": "silu",
			"hidden_size": p.hidden, "intermediate_size": p.intermediate, "max_position_embeddings": p.maxPos,
			"mlp_bias": false, "num_attention_heads": p.heads, "num_hidden_layers": p.layers,
			"num_key_value_heads": p.kvHeads, "pretraining_tp": 1, "rms_norm_eps": 1e-5,
			"rope_scaling": p.ropeScaling, "rope_theta": p.ropeTheta,
		} {
			c[k] = v
		}
	}
	// Sorted keys and two-space indent, as transformers writes it.
	out, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// Config is the preset's parsed configuration.
func (p Preset) Config() (*model.Config, error) {
	data, err := p.ConfigJSON("")
	if err != nil {
		return nil, err
	}
	c, err := model.ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("preset %s: %w", p.Name, err)
	}
	return c, nil
}

// Params is the number of parameters.
func (p Preset) Params() int64 {
	c, err := p.Config()
	if err != nil {
		return 0
	}
	return c.Params()
}

// DataSize is the bytes of weight data for dtype (the default when empty).
func (p Preset) DataSize(dtype safetensors.DType) int64 {
	if dtype == "" {
		dtype = p.DefaultDType
	}
	return p.Params() * int64(dtype.Size())
}

// sideFiles returns the small files of the directory: configs and the
// tokenizer.
func (p Preset) sideFiles(dtype safetensors.DType, tokenizerJSON []byte) (map[string][]byte, error) {
	cfg, err := p.ConfigJSON(dtype)
	if err != nil {
		return nil, err
	}
	gen, err := json.MarshalIndent(map[string]any{
		"_from_model_config": true, "bos_token_id": gpt2EOS, "eos_token_id": gpt2EOS,
	}, "", "  ")
	if err != nil {
		return nil, err
	}
	tokCfg, err := json.MarshalIndent(map[string]any{
		"add_bos_token": false, "add_prefix_space": false, "clean_up_tokenization_spaces": false,
		"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
		"errors": "replace", "model_max_length": p.maxPos, "tokenizer_class": "GPT2Tokenizer",
	}, "", "  ")
	if err != nil {
		return nil, err
	}
	return map[string][]byte{
		"config.json":            cfg,
		"generation_config.json": append(gen, '\n'),
		"tokenizer.json":         tokenizerJSON,
		"tokenizer_config.json":  append(tokCfg, '\n'),
	}, nil
}
