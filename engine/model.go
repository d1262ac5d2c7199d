package engine

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/tandemllm/tandem/compute"
	"github.com/tandemllm/tandem/model"
	"github.com/tandemllm/tandem/model/safetensors"
)

// TensorSource yields a model's weights by Hugging Face name.
// *safetensors.Set is one.
type TensorSource interface {
	model.TensorShapes
	Tensor(name string) (safetensors.Tensor, error)
}

// Model is a model's configuration and weights loaded into a backend.
type Model struct {
	cfg      *model.Config
	be       compute.Backend
	w        weights
	invFreq  []float32
	attnSpec compute.AttnSpec
	eos      []int32
	// keep holds host memory the backend may reference (transposed or
	// converted weights) and closer the files it maps.
	keep   [][]byte
	closer io.Closer
}

// Config is the model's configuration.
func (m *Model) Config() *model.Config { return m.cfg }

// Backend is the backend the model runs on.
func (m *Model) Backend() compute.Backend { return m.be }

// Close releases the model's files. The backend stays open.
func (m *Model) Close() error {
	if m.closer != nil {
		return m.closer.Close()
	}
	return nil
}

// LoadModel builds a Model of cfg from src on be. closer, if not nil, is
// closed by Model.Close (the files src maps).
func LoadModel(cfg *model.Config, src TensorSource, be compute.Backend, closer io.Closer) (*Model, error) {
	m := &Model{cfg: cfg, be: be, attnSpec: attnSpec(cfg), closer: closer}
	for _, id := range cfg.EOSTokenIDs {
		m.eos = append(m.eos, int32(id))
	}
	if err := model.CheckTensors(cfg, src); err != nil {
		return nil, err
	}
	l := loader{m: m, src: src}
	var err error
	switch cfg.Arch {
	case model.Llama:
		m.invFreq = cfg.InvFreq()
		err = l.llama()
	case model.GPT2:
		err = l.gpt2()
	default:
		err = fmt.Errorf("engine: architecture %q is not supported", cfg.Arch)
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

// loader reads weights from a source into the backend, remembering the
// first error so the architecture code reads as a list of tensors.
type loader struct {
	m   *Model
	src TensorSource
	err error
}

func (l *loader) tensor(name string) safetensors.Tensor {
	if l.err != nil {
		return safetensors.Tensor{}
	}
	name = model.ResolveName(l.src, name)
	t, err := l.src.Tensor(name)
	if err != nil {
		l.err = err
		return safetensors.Tensor{}
	}
	if _, ok := dtypes[t.DType]; !ok {
		l.err = fmt.Errorf("%s: %s has dtype %s; supported weight dtypes are F32, BF16 and F16", l.src.Where(name), name, t.DType)
		return safetensors.Tensor{}
	}
	prefault(t.Data)
	return t
}

// prefault reads one byte of every page of a mapped tensor, so the page
// faults happen at load time and not in the first request's TTFT.
func prefault(data []byte) {
	var sink byte
	for i := 0; i < len(data); i += 4096 {
		sink += data[i]
	}
	_ = sink
}

var dtypes = map[safetensors.DType]compute.DType{safetensors.F32: compute.F32, safetensors.BF16: compute.BF16, safetensors.F16: compute.F16}

// mat loads a [rows, cols] matrix.
func (l *loader) mat(name string, rows, cols int) compute.Mat {
	t := l.tensor(name)
	if l.err != nil {
		return nil
	}
	return l.loadMat(name, dtypes[t.DType], rows, cols, t.Data)
}

// matT loads a matrix stored transposed, [cols, rows] (GPT-2's Conv1D),
// rows [from, to) of the transposed matrix.
func (l *loader) matT(name string, rows, cols, from, to int) compute.Mat {
	t := l.tensor(name)
	if l.err != nil {
		return nil
	}
	dt := dtypes[t.DType]
	size := dt.Size()
	out := make([]byte, (to-from)*cols*size)
	for r := from; r < to; r++ {
		for c := range cols {
			copy(out[((r-from)*cols+c)*size:][:size], t.Data[(c*rows+r)*size:][:size])
		}
	}
	l.m.keep = append(l.m.keep, out)
	return l.loadMat(name, dt, to-from, cols, out)
}

func (l *loader) loadMat(name string, dt compute.DType, rows, cols int, data []byte) compute.Mat {
	m, err := l.m.be.LoadMat(dt, rows, cols, data)
	if err != nil {
		l.err = fmt.Errorf("%s: loading %s: %w", l.src.Where(name), name, err)
	}
	return m
}

// vec loads a vector [n] (norm weight or bias), or values [from, to) of it.
func (l *loader) vec(name string, n, from, to int) compute.Buf {
	t := l.tensor(name)
	if l.err != nil {
		return nil
	}
	all, err := t.Float32s()
	if err != nil {
		l.err = fmt.Errorf("%s: %w", l.src.Where(name), err)
		return nil
	}
	vals := all[from:to]
	b := l.m.be.Alloc(len(vals))
	l.m.be.Write(b, 0, vals)
	return b
}

func (l *loader) llama() error {
	c := l.m.cfg
	w := &l.m.w
	h, qd, kvd := c.Hidden, c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	w.embed = l.mat("model.embed_tokens.weight", c.VocabSize, h)
	for i := range c.Layers {
		p := fmt.Sprintf("model.layers.%d.", i)
		lw := layerWeights{
			attnNorm: l.vec(p+"input_layernorm.weight", h, 0, h),
			q:        l.mat(p+"self_attn.q_proj.weight", qd, h),
			k:        l.mat(p+"self_attn.k_proj.weight", kvd, h),
			v:        l.mat(p+"self_attn.v_proj.weight", kvd, h),
			o:        l.mat(p+"self_attn.o_proj.weight", h, qd),
			mlpNorm:  l.vec(p+"post_attention_layernorm.weight", h, 0, h),
			gate:     l.mat(p+"mlp.gate_proj.weight", c.Intermediate, h),
			up:       l.mat(p+"mlp.up_proj.weight", c.Intermediate, h),
			down:     l.mat(p+"mlp.down_proj.weight", h, c.Intermediate),
		}
		if c.AttnBias {
			lw.qBias = l.vec(p+"self_attn.q_proj.bias", qd, 0, qd)
			lw.kBias = l.vec(p+"self_attn.k_proj.bias", kvd, 0, kvd)
			lw.vBias = l.vec(p+"self_attn.v_proj.bias", kvd, 0, kvd)
		}
		if c.QKNorm {
			lw.qNorm = l.vec(p+"self_attn.q_norm.weight", c.HeadDim, 0, c.HeadDim)
			lw.kNorm = l.vec(p+"self_attn.k_norm.weight", c.HeadDim, 0, c.HeadDim)
		}
		w.layers = append(w.layers, lw)
	}
	w.finalNorm = l.vec("model.norm.weight", h, 0, h)
	w.lmHead = w.embed
	if !c.TieEmbeddings {
		w.lmHead = l.mat("lm_head.weight", c.VocabSize, h)
	}
	return l.err
}

func (l *loader) gpt2() error {
	c := l.m.cfg
	w := &l.m.w
	h, in := c.Hidden, c.Intermediate
	const pre = "transformer."
	w.embed = l.mat(pre+"wte.weight", c.VocabSize, h)
	w.posEmbed = l.mat(pre+"wpe.weight", c.MaxPositions, h)
	for i := range c.Layers {
		p := fmt.Sprintf("%sh.%d.", pre, i)
		lw := layerWeights{
			attnNorm:     l.vec(p+"ln_1.weight", h, 0, h),
			attnNormBias: l.vec(p+"ln_1.bias", h, 0, h),
			q:            l.matT(p+"attn.c_attn.weight", 3*h, h, 0, h),
			k:            l.matT(p+"attn.c_attn.weight", 3*h, h, h, 2*h),
			v:            l.matT(p+"attn.c_attn.weight", 3*h, h, 2*h, 3*h),
			qBias:        l.vec(p+"attn.c_attn.bias", 3*h, 0, h),
			kBias:        l.vec(p+"attn.c_attn.bias", 3*h, h, 2*h),
			vBias:        l.vec(p+"attn.c_attn.bias", 3*h, 2*h, 3*h),
			o:            l.matT(p+"attn.c_proj.weight", h, h, 0, h),
			oBias:        l.vec(p+"attn.c_proj.bias", h, 0, h),
			mlpNorm:      l.vec(p+"ln_2.weight", h, 0, h),
			mlpNormBias:  l.vec(p+"ln_2.bias", h, 0, h),
			up:           l.matT(p+"mlp.c_fc.weight", in, h, 0, in),
			upBias:       l.vec(p+"mlp.c_fc.bias", in, 0, in),
			down:         l.matT(p+"mlp.c_proj.weight", h, in, 0, h),
			downBias:     l.vec(p+"mlp.c_proj.bias", h, 0, h),
		}
		w.layers = append(w.layers, lw)
	}
	w.finalNorm = l.vec(pre+"ln_f.weight", h, 0, h)
	w.finalNormBias = l.vec(pre+"ln_f.bias", h, 0, h)
	w.lmHead = w.embed
	if !c.TieEmbeddings {
		w.lmHead = l.mat("lm_head.weight", c.VocabSize, h)
	}
	return l.err
}

// Open loads the model directory dir (config.json and safetensors
// weights) onto be.
func Open(dir string, be compute.Backend) (*Model, error) {
	cfg, err := model.LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	m, err := LoadModel(cfg, set, be, set)
	if err != nil {
		set.Close()
		return nil, err
	}
	return m, nil
}
