package engine

import (
	"math"

	"github.com/tandemllm/tandem/compute"
	"github.com/tandemllm/tandem/model"
)

// layerWeights are one transformer layer's weights in backend memory.
// Fields an architecture does not use are nil.
type layerWeights struct {
	attnNorm, attnNormBias compute.Buf
	q, k, v, o             compute.Mat
	qBias, kBias, vBias    compute.Buf
	oBias                  compute.Buf
	qNorm, kNorm           compute.Buf
	mlpNorm, mlpNormBias   compute.Buf
	gate, up, down         compute.Mat
	upBias, downBias       compute.Buf
}

// weights are a whole model's weights in backend memory.
type weights struct {
	embed         compute.Mat // [vocab, hidden]
	posEmbed      compute.Mat // GPT-2 only: [positions, hidden]
	layers        []layerWeights
	finalNorm     compute.Buf
	finalNormBias compute.Buf
	lmHead        compute.Mat // embed when tied
}

// batch is the flattened input of one forward pass: T token rows from one
// or more sequences.
type batch struct {
	tokens    []int32
	positions []int32
	slots     []int32
	seqs      []compute.AttnSeq
	// logitRows are the rows whose logits are computed, in output order.
	logitRows []int32
}

func (b *batch) reset() {
	b.tokens, b.positions, b.slots = b.tokens[:0], b.positions[:0], b.slots[:0]
	b.seqs, b.logitRows = b.seqs[:0], b.logitRows[:0]
}

// scratch holds the activation buffers of a forward pass, sized for at
// most maxRows rows so steps allocate nothing.
type scratch struct {
	maxRows                int
	x, h, q, k, v, attn, o compute.Buf
	gate, up               compute.Buf
	pos                    compute.Buf // GPT-2 position embeddings
	logitIn, logits        compute.Buf
	logitRows              int
	hostLogits             []float32
}

func newScratch(be compute.Backend, cfg *model.Config, maxRows, maxLogitRows int) *scratch {
	qw := cfg.Heads * cfg.HeadDim
	kvw := cfg.KVHeads * cfg.HeadDim
	return &scratch{
		maxRows:    maxRows,
		x:          be.Alloc(maxRows * cfg.Hidden),
		h:          be.Alloc(maxRows * cfg.Hidden),
		q:          be.Alloc(maxRows * qw),
		k:          be.Alloc(maxRows * kvw),
		v:          be.Alloc(maxRows * kvw),
		attn:       be.Alloc(maxRows * qw),
		o:          be.Alloc(maxRows * cfg.Hidden),
		gate:       be.Alloc(maxRows * cfg.Intermediate),
		up:         be.Alloc(maxRows * cfg.Intermediate),
		pos:        be.Alloc(maxRows * cfg.Hidden),
		logitIn:    be.Alloc(maxLogitRows * cfg.Hidden),
		logits:     be.Alloc(maxLogitRows * cfg.VocabSize),
		logitRows:  maxLogitRows,
		hostLogits: make([]float32, maxLogitRows*cfg.VocabSize),
	}
}

// forward runs the model over b and returns the logits of b.logitRows,
// row-major [len(logitRows), vocab], in memory owned by the engine.
func (e *Engine) forward(b *batch) []float32 {
	m, s := e.m, e.scratch
	be, cfg, w := m.be, m.cfg, m.w
	t := len(b.tokens)
	x := be.View(s.x, 0, t*cfg.Hidden)
	be.Embed(x, w.embed, b.tokens)
	if w.posEmbed != nil {
		pos := be.View(s.pos, 0, t*cfg.Hidden)
		be.Embed(pos, w.posEmbed, b.positions)
		be.Add(x, x, pos, t*cfg.Hidden)
	}
	for l := range w.layers {
		m.layer(s, e.kv, b, l, t)
	}
	n := len(b.logitRows)
	if n == 0 {
		return nil
	}
	in := be.View(s.logitIn, 0, n*cfg.Hidden)
	be.Gather(in, x, b.logitRows, cfg.Hidden)
	m.norm(in, in, w.finalNorm, w.finalNormBias, n)
	logits := be.View(s.logits, 0, n*cfg.VocabSize)
	be.MatMul(logits, in, w.lmHead, n)
	out := s.hostLogits[:n*cfg.VocabSize]
	be.Read(out, logits, 0)
	return out
}

// norm applies the architecture's normalisation (RMSNorm, or LayerNorm
// when a bias is present) over m rows of the hidden width.
func (m *Model) norm(dst, x, w, bias compute.Buf, rows int) {
	if bias != nil {
		m.be.LayerNorm(dst, x, w, bias, rows, m.cfg.Hidden, float32(m.cfg.NormEps))
		return
	}
	m.be.RMSNorm(dst, x, w, rows, m.cfg.Hidden, float32(m.cfg.NormEps))
}

func (m *Model) layer(s *scratch, kv compute.KVCache, b *batch, l, t int) {
	be, cfg, lw := m.be, m.cfg, &m.w.layers[l]
	qw, kvw := cfg.Heads*cfg.HeadDim, cfg.KVHeads*cfg.HeadDim
	x := be.View(s.x, 0, t*cfg.Hidden)
	h := be.View(s.h, 0, t*cfg.Hidden)
	q, k, v := be.View(s.q, 0, t*qw), be.View(s.k, 0, t*kvw), be.View(s.v, 0, t*kvw)

	m.norm(h, x, lw.attnNorm, lw.attnNormBias, t)
	m.linear(q, h, lw.q, lw.qBias, t)
	m.linear(k, h, lw.k, lw.kBias, t)
	m.linear(v, h, lw.v, lw.vBias, t)
	if lw.qNorm != nil {
		eps := float32(cfg.NormEps)
		be.RMSNorm(q, q, lw.qNorm, t*cfg.Heads, cfg.HeadDim, eps)
		be.RMSNorm(k, k, lw.kNorm, t*cfg.KVHeads, cfg.HeadDim, eps)
	}
	if m.invFreq != nil {
		be.RoPE(q, t, cfg.Heads, cfg.HeadDim, b.positions, m.invFreq)
		be.RoPE(k, t, cfg.KVHeads, cfg.HeadDim, b.positions, m.invFreq)
	}
	be.KVWrite(kv, l, k, v, b.slots)
	attn := be.View(s.attn, 0, t*qw)
	be.Attention(attn, q, kv, l, b.seqs, m.attnSpec)
	o := be.View(s.o, 0, t*cfg.Hidden)
	m.linear(o, attn, lw.o, lw.oBias, t)
	be.Add(x, x, o, t*cfg.Hidden)

	m.norm(h, x, lw.mlpNorm, lw.mlpNormBias, t)
	act := be.View(s.up, 0, t*cfg.Intermediate)
	m.linear(act, h, lw.up, lw.upBias, t)
	if lw.gate != nil {
		gate := be.View(s.gate, 0, t*cfg.Intermediate)
		be.MatMul(gate, h, lw.gate, t)
		be.SiLUMul(gate, gate, act, t*cfg.Intermediate)
		act = gate
	} else {
		be.GELU(act, t*cfg.Intermediate)
	}
	m.linear(o, act, lw.down, lw.downBias, t)
	be.Add(x, x, o, t*cfg.Hidden)
}

func (m *Model) linear(dst, x compute.Buf, w compute.Mat, bias compute.Buf, rows int) {
	m.be.MatMul(dst, x, w, rows)
	if bias != nil {
		m.be.AddBias(dst, bias, rows)
	}
}

func attnSpec(cfg *model.Config) compute.AttnSpec {
	return compute.AttnSpec{
		Heads: cfg.Heads, KVHeads: cfg.KVHeads, HeadDim: cfg.HeadDim,
		Scale: float32(1 / math.Sqrt(float64(cfg.HeadDim))),
	}
}
