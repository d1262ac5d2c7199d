package costmodel

import (
	"fmt"
	"strings"

	"github.com/tandemllm/tandem/model"
	"github.com/tandemllm/tandem/parallel"
)

// Shape is what the cost model needs of a model: its geometry from
// config.json and the element sizes of weights, KV cache and the
// activations the allreduces carry.
type Shape struct {
	Name string
	Arch model.Arch
	// Geometry as config.json gives it.
	Layers, Hidden, Heads, KVHeads, HeadDim, Intermediate, Vocab int
	// MaxPositions is the longest context; TiedEmbeddings: the LM head is
	// the token embedding.
	MaxPositions   int
	TiedEmbeddings bool
	// Element sizes in bytes.
	WeightBytes, KVBytes, ActivationBytes int
}

// DTypes are element sizes in bytes; zero fields take the defaults of
// the hardware kind (see NewShape).
type DTypes struct {
	Weight, KV, Activation int
}

// KVCacheDTypeBytes is the element size of a `--kv-cache-dtype` value as
// the engine reads it: 0 for auto (NewShape then picks what the engine
// would), 4 for fp32, 2 for bf16 and fp16.
func KVCacheDTypeBytes(name string) (int, error) {
	switch strings.ToLower(name) {
	case "", "auto":
		return 0, nil
	case "fp32", "float32", "f32":
		return 4, nil
	case "bf16", "bfloat16", "fp16", "float16", "f16", "half":
		return 2, nil
	}
	return 0, fmt.Errorf("KV cache dtype %q: want auto, fp32, bf16 or fp16", name)
}

// NewShape takes a model's shape from its config. Defaults, as the engine
// runs: weights in config.json's torch_dtype (2 bytes if it is absent;
// float16 stays 2 on a CPU too, as compute/cpu's AVX2 and AVX-512 kernels
// keep it, only its generic Go kernels widening it to 4 at load); the KV
// cache as --kv-cache-dtype auto keeps it (the weights' dtype on a CPU,
// bf16 on a GPU); allreduced activations in float32 on a CPU, as the
// engine reduces them, and in bf16 on a GPU, where the model assumes
// NCCL reduces them on the device (today's engine stages them through
// host memory in float32, which it does not price).
func NewShape(name string, c *model.Config, kind string, dt DTypes) (Shape, error) {
	s := Shape{
		Name: name, Arch: c.Arch, Layers: c.Layers, Hidden: c.Hidden, Heads: c.Heads, KVHeads: c.KVHeads,
		HeadDim: c.HeadDim, Intermediate: c.Intermediate, Vocab: c.VocabSize,
		MaxPositions: c.MaxPositions, TiedEmbeddings: c.TieEmbeddings,
		WeightBytes: dt.Weight, KVBytes: dt.KV, ActivationBytes: dt.Activation,
	}
	if s.WeightBytes == 0 {
		s.WeightBytes = 2
		if strings.EqualFold(c.TorchDType, "float32") {
			s.WeightBytes = 4
		}
	}
	if s.KVBytes == 0 {
		s.KVBytes = 2
		if kind == KindCPU {
			s.KVBytes = s.WeightBytes
		}
	}
	if s.ActivationBytes == 0 {
		s.ActivationBytes = 2
		if kind == KindCPU {
			s.ActivationBytes = 4
		}
	}
	if s.Layers < 1 || s.Hidden < 1 || s.Heads < 1 || s.KVHeads < 1 || s.HeadDim < 1 || s.Vocab < 1 {
		return Shape{}, fmt.Errorf("%w: model %s has an empty dimension", model.ErrInvalidConfig, name)
	}
	return s, nil
}

// geometry is the part of the shape the shard plan needs.
func (s Shape) geometry() parallel.Geometry {
	return parallel.Geometry{Heads: s.Heads, KVHeads: s.KVHeads, HeadDim: s.HeadDim, Intermediate: s.Intermediate, Vocab: s.Vocab}
}

// Plan is rank 0's shard under TP degree tp (every rank's share is the
// same size but for a short last vocabulary shard).
func (s Shape) Plan(tp int) (*parallel.Plan, error) {
	return parallel.New(s.geometry(), tp, 0)
}

// rankShare is one rank's share of the model under a TP degree.
type rankShare struct {
	tp            int
	qHeads        int
	kvHeads       int
	intermediate  int
	vocab         int
	layerWeights  float64 // matrix elements per layer
	kvPerTokenRnk float64 // bytes of KV per token on this rank
}

func (s Shape) share(tp int) (rankShare, error) {
	p, err := s.Plan(tp)
	if err != nil {
		return rankShare{}, err
	}
	r := rankShare{tp: tp, qHeads: p.QHeads().Len(), kvHeads: p.KVHeads().Len(), intermediate: p.Intermediate().Len(), vocab: p.VocabShard()}
	h, hd := float64(s.Hidden), float64(s.HeadDim)
	switch s.Arch {
	case model.GPT2: // c_attn (q, k, v) column-parallel, c_proj row-parallel; fc and proj
		r.layerWeights = 4*h*hd*float64(r.qHeads) + 2*h*float64(r.intermediate)
	default: // q, k, v, o; gate, up, down
		r.layerWeights = h*hd*float64(2*r.qHeads+2*r.kvHeads) + 3*h*float64(r.intermediate)
	}
	r.kvPerTokenRnk = float64(2 * s.Layers * r.kvHeads * s.HeadDim * s.KVBytes)
	return r, nil
}

// KVBytesPerToken is the KV cache of one token over the whole model (all
// layers, keys and values, every KV head once).
func (s Shape) KVBytesPerToken() int64 {
	return int64(2 * s.Layers * s.KVHeads * s.HeadDim * s.KVBytes)
}

// KVBytesPerTokenPerRank is one rank's KV cache per token under TP tp:
// its KV heads, replicated ones counted on every rank holding them.
func (s Shape) KVBytesPerTokenPerRank(tp int) (int64, error) {
	r, err := s.share(tp)
	return int64(r.kvPerTokenRnk), err
}

// WeightBytesPerRank is the weights one rank reads per step under TP
// tp: its share of every layer's matrices and its LM head shard.
func (s Shape) WeightBytesPerRank(tp int) (int64, error) {
	r, err := s.share(tp)
	if err != nil {
		return 0, err
	}
	return int64((float64(s.Layers)*r.layerWeights + float64(r.vocab*s.Hidden)) * float64(s.WeightBytes)), nil
}

// ResidentBytesPerRank is what one rank keeps in device memory besides
// its KV cache: its weight shard plus the full token embedding when it
// is a separate matrix (every rank looks tokens up in the whole table).
func (s Shape) ResidentBytesPerRank(tp int) (int64, error) {
	w, err := s.WeightBytesPerRank(tp)
	if err != nil {
		return 0, err
	}
	if !s.TiedEmbeddings {
		w += int64(s.Vocab * s.Hidden * s.WeightBytes)
	}
	return w, nil
}

// AllReduceBytesPerToken is the allreduce payload of one token's row on
// a TP-tp group: 2 allreduces per layer of hidden × activation bytes
// (zero at TP 1), what `tandem bench compare` reports as analytic.
func (s Shape) AllReduceBytesPerToken(tp int) int64 {
	if tp <= 1 {
		return 0
	}
	return int64(2 * s.Layers * s.Hidden * s.ActivationBytes)
}

// KVTransferBytesPerToken is what moves from a TP-p prefill group to a
// TP-d decode group per prompt token: every decode rank receives each of
// its KV heads once (parallel.KVTransfers), so replicated heads on the
// decode side are sent once per replica.
func (s Shape) KVTransferBytesPerToken(p, d int) (int64, error) {
	ts, err := parallel.KVTransfers(s.KVHeads, p, d)
	if err != nil {
		return 0, err
	}
	var heads int
	for _, t := range ts {
		heads += t.Heads.Len()
	}
	return int64(2 * s.Layers * heads * s.HeadDim * s.KVBytes), nil
}
