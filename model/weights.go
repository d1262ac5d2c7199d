package model

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// TensorKind says what role a weight plays, which decides how it is
// initialised and sharded.
type TensorKind int

// Tensor kinds.
const (
	// KindEmbedding is a lookup table: token or position embeddings.
	KindEmbedding TensorKind = iota
	// KindMatrix is a linear layer's weight.
	KindMatrix
	// KindNorm is a normalisation gain (RMSNorm or LayerNorm weight).
	KindNorm
	// KindBias is an additive bias, including LayerNorm's.
	KindBias
)

func (k TensorKind) String() string {
	switch k {
	case KindEmbedding:
		return "embedding"
	case KindMatrix:
		return "matrix"
	case KindNorm:
		return "norm"
	case KindBias:
		return "bias"
	}
	return fmt.Sprintf("TensorKind(%d)", int(k))
}

// TensorSpec is one weight a model of a Config must have.
type TensorSpec struct {
	// Name is Hugging Face's name, as transformers' save_pretrained
	// writes it (GPT-2 with the "transformer." prefix).
	Name  string
	Shape []int
	Kind  TensorKind
	// Layer is the transformer layer the weight belongs to, -1 for the
	// embeddings, final norm and LM head.
	Layer int
}

// Elements is the product of the shape.
func (s TensorSpec) Elements() int64 {
	n := int64(1)
	for _, d := range s.Shape {
		n *= int64(d)
	}
	return n
}

// Tensors lists every weight of the model in file order: embeddings, the
// layers in order, then the final norm and LM head. Linear weights use
// PyTorch's [out, in] layout, except GPT-2's Conv1D weights, which are
// [in, out].
func (c *Config) Tensors() []TensorSpec {
	if c.Arch == GPT2 {
		return c.gpt2Tensors()
	}
	return c.llamaTensors()
}

func (c *Config) llamaTensors() []TensorSpec {
	h, q, kv := c.Hidden, c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	out := []TensorSpec{{"model.embed_tokens.weight", []int{c.VocabSize, h}, KindEmbedding, -1}}
	for i := range c.Layers {
		p := fmt.Sprintf("model.layers.%d.", i)
		add := func(name string, kind TensorKind, shape ...int) {
			out = append(out, TensorSpec{p + name, shape, kind, i})
		}
		add("input_layernorm.weight", KindNorm, h)
		add("self_attn.q_proj.weight", KindMatrix, q, h)
		add("self_attn.k_proj.weight", KindMatrix, kv, h)
		add("self_attn.v_proj.weight", KindMatrix, kv, h)
		if c.AttnBias {
			add("self_attn.q_proj.bias", KindBias, q)
			add("self_attn.k_proj.bias", KindBias, kv)
			add("self_attn.v_proj.bias", KindBias, kv)
		}
		if c.QKNorm {
			add("self_attn.q_norm.weight", KindNorm, c.HeadDim)
			add("self_attn.k_norm.weight", KindNorm, c.HeadDim)
		}
		add("self_attn.o_proj.weight", KindMatrix, h, q)
		add("post_attention_layernorm.weight", KindNorm, h)
		add("mlp.gate_proj.weight", KindMatrix, c.Intermediate, h)
		add("mlp.up_proj.weight", KindMatrix, c.Intermediate, h)
		add("mlp.down_proj.weight", KindMatrix, h, c.Intermediate)
	}
	out = append(out, TensorSpec{"model.norm.weight", []int{h}, KindNorm, -1})
	if !c.TieEmbeddings {
		out = append(out, TensorSpec{"lm_head.weight", []int{c.VocabSize, h}, KindMatrix, -1})
	}
	return out
}

func (c *Config) gpt2Tensors() []TensorSpec {
	h, in := c.Hidden, c.Intermediate
	out := []TensorSpec{
		{"transformer.wte.weight", []int{c.VocabSize, h}, KindEmbedding, -1},
		{"transformer.wpe.weight", []int{c.MaxPositions, h}, KindEmbedding, -1},
	}
	for i := range c.Layers {
		p := fmt.Sprintf("transformer.h.%d.", i)
		add := func(name string, kind TensorKind, shape ...int) {
			out = append(out, TensorSpec{p + name, shape, kind, i})
		}
		add("ln_1.weight", KindNorm, h)
		add("ln_1.bias", KindBias, h)
		add("attn.c_attn.weight", KindMatrix, h, 3*h)
		add("attn.c_attn.bias", KindBias, 3*h)
		add("attn.c_proj.weight", KindMatrix, h, h)
		add("attn.c_proj.bias", KindBias, h)
		add("ln_2.weight", KindNorm, h)
		add("ln_2.bias", KindBias, h)
		add("mlp.c_fc.weight", KindMatrix, h, in)
		add("mlp.c_fc.bias", KindBias, in)
		add("mlp.c_proj.weight", KindMatrix, in, h)
		add("mlp.c_proj.bias", KindBias, h)
	}
	out = append(out,
		TensorSpec{"transformer.ln_f.weight", []int{h}, KindNorm, -1},
		TensorSpec{"transformer.ln_f.bias", []int{h}, KindBias, -1})
	if !c.TieEmbeddings {
		out = append(out, TensorSpec{"lm_head.weight", []int{c.VocabSize, h}, KindMatrix, -1})
	}
	return out
}

// Params is the number of parameters, counting tied embeddings once.
func (c *Config) Params() int64 {
	var n int64
	for _, t := range c.Tensors() {
		n += t.Elements()
	}
	return n
}

// TensorShapes is what CheckTensors needs of a weight file or set of
// files (safetensors.File and safetensors.Set provide it).
type TensorShapes interface {
	// Shape returns a tensor's shape and whether the tensor exists.
	Shape(name string) ([]int, bool)
	// Where names the file holding a tensor, for error messages.
	Where(name string) string
}

// gpt2Prefix is the prefix current transformers gives GPT-2's weights;
// the original GPT-2 checkpoints have none ("wte.weight", "h.0.ln_1.weight").
const gpt2Prefix = "transformer."

// ResolveName returns the name under which src holds the weight that
// Tensors calls name: name itself, or for GPT-2 weights the name without
// the "transformer." prefix when only that form exists. A name src holds
// in neither form is returned unchanged.
func ResolveName(src TensorShapes, name string) string {
	if _, ok := src.Shape(name); ok {
		return name
	}
	if bare, ok := strings.CutPrefix(name, gpt2Prefix); ok {
		if _, ok := src.Shape(bare); ok {
			return bare
		}
	}
	return name
}

// ErrTensorMismatch is wrapped by CheckTensors' errors: a weight is
// missing or has the wrong shape for the config.
var ErrTensorMismatch = errors.New("weights do not match config.json")

// maxReported bounds how many problems CheckTensors lists.
const maxReported = 5

// CheckTensors verifies that src holds every weight c needs, with the
// shape c implies. Extra tensors (buffers, an untied copy of the LM head)
// are allowed. The error lists the first few problems, each naming the
// file, the tensor and both shapes.
func CheckTensors(c *Config, src TensorShapes) error {
	var errs []error
	problems := 0
	for _, spec := range c.Tensors() {
		name := ResolveName(src, spec.Name)
		shape, ok := src.Shape(name)
		var err error
		switch {
		case !ok:
			err = fmt.Errorf("%s: %w: %s is missing (config.json implies %v)", src.Where(name), ErrTensorMismatch, name, spec.Shape)
		case !slices.Equal(shape, spec.Shape):
			err = fmt.Errorf("%s: %w: %s has shape %v, config.json says %v", src.Where(name), ErrTensorMismatch, name, shape, spec.Shape)
		default:
			continue
		}
		problems++
		if problems <= maxReported {
			errs = append(errs, err)
		}
	}
	if problems > maxReported {
		errs = append(errs, fmt.Errorf("and %d more mismatched tensors", problems-maxReported))
	}
	return errors.Join(errs...)
}
