package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
)

// Arch is a model architecture family the engine can run.
type Arch string

// Supported architectures.
const (
	Llama Arch = "llama" // Llama, Mistral, Qwen2, Qwen3: RMSNorm, RoPE, GQA, SwiGLU
	GPT2  Arch = "gpt2"  // GPT-2: LayerNorm, learned positions, GELU
)

// ErrInvalidConfig is wrapped by every config.json validation error.
var ErrInvalidConfig = errors.New("invalid model config")

// RopeScaling is Llama 3's "rope_scaling" of type "llama3"; other types
// are rejected at parse time ("default" means no scaling).
type RopeScaling struct {
	Type                          string  `json:"rope_type"`
	Factor                        float64 `json:"factor"`
	LowFreqFactor                 float64 `json:"low_freq_factor"`
	HighFreqFactor                float64 `json:"high_freq_factor"`
	OriginalMaxPositionEmbeddings int     `json:"original_max_position_embeddings"`
}

// rawRopeScaling also accepts the older "type" key and, as transformers'
// newer "rope_parameters", a rope_theta.
type rawRopeScaling struct {
	RopeScaling
	LegacyType string  `json:"type"`
	RopeTheta  float64 `json:"rope_theta"`
}

// Config is the architecture description of a model, read from a Hugging
// Face config.json and normalised across families.
type Config struct {
	// ModelType is config.json's model_type: llama, mistral, qwen2, qwen3 or gpt2.
	ModelType string
	Arch      Arch

	VocabSize    int
	Hidden       int
	Layers       int
	Heads        int
	KVHeads      int
	HeadDim      int
	Intermediate int
	// MaxPositions is the longest context the model supports.
	MaxPositions int

	NormEps     float64
	RopeTheta   float64
	RopeScaling *RopeScaling
	// TieEmbeddings: the LM head reuses the token embedding matrix.
	TieEmbeddings bool
	// AttnBias: q, k and v projections have biases (Qwen2).
	AttnBias bool
	// QKNorm: per-head RMSNorm of q and k before RoPE (Qwen3).
	QKNorm bool

	BOSTokenID  int // -1 when absent
	EOSTokenIDs []int
	// TorchDType is config.json's torch_dtype, informational.
	TorchDType string
}

// rawConfig holds the config.json fields of every supported family.
type rawConfig struct {
	ModelType     string   `json:"model_type"`
	Architectures []string `json:"architectures,omitempty"`

	VocabSize             int             `json:"vocab_size"`
	HiddenSize            int             `json:"hidden_size,omitempty"`
	NumHiddenLayers       int             `json:"num_hidden_layers,omitempty"`
	NumAttentionHeads     int             `json:"num_attention_heads,omitempty"`
	NumKeyValueHeads      int             `json:"num_key_value_heads,omitempty"`
	HeadDim               int             `json:"head_dim,omitempty"`
	IntermediateSize      int             `json:"intermediate_size,omitempty"`
	MaxPositionEmbeddings int             `json:"max_position_embeddings,omitempty"`
	RMSNormEps            float64         `json:"rms_norm_eps,omitempty"`
	RopeTheta             float64         `json:"rope_theta,omitempty"`
	RopeScaling           *rawRopeScaling `json:"rope_scaling,omitempty"`
	RopeParameters        *rawRopeScaling `json:"rope_parameters,omitempty"`
	TieWordEmbeddings     *bool           `json:"tie_word_embeddings,omitempty"`
	HiddenAct             string          `json:"hidden_act,omitempty"`
	AttentionBias         bool            `json:"attention_bias,omitempty"`
	MLPBias               bool            `json:"mlp_bias,omitempty"`
	SlidingWindow         *int            `json:"sliding_window,omitempty"`
	UseSlidingWindow      *bool           `json:"use_sliding_window,omitempty"`

	// GPT-2 names.
	NEmbd              int     `json:"n_embd,omitempty"`
	NLayer             int     `json:"n_layer,omitempty"`
	NHead              int     `json:"n_head,omitempty"`
	NInner             *int    `json:"n_inner,omitempty"`
	NPositions         int     `json:"n_positions,omitempty"`
	LayerNormEpsilon   float64 `json:"layer_norm_epsilon,omitempty"`
	ActivationFunction string  `json:"activation_function,omitempty"`

	BOSTokenID json.RawMessage `json:"bos_token_id,omitempty"`
	EOSTokenID json.RawMessage `json:"eos_token_id,omitempty"`
	TorchDType string          `json:"torch_dtype,omitempty"`
	// DType is what newer transformers write instead of torch_dtype.
	DType string `json:"dtype,omitempty"`
}

// LoadConfig reads and validates a config.json file. Errors name the file.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("model config: %w", err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig parses and validates the contents of a config.json.
func ParseConfig(data []byte) (*Config, error) {
	var r rawConfig
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	c := &Config{ModelType: r.ModelType, VocabSize: r.VocabSize, TorchDType: r.TorchDType, BOSTokenID: -1}
	if c.TorchDType == "" {
		c.TorchDType = r.DType
	}
	var err error
	if c.BOSTokenID, err = firstTokenID(r.BOSTokenID, "bos_token_id"); err != nil {
		return nil, err
	}
	if c.EOSTokenIDs, err = tokenIDs(r.EOSTokenID, "eos_token_id"); err != nil {
		return nil, err
	}
	switch r.ModelType {
	case "llama", "mistral", "qwen2", "qwen3":
		err = c.fromLlama(&r)
	case "gpt2":
		err = c.fromGPT2(&r)
	case "":
		err = fmt.Errorf("%w: model_type is missing", ErrInvalidConfig)
	default:
		err = fmt.Errorf("%w: unknown model_type %q (supported: llama, mistral, qwen2, qwen3, gpt2)", ErrInvalidConfig, r.ModelType)
	}
	if err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) fromLlama(r *rawConfig) error {
	c.Arch = Llama
	c.Hidden, c.Layers, c.Heads = r.HiddenSize, r.NumHiddenLayers, r.NumAttentionHeads
	c.KVHeads, c.HeadDim, c.Intermediate = r.NumKeyValueHeads, r.HeadDim, r.IntermediateSize
	c.MaxPositions, c.NormEps, c.RopeTheta = r.MaxPositionEmbeddings, r.RMSNormEps, r.RopeTheta
	// Sliding-window attention is not implemented; within the window it
	// equals full attention, so the context is capped at the window.
	// Qwen2 files carry a window they do not use (use_sliding_window false).
	if w := r.SlidingWindow; w != nil && *w > 0 && *w < c.MaxPositions && (r.UseSlidingWindow == nil || *r.UseSlidingWindow) {
		c.MaxPositions = *w
	}
	// Qwen2 always has q/k/v biases and no o_proj bias; attention_bias in
	// the other families also adds an o_proj bias, which the engine lacks.
	c.AttnBias = r.ModelType == "qwen2"
	if r.AttentionBias && !c.AttnBias {
		return fmt.Errorf("%w: attention_bias (with an o_proj bias) is not supported for model_type %q", ErrInvalidConfig, r.ModelType)
	}
	if r.MLPBias {
		return fmt.Errorf("%w: mlp_bias is not supported", ErrInvalidConfig)
	}
	c.QKNorm = r.ModelType == "qwen3"
	c.TieEmbeddings = r.TieWordEmbeddings != nil && *r.TieWordEmbeddings
	if c.KVHeads == 0 {
		c.KVHeads = c.Heads
	}
	if c.HeadDim == 0 && c.Heads > 0 {
		if c.Hidden%c.Heads != 0 {
			return fmt.Errorf("%w: hidden_size %d is not divisible by num_attention_heads %d (and head_dim is not set)", ErrInvalidConfig, c.Hidden, c.Heads)
		}
		c.HeadDim = c.Hidden / c.Heads
	}
	if c.NormEps == 0 {
		c.NormEps = 1e-6
	}
	rope := r.RopeScaling
	if r.RopeParameters != nil {
		rope = r.RopeParameters
		if rope.RopeTheta != 0 {
			c.RopeTheta = rope.RopeTheta
		}
	}
	if c.RopeTheta == 0 {
		c.RopeTheta = 10000
	}
	if rope != nil {
		s := rope.RopeScaling
		if s.Type == "" {
			s.Type = rope.LegacyType
		}
		if s.Type != "default" {
			c.RopeScaling = &s
		}
	}
	if r.HiddenAct != "" && r.HiddenAct != "silu" {
		return fmt.Errorf("%w: hidden_act %q is not supported (want silu)", ErrInvalidConfig, r.HiddenAct)
	}
	return nil
}

func (c *Config) fromGPT2(r *rawConfig) error {
	c.Arch = GPT2
	c.Hidden, c.Layers, c.Heads = r.NEmbd, r.NLayer, r.NHead
	c.KVHeads = c.Heads
	if c.Heads > 0 {
		c.HeadDim = c.Hidden / c.Heads
	}
	c.Intermediate = 4 * c.Hidden
	if r.NInner != nil {
		c.Intermediate = *r.NInner
	}
	c.MaxPositions, c.NormEps = r.NPositions, r.LayerNormEpsilon
	if c.NormEps == 0 {
		c.NormEps = 1e-5
	}
	// GPT2LMHeadModel ties its head unless the config says otherwise.
	c.TieEmbeddings = r.TieWordEmbeddings == nil || *r.TieWordEmbeddings
	c.AttnBias = true
	// The engine's GELU is the tanh approximation GPT-2 was trained with;
	// plain "gelu" means the exact erf form in transformers.
	if a := r.ActivationFunction; a != "" && a != "gelu_new" && a != "gelu_pytorch_tanh" {
		return fmt.Errorf("%w: activation_function %q is not supported (want gelu_new)", ErrInvalidConfig, a)
	}
	return nil
}

// maxDim bounds every dimension so that products of a few of them cannot
// overflow and absurd files are rejected before any allocation.
const maxDim = 1 << 24

// maxParams bounds the parameter count so that sizes computed from a
// config fit comfortably in an int64.
const maxParams = 1e13

// dimension names as config.json spells them, per architecture.
var (
	llamaDimNames = [...]string{"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
		"num_key_value_heads", "head_dim", "intermediate_size", "max_position_embeddings"}
	gpt2DimNames = [...]string{"vocab_size", "n_embd", "n_layer", "n_head",
		"n_head", "n_embd / n_head", "n_inner", "n_positions"}
)

func (c *Config) validate() error {
	names := llamaDimNames
	if c.Arch == GPT2 {
		names = gpt2DimNames
	}
	for i, v := range [...]int{c.VocabSize, c.Hidden, c.Layers, c.Heads, c.KVHeads, c.HeadDim, c.Intermediate, c.MaxPositions} {
		if v <= 0 || v > maxDim {
			return fmt.Errorf("%w: %s = %d, want 1..%d", ErrInvalidConfig, names[i], v, maxDim)
		}
	}
	perLayer := 2*float64(c.Hidden)*float64(c.Heads+c.KVHeads)*float64(c.HeadDim) + 3*float64(c.Hidden)*float64(c.Intermediate)
	if p := float64(c.Layers)*perLayer + 2*float64(c.VocabSize)*float64(c.Hidden); p > maxParams {
		return fmt.Errorf("%w: about %.3g parameters, more than the %.0g supported", ErrInvalidConfig, p, maxParams)
	}
	if c.Heads%c.KVHeads != 0 {
		return fmt.Errorf("%w: num_attention_heads %d is not a multiple of num_key_value_heads %d", ErrInvalidConfig, c.Heads, c.KVHeads)
	}
	if c.HeadDim%2 != 0 {
		return fmt.Errorf("%w: head_dim %d must be even", ErrInvalidConfig, c.HeadDim)
	}
	if c.Arch == GPT2 && c.Hidden%c.Heads != 0 {
		return fmt.Errorf("%w: n_embd %d is not divisible by n_head %d", ErrInvalidConfig, c.Hidden, c.Heads)
	}
	if !(c.NormEps > 0 && c.NormEps < 1) {
		return fmt.Errorf("%w: norm epsilon %g out of range", ErrInvalidConfig, c.NormEps)
	}
	if c.Arch == Llama && !(c.RopeTheta > 0 && !math.IsInf(c.RopeTheta, 0)) {
		return fmt.Errorf("%w: rope_theta %g out of range", ErrInvalidConfig, c.RopeTheta)
	}
	if s := c.RopeScaling; s != nil {
		if s.Type != "llama3" {
			return fmt.Errorf("%w: rope_scaling type %q is not supported (want llama3)", ErrInvalidConfig, s.Type)
		}
		if !(s.Factor >= 1 && s.Factor <= 1e6) || !(s.LowFreqFactor > 0) || !(s.HighFreqFactor > s.LowFreqFactor && s.HighFreqFactor <= 1e6) ||
			s.OriginalMaxPositionEmbeddings <= 0 || s.OriginalMaxPositionEmbeddings > maxDim {
			return fmt.Errorf("%w: rope_scaling parameters out of range (factor %g, low_freq_factor %g, high_freq_factor %g, original_max_position_embeddings %d)",
				ErrInvalidConfig, s.Factor, s.LowFreqFactor, s.HighFreqFactor, s.OriginalMaxPositionEmbeddings)
		}
	}
	for _, id := range c.EOSTokenIDs {
		if id < 0 || id >= c.VocabSize {
			return fmt.Errorf("%w: eos_token_id %d outside the vocabulary (%d)", ErrInvalidConfig, id, c.VocabSize)
		}
	}
	if c.BOSTokenID >= c.VocabSize {
		return fmt.Errorf("%w: bos_token_id %d outside the vocabulary (%d)", ErrInvalidConfig, c.BOSTokenID, c.VocabSize)
	}
	return nil
}

// InvFreq returns the RoPE inverse frequencies (HeadDim/2 values), with
// Llama 3 scaling applied when configured.
func (c *Config) InvFreq() []float32 {
	half := c.HeadDim / 2
	out := make([]float32, half)
	for j := range half {
		f := 1 / math.Pow(c.RopeTheta, float64(2*j)/float64(c.HeadDim))
		if s := c.RopeScaling; s != nil {
			lowWave := float64(s.OriginalMaxPositionEmbeddings) / s.LowFreqFactor
			highWave := float64(s.OriginalMaxPositionEmbeddings) / s.HighFreqFactor
			wave := 2 * math.Pi / f
			switch {
			case wave < highWave:
			case wave > lowWave:
				f /= s.Factor
			default:
				smooth := (float64(s.OriginalMaxPositionEmbeddings)/wave - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor)
				f = (1-smooth)*f/s.Factor + smooth*f
			}
		}
		out[j] = float32(f)
	}
	return out
}

// firstTokenID reads a token id field that may be null, a number or a list.
func firstTokenID(raw json.RawMessage, field string) (int, error) {
	ids, err := tokenIDs(raw, field)
	if err != nil || len(ids) == 0 {
		return -1, err
	}
	return ids[0], nil
}

func tokenIDs(raw json.RawMessage, field string) ([]int, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one int
	if err := json.Unmarshal(raw, &one); err == nil {
		raw = []byte(fmt.Sprintf("[%d]", one))
	}
	var many []int
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, fmt.Errorf("%w: %s must be an integer or a list of integers", ErrInvalidConfig, field)
	}
	for _, id := range many {
		if id < 0 {
			return nil, fmt.Errorf("%w: %s %d is negative", ErrInvalidConfig, field, id)
		}
	}
	return many, nil
}
