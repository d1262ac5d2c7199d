package engine

import (
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/tandemllm/tandem/compute"
	"github.com/tandemllm/tandem/model"
	"github.com/tandemllm/tandem/model/safetensors"
	"github.com/tandemllm/tandem/parallel"
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
	plan     *parallel.Plan
	w        weights
	invFreq  []float32
	attnSpec compute.AttnSpec
	// wdtype is the dtype of the weights as stored (of the first matrix
	// loaded), whatever the backend converted them to.
	wdtype  compute.DType
	wloaded bool
	eos     []int32
	// arena holds host memory the backend may reference (transposed or
	// sliced weights) and closer the files it maps.
	arena  hostArena
	closer io.Closer
}

// Config is the model's configuration.
func (m *Model) Config() *model.Config { return m.cfg }

// Plan is the model's tensor-parallel plan (TP 1 when not sharded).
func (m *Model) Plan() *parallel.Plan { return m.plan }

// WeightDType is the dtype of the model's weights in its files (that of
// its first matrix, the token embedding).
func (m *Model) WeightDType() compute.DType { return m.wdtype }

// Backend is the backend the model runs on.
func (m *Model) Backend() compute.Backend { return m.be }

// Close releases the model's files and the weights copied to host
// memory. The backend stays open.
func (m *Model) Close() error {
	err := m.arena.release()
	if m.closer != nil {
		err = errors.Join(err, m.closer.Close())
	}
	return err
}

// Shard selects a rank's share of a tensor-parallel model. The zero
// value is the whole model (TP 1).
type Shard struct {
	TP, Rank int
}

// ShardPlan is sh's share of a model of cfg, or an error when the model
// does not split over sh.TP ranks.
func ShardPlan(cfg *model.Config, sh Shard) (*parallel.Plan, error) {
	return parallel.New(parallel.Geometry{
		Heads: cfg.Heads, KVHeads: cfg.KVHeads, HeadDim: cfg.HeadDim,
		Intermediate: cfg.Intermediate, Vocab: cfg.VocabSize,
	}, max(sh.TP, 1), sh.Rank)
}

// LoadModel builds sh's share of a model of cfg from src on be; it reads
// only the slices of the weights the rank needs. closer, if not nil, is
// closed by Model.Close (the files src maps).
func LoadModel(cfg *model.Config, src TensorSource, be compute.Backend, closer io.Closer, sh Shard) (*Model, error) {
	plan, err := ShardPlan(cfg, sh)
	if err != nil {
		return nil, err
	}
	m := &Model{cfg: cfg, be: be, plan: plan, closer: closer}
	m.attnSpec = compute.AttnSpec{
		Heads: plan.QHeads().Len(), KVHeads: plan.KVHeads().Len(), HeadDim: cfg.HeadDim,
		Scale: float32(1 / math.Sqrt(float64(cfg.HeadDim))),
	}
	for _, id := range cfg.EOSTokenIDs {
		m.eos = append(m.eos, int32(id))
	}
	if err := model.CheckTensors(cfg, src); err != nil {
		return nil, err
	}
	l := loader{m: m, src: src}
	if hr, ok := be.(hostResident); ok && hr.HostResident() {
		l.copyAll = true
	}
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
		_ = m.arena.release()
		return nil, err
	}
	l.dropCopied()
	return m, nil
}

// hostResident is a backend that computes on the host memory LoadMat is
// given, in place (compute/cpu). For one the loader copies every weight
// matrix the forward pass streams into the model's host arena, on 2 MiB
// pages, rather than hand it the files' page-cache pages, mostly 4 KiB
// ones: decode streams weights from memory with fewer page walks
// (llama-160m bf16 on one thread read them at 81% of the read bandwidth
// in place, 90% copied; docs/benchmarking.md), at the cost of a copy at
// load. The token embedding, of which a step reads a row per token, stays
// in place, shared through the page cache by the ranks of a host.
type hostResident interface{ HostResident() bool }

// loader reads weights from a source into the backend, remembering the
// first error so the architecture code reads as a list of tensors.
type loader struct {
	m   *Model
	src TensorSource
	err error
	// copyAll copies every matrix but the embedding into the arena (see
	// hostResident).
	copyAll bool
	// inPlace names the tensors used from the mapping, whose pages stay;
	// copied holds the data of those copied out of it (see dropCopied).
	inPlace map[string]bool
	copied  map[string][]byte
}

// copiedFrom notes that a tensor's data was copied out of its mapping.
func (l *loader) copiedFrom(name string, t safetensors.Tensor) {
	if l.copied == nil {
		l.copied = map[string][]byte{}
	}
	l.copied[name] = t.Data
}

// dropCopied takes the pages of every copied tensor that no matrix uses in
// place out of the process's mapping (the page cache keeps them), once
// loading is done, so the weights do not count twice in its RSS; a tensor
// copied in parts (gpt2's fused c_attn, a TP shard's columns) is dropped
// once, after its last part.
func (l *loader) dropCopied() {
	for name, data := range l.copied {
		if !l.inPlace[name] {
			dropPages(data)
		}
	}
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
	return t
}

// prefault reads one byte of every page of a mapped tensor, so the page
// faults happen at load time and not in the first request's TTFT.
func prefault(data []byte) {
	var sink byte
	for i := 0; i < len(data); i += 4096 {
		sink += data[i]
	}
	runtime.KeepAlive(sink) // the loads must happen
}

// parallelCopy copies src into dst (as long) on every core, in parts of
// whole huge pages: most of a copy into fresh arena memory is the kernel
// zeroing the pages as they fault in, which one core does at a few GB/s.
func parallelCopy(dst, src []byte) {
	parts := min(runtime.NumCPU(), len(src)/hugePage)
	if parts <= 1 {
		copy(dst, src)
		return
	}
	per := (len(src)/parts + hugePage - 1) / hugePage * hugePage
	var wg sync.WaitGroup
	for from := 0; from < len(src); from += per {
		to := min(from+per, len(src))
		wg.Go(func() { copy(dst[from:to], src[from:to]) })
	}
	wg.Wait()
}

var dtypes = map[safetensors.DType]compute.DType{safetensors.F32: compute.F32, safetensors.BF16: compute.BF16, safetensors.F16: compute.F16}

// all is the whole range of n indices.
func all(n int) parallel.Range { return parallel.Range{To: n} }

// mat loads rows × cols of a matrix stored [out, in]. A full-width row
// range is used in place unless the loader copies all; a column range is
// copied.
func (l *loader) mat(name string, rows, cols parallel.Range) compute.Mat {
	return l.matFrom(name, rows, cols, !l.copyAll)
}

// embedding loads a full token (or position) embedding, always in place:
// a step reads one row per token of it.
func (l *loader) embedding(name string, rows, cols int) compute.Mat {
	if l.inPlace == nil {
		l.inPlace = map[string]bool{}
	}
	l.inPlace[name] = true
	return l.matFrom(name, all(rows), all(cols), true)
}

func (l *loader) matFrom(name string, rows, cols parallel.Range, inPlace bool) compute.Mat {
	t := l.tensor(name)
	if l.err != nil {
		return nil
	}
	dt := dtypes[t.DType]
	size, width := dt.Size(), t.Shape[1]
	if cols.From == 0 && cols.To == width {
		data := t.Data[rows.From*width*size : rows.To*width*size]
		if inPlace {
			// Copies read their pages anyway; data used in place is
			// read once now.
			prefault(data)
			return l.loadMat(name, dt, rows.Len(), cols.Len(), data)
		}
		out := l.alloc(len(data))
		if out == nil {
			return nil
		}
		parallelCopy(out, data)
		l.copiedFrom(name, t)
		return l.loadMat(name, dt, rows.Len(), cols.Len(), out)
	}
	out := l.alloc(rows.Len() * cols.Len() * size)
	if out == nil {
		return nil
	}
	for r := rows.From; r < rows.To; r++ {
		copy(out[(r-rows.From)*cols.Len()*size:], t.Data[(r*width+cols.From)*size:(r*width+cols.To)*size])
	}
	l.copiedFrom(name, t)
	return l.loadMat(name, dt, rows.Len(), cols.Len(), out)
}

// matT loads rows × cols of a matrix stored transposed, [in, out]
// (GPT-2's Conv1D), into the [out, in] layout.
func (l *loader) matT(name string, rows, cols parallel.Range) compute.Mat {
	t := l.tensor(name)
	if l.err != nil {
		return nil
	}
	dt := dtypes[t.DType]
	size, stride := dt.Size(), t.Shape[1]
	out := l.alloc(rows.Len() * cols.Len() * size)
	if out == nil {
		return nil
	}
	i := 0
	for r := rows.From; r < rows.To; r++ {
		for c := cols.From; c < cols.To; c++ {
			copy(out[i:i+size], t.Data[(c*stride+r)*size:])
			i += size
		}
	}
	l.copiedFrom(name, t)
	return l.loadMat(name, dt, rows.Len(), cols.Len(), out)
}

// tied loads a token embedding that is also the output layer (GPT-2's)
// as a copy in the arena, like the Conv1D weights beside it: the head
// streams from it on 2 MiB pages, 2-4 points of the read bandwidth more
// than from the file's mostly 4 KiB pages (docs/benchmarking.md). The
// embedding (every row) and the head (vocab, this rank's rows) share it.
func (l *loader) tied(name string, vocab, cols parallel.Range) (embed, head compute.Mat) {
	t := l.tensor(name)
	if l.err != nil {
		return nil, nil
	}
	out := l.alloc(len(t.Data))
	if out == nil {
		return nil, nil
	}
	parallelCopy(out, t.Data)
	l.copiedFrom(name, t)
	dt := dtypes[t.DType]
	row := cols.Len() * dt.Size()
	embed = l.loadMat(name, dt, t.Shape[0], cols.Len(), out)
	head = l.loadMat(name, dt, vocab.Len(), cols.Len(), out[vocab.From*row:vocab.To*row])
	return embed, head
}

// alloc is n bytes of the model's host arena for a copied weight, or nil
// (and l.err set) when it cannot be had.
func (l *loader) alloc(n int) []byte {
	out, err := l.m.arena.alloc(n)
	if err != nil {
		l.err = err
		return nil
	}
	return out
}

func (l *loader) loadMat(name string, dt compute.DType, rows, cols int, data []byte) compute.Mat {
	if !l.m.wloaded {
		l.m.wdtype, l.m.wloaded = dt, true
	}
	m, err := l.m.be.LoadMat(dt, rows, cols, data)
	if err != nil {
		l.err = fmt.Errorf("%s: loading %s: %w", l.src.Where(name), name, err)
	}
	return m
}

// vec loads values r of a vector (norm weight or bias).
func (l *loader) vec(name string, r parallel.Range) compute.Buf {
	t := l.tensor(name)
	if l.err != nil {
		return nil
	}
	all, err := t.Float32s()
	if err != nil {
		l.err = fmt.Errorf("%s: %w", l.src.Where(name), err)
		return nil
	}
	vals := all[r.From:r.To]
	b := l.m.be.Alloc(len(vals))
	l.m.be.Write(b, 0, vals)
	return b
}

// shard are the ranges of this rank's share, in elements.
type shard struct {
	q, kv, inter, vocab parallel.Range
}

func (m *Model) shard() shard {
	d := m.cfg.HeadDim
	return shard{
		q:     m.plan.QHeads().Scale(d),
		kv:    m.plan.KVHeads().Scale(d),
		inter: m.plan.Intermediate(),
		vocab: m.plan.Vocab(),
	}
}

func (l *loader) llama() error {
	c := l.m.cfg
	w := &l.m.w
	sh := l.m.shard()
	h := all(c.Hidden)
	w.embed = l.embedding("model.embed_tokens.weight", c.VocabSize, c.Hidden)
	for i := range c.Layers {
		p := fmt.Sprintf("model.layers.%d.", i)
		lw := layerWeights{
			attnNorm: l.vec(p+"input_layernorm.weight", h),
			q:        l.mat(p+"self_attn.q_proj.weight", sh.q, h),
			k:        l.mat(p+"self_attn.k_proj.weight", sh.kv, h),
			v:        l.mat(p+"self_attn.v_proj.weight", sh.kv, h),
			o:        l.mat(p+"self_attn.o_proj.weight", h, sh.q),
			mlpNorm:  l.vec(p+"post_attention_layernorm.weight", h),
			gate:     l.mat(p+"mlp.gate_proj.weight", sh.inter, h),
			up:       l.mat(p+"mlp.up_proj.weight", sh.inter, h),
			down:     l.mat(p+"mlp.down_proj.weight", h, sh.inter),
		}
		if c.AttnBias {
			lw.qBias = l.vec(p+"self_attn.q_proj.bias", sh.q)
			lw.kBias = l.vec(p+"self_attn.k_proj.bias", sh.kv)
			lw.vBias = l.vec(p+"self_attn.v_proj.bias", sh.kv)
		}
		if c.QKNorm {
			lw.qNorm = l.vec(p+"self_attn.q_norm.weight", all(c.HeadDim))
			lw.kNorm = l.vec(p+"self_attn.k_norm.weight", all(c.HeadDim))
		}
		w.layers = append(w.layers, lw)
	}
	w.finalNorm = l.vec("model.norm.weight", h)
	head := "model.embed_tokens.weight"
	if !c.TieEmbeddings {
		head = "lm_head.weight"
	}
	w.lmHead = l.mat(head, sh.vocab, h)
	return l.err
}

func (l *loader) gpt2() error {
	c := l.m.cfg
	w := &l.m.w
	sh := l.m.shard()
	h := all(c.Hidden)
	off := func(r parallel.Range, k int) parallel.Range { return parallel.Range{From: r.From + k, To: r.To + k} }
	const pre = "transformer."
	if c.TieEmbeddings {
		w.embed, w.lmHead = l.tied(pre+"wte.weight", sh.vocab, h)
	} else {
		w.embed = l.embedding(pre+"wte.weight", c.VocabSize, c.Hidden)
		w.lmHead = l.mat("lm_head.weight", sh.vocab, h)
	}
	w.posEmbed = l.embedding(pre+"wpe.weight", c.MaxPositions, c.Hidden)
	for i := range c.Layers {
		p := fmt.Sprintf("%sh.%d.", pre, i)
		lw := layerWeights{
			attnNorm:     l.vec(p+"ln_1.weight", h),
			attnNormBias: l.vec(p+"ln_1.bias", h),
			q:            l.matT(p+"attn.c_attn.weight", sh.q, h),
			k:            l.matT(p+"attn.c_attn.weight", off(sh.kv, c.Hidden), h),
			v:            l.matT(p+"attn.c_attn.weight", off(sh.kv, 2*c.Hidden), h),
			qBias:        l.vec(p+"attn.c_attn.bias", sh.q),
			kBias:        l.vec(p+"attn.c_attn.bias", off(sh.kv, c.Hidden)),
			vBias:        l.vec(p+"attn.c_attn.bias", off(sh.kv, 2*c.Hidden)),
			o:            l.matT(p+"attn.c_proj.weight", h, sh.q),
			oBias:        l.vec(p+"attn.c_proj.bias", h),
			mlpNorm:      l.vec(p+"ln_2.weight", h),
			mlpNormBias:  l.vec(p+"ln_2.bias", h),
			up:           l.matT(p+"mlp.c_fc.weight", sh.inter, h),
			upBias:       l.vec(p+"mlp.c_fc.bias", sh.inter),
			down:         l.matT(p+"mlp.c_proj.weight", h, sh.inter),
			downBias:     l.vec(p+"mlp.c_proj.bias", h),
		}
		w.layers = append(w.layers, lw)
	}
	w.finalNorm = l.vec(pre+"ln_f.weight", h)
	w.finalNormBias = l.vec(pre+"ln_f.bias", h)
	return l.err
}

// Open loads sh's share of the model directory dir (config.json and
// safetensors weights) onto be.
func Open(dir string, be compute.Backend, sh Shard) (*Model, error) {
	cfg, err := model.LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	m, err := LoadModel(cfg, set, be, set, sh)
	if err != nil {
		set.Close()
		return nil, err
	}
	return m, nil
}
