package engine

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/tandemllm/tandem/compute"
	"github.com/tandemllm/tandem/nccl"
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
// most maxRows rows so steps allocate nothing. Widths are this rank's
// share under tensor parallelism.
type scratch struct {
	maxRows                int
	x, h, q, k, v, attn, o compute.Buf
	gate, up               compute.Buf
	pos                    compute.Buf // GPT-2 position embeddings
	logitIn, logits        compute.Buf
	// Host staging for collectives: partial sums, and logits padded to
	// equal vocabulary shards then gathered from every rank.
	reduce     []float32
	shard      []float32
	gathered   []float32
	hostLogits []float32
}

func newScratch(be compute.Backend, m *Model, maxRows, maxLogitRows int) *scratch {
	cfg, spec := m.cfg, m.attnSpec
	qw, kvw := spec.Heads*spec.HeadDim, spec.KVHeads*spec.HeadDim
	inter, vocab := m.plan.Intermediate().Len(), m.plan.Vocab().Len()
	s := &scratch{
		maxRows:    maxRows,
		x:          be.Alloc(maxRows * cfg.Hidden),
		h:          be.Alloc(maxRows * cfg.Hidden),
		q:          be.Alloc(maxRows * qw),
		k:          be.Alloc(maxRows * kvw),
		v:          be.Alloc(maxRows * kvw),
		attn:       be.Alloc(maxRows * qw),
		o:          be.Alloc(maxRows * cfg.Hidden),
		gate:       be.Alloc(maxRows * inter),
		up:         be.Alloc(maxRows * inter),
		pos:        be.Alloc(maxRows * cfg.Hidden),
		logitIn:    be.Alloc(maxLogitRows * cfg.Hidden),
		logits:     be.Alloc(maxLogitRows * vocab),
		hostLogits: make([]float32, maxLogitRows*cfg.VocabSize),
	}
	if tp := m.plan.TP; tp > 1 {
		s.reduce = make([]float32, maxRows*cfg.Hidden)
		s.shard = make([]float32, maxLogitRows*m.plan.VocabShard())
		s.gathered = make([]float32, tp*maxLogitRows*m.plan.VocabShard())
	}
	return s
}

// forward runs the model over b and returns the logits of b.logitRows,
// row-major [len(logitRows), vocab], in memory owned by the engine. Under
// tensor parallelism every rank runs it on the same batch; the logits are
// gathered on every rank.
func (e *Engine) forward(ctx context.Context, b *batch) ([]float32, error) {
	m, s := e.m, e.scratch
	be, cfg, w := m.be, m.cfg, m.w
	t := len(b.tokens)
	x := be.View(s.x, 0, t*cfg.Hidden)
	clk, ops := &e.clock, &e.rec.Ops
	clk.start()
	be.Embed(x, w.embed, b.tokens)
	if w.posEmbed != nil {
		pos := be.View(s.pos, 0, t*cfg.Hidden)
		be.Embed(pos, w.posEmbed, b.positions)
		be.Add(x, x, pos, t*cfg.Hidden)
	}
	clk.lap(ops, OpEmbed)
	e.progress.begin(e.rec.Step)
	for l := range w.layers {
		if err := e.layer(ctx, b, l, t); err != nil {
			return nil, err
		}
		e.progress.layerDone(l)
	}
	n := len(b.logitRows)
	if n == 0 {
		return nil, nil
	}
	in := be.View(s.logitIn, 0, n*cfg.Hidden)
	be.Gather(in, x, b.logitRows, cfg.Hidden)
	m.norm(in, in, w.finalNorm, w.finalNormBias, n)
	clk.lap(ops, OpNorm)
	vocab := m.plan.Vocab().Len()
	logits := be.View(s.logits, 0, n*vocab)
	be.MatMul(logits, in, w.lmHead, n)
	clk.lap(ops, OpLMHead)
	if hv, ok := be.(hostView); ok && m.plan.TP == 1 {
		out := hv.HostView(logits, 0, n*cfg.VocabSize)
		clk.lap(ops, OpLogits)
		return out, nil
	}
	out := s.hostLogits[:n*cfg.VocabSize]
	if m.plan.TP == 1 {
		be.Read(out, logits, 0)
		clk.lap(ops, OpLogits)
		return out, nil
	}
	err := e.gatherLogits(ctx, logits, n, out)
	clk.lap(ops, OpLogits)
	return out, err
}

// hostView is a backend whose buffers are host memory (compute/cpu): the
// logits are sampled where the LM head wrote them, not copied out first
// (a millisecond a step at batch 32 with a 50k vocabulary). They stay
// valid until the next forward pass, as the copy did.
type hostView interface {
	HostView(x compute.Buf, off, n int) []float32
}

// gatherLogits collects every rank's vocabulary shard of n rows of
// logits into out ([n, vocab]). Shards are padded to equal length so one
// all-gather moves them.
func (e *Engine) gatherLogits(ctx context.Context, logits compute.Buf, n int, out []float32) error {
	m, s := e.m, e.scratch
	shard, vocab := m.plan.VocabShard(), m.plan.Vocab().Len()
	local := s.shard[:n*shard]
	for r := range n {
		row := local[r*shard : (r+1)*shard]
		m.be.Read(row[:vocab], logits, r*vocab)
		for i := vocab; i < shard; i++ {
			row[i] = float32(math.Inf(-1))
		}
	}
	all := s.gathered[:m.plan.TP*n*shard]
	start := time.Now()
	if err := e.comm.AllGather(ctx, nccl.Float32s(local), nccl.Float32s(all)); err != nil {
		return fmt.Errorf("engine: gathering logits: %w", err)
	}
	e.recordCall(nccl.KindAllGather, 4*len(local), start)
	V := m.cfg.VocabSize
	for rank := range m.plan.TP {
		from := rank * shard
		cols := min(shard, V-from)
		for r := range n {
			copy(out[r*V+from:r*V+from+cols], all[(rank*n+r)*shard:])
		}
	}
	return nil
}

// allReduce sums x (rows × hidden) over the group's ranks, through host
// memory.
func (e *Engine) allReduce(ctx context.Context, x compute.Buf, n int) error {
	if e.m.plan.TP == 1 {
		return nil
	}
	host := e.scratch.reduce[:n]
	e.m.be.Read(host, x, 0)
	start := time.Now()
	if err := e.comm.AllReduce(ctx, nccl.Float32s(host)); err != nil {
		return fmt.Errorf("engine: allreduce: %w", err)
	}
	e.recordCall(nccl.KindAllReduce, 4*n, start)
	e.m.be.Write(x, 0, host)
	return nil
}

// recordCall adds a collective call to the step record.
func (e *Engine) recordCall(kind nccl.Kind, bytes int, start time.Time) {
	d := time.Since(start)
	e.rec.Collectives = append(e.rec.Collectives, nccl.Call{Kind: kind, Bytes: bytes, Peer: -1, Start: start, Dur: d})
	e.rec.CollectiveTime += d
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

// layer runs transformer layer l. Under tensor parallelism the attention
// output and down projections are row-parallel: their partial sums are
// all-reduced before the (replicated) bias and the residual add.
func (e *Engine) layer(ctx context.Context, b *batch, l, t int) error {
	m, s := e.m, e.scratch
	be, cfg, lw, spec := m.be, m.cfg, &m.w.layers[l], m.attnSpec
	clk, ops := &e.clock, &e.rec.Ops
	qw, kvw := spec.Heads*spec.HeadDim, spec.KVHeads*spec.HeadDim
	inter := m.plan.Intermediate().Len()
	x := be.View(s.x, 0, t*cfg.Hidden)
	h := be.View(s.h, 0, t*cfg.Hidden)
	q, k, v := be.View(s.q, 0, t*qw), be.View(s.k, 0, t*kvw), be.View(s.v, 0, t*kvw)

	m.norm(h, x, lw.attnNorm, lw.attnNormBias, t)
	clk.lap(ops, OpNorm)
	m.linear(q, h, lw.q, lw.qBias, t)
	clk.lap(ops, OpQProj)
	m.linear(k, h, lw.k, lw.kBias, t)
	clk.lap(ops, OpKProj)
	m.linear(v, h, lw.v, lw.vBias, t)
	clk.lap(ops, OpVProj)
	if lw.qNorm != nil {
		eps := float32(cfg.NormEps)
		be.RMSNorm(q, q, lw.qNorm, t*spec.Heads, cfg.HeadDim, eps)
		be.RMSNorm(k, k, lw.kNorm, t*spec.KVHeads, cfg.HeadDim, eps)
		clk.lap(ops, OpNorm)
	}
	if m.invFreq != nil {
		be.RoPE(q, t, spec.Heads, cfg.HeadDim, b.positions, m.invFreq)
		be.RoPE(k, t, spec.KVHeads, cfg.HeadDim, b.positions, m.invFreq)
		clk.lap(ops, OpRoPE)
	}
	be.KVWrite(e.kv, l, k, v, b.slots)
	clk.lap(ops, OpKVWrite)
	attn := be.View(s.attn, 0, t*qw)
	be.Attention(attn, q, e.kv, l, b.seqs, spec)
	clk.lap(ops, OpAttention)
	o := be.View(s.o, 0, t*cfg.Hidden)
	if err := e.rowParallel(ctx, o, attn, lw.o, lw.oBias, t, OpOProj); err != nil {
		return err
	}
	be.Add(x, x, o, t*cfg.Hidden)
	clk.lap(ops, OpResidual)

	m.norm(h, x, lw.mlpNorm, lw.mlpNormBias, t)
	clk.lap(ops, OpNorm)
	act := be.View(s.up, 0, t*inter)
	m.linear(act, h, lw.up, lw.upBias, t)
	clk.lap(ops, OpUpProj)
	if lw.gate != nil {
		gate := be.View(s.gate, 0, t*inter)
		be.MatMul(gate, h, lw.gate, t)
		clk.lap(ops, OpGateProj)
		be.SiLUMul(gate, gate, act, t*inter)
		act = gate
	} else {
		be.GELU(act, t*inter)
	}
	clk.lap(ops, OpActivation)
	if err := e.rowParallel(ctx, o, act, lw.down, lw.downBias, t, OpDownProj); err != nil {
		return err
	}
	be.Add(x, x, o, t*cfg.Hidden)
	clk.lap(ops, OpResidual)
	return nil
}

// rowParallel is a row-parallel linear layer: each rank's partial
// product is summed over the group before the replicated bias is added.
// The product and the bias are timed as op, the sum as OpAllReduce.
func (e *Engine) rowParallel(ctx context.Context, dst, x compute.Buf, w compute.Mat, bias compute.Buf, rows int, op Op) error {
	clk, ops := &e.clock, &e.rec.Ops
	e.m.be.MatMul(dst, x, w, rows)
	clk.lap(ops, op)
	if err := e.allReduce(ctx, dst, rows*e.m.cfg.Hidden); err != nil {
		return err
	}
	if e.m.plan.TP > 1 {
		clk.lap(ops, OpAllReduce)
	}
	if bias != nil {
		e.m.be.AddBias(dst, bias, rows)
		clk.lap(ops, op)
	}
	return nil
}

func (m *Model) linear(dst, x compute.Buf, w compute.Mat, bias compute.Buf, rows int) {
	m.be.MatMul(dst, x, w, rows)
	if bias != nil {
		m.be.AddBias(dst, bias, rows)
	}
}
