package engine

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"github.com/tandemllm/tandem/compute"
	"github.com/tandemllm/tandem/nccl"
)

// Step plans travel from a group's rank 0 to its other ranks as int32
// words, broadcast in two parts: a fixed header, then the body whose
// length the header gives.
const (
	planStep     = 1
	planShutdown = 2
	headerWords  = 8
)

// ErrShutdown is returned by Follow when rank 0 ends the group's work.
var ErrShutdown = errors.New("engine: group shut down by rank 0")

// encodePlan writes b into words: tokens, positions, slots, then each
// sequence's (QRow, QLen, Pos, block count, blocks...), then logit rows.
func encodePlan(words []int32, b *batch) []int32 {
	words = append(words[:0], make([]int32, headerWords)...)
	words = append(words, b.tokens...)
	words = append(words, b.positions...)
	words = append(words, b.slots...)
	for _, s := range b.seqs {
		words = append(words, int32(s.QRow), int32(s.QLen), int32(s.Pos), int32(len(s.Blocks)))
		words = append(words, s.Blocks...)
	}
	words = append(words, b.logitRows...)
	h := words[:headerWords]
	h[0], h[1], h[2], h[3], h[4] = planStep, int32(len(b.tokens)), int32(len(b.seqs)), int32(len(b.logitRows)), int32(len(words)-headerWords)
	return words
}

// decodePlan fills b from a plan body; it checks every length so a
// corrupt plan is an error, never a panic.
func decodePlan(b *batch, header, body []int32) error {
	t, nseq, nlog := int(header[1]), int(header[2]), int(header[3])
	if t < 0 || nseq < 0 || nlog < 0 || 3*t+nlog > len(body) {
		return fmt.Errorf("engine: corrupt step plan: %d rows, %d sequences, %d logit rows in %d words", t, nseq, nlog, len(body))
	}
	b.reset()
	b.tokens = append(b.tokens, body[:t]...)
	b.positions = append(b.positions, body[t:2*t]...)
	b.slots = append(b.slots, body[2*t:3*t]...)
	rest := body[3*t:]
	for range nseq {
		if len(rest) < 4 || int(rest[3]) < 0 || len(rest) < 4+int(rest[3]) {
			return errors.New("engine: corrupt step plan: truncated sequence")
		}
		nb := int(rest[3])
		b.seqs = append(b.seqs, compute.AttnSeq{QRow: int(rest[0]), QLen: int(rest[1]), Pos: int(rest[2]), Blocks: rest[4 : 4+nb]})
		rest = rest[4+nb:]
	}
	if len(rest) != nlog {
		return fmt.Errorf("engine: corrupt step plan: %d words left for %d logit rows", len(rest), nlog)
	}
	b.logitRows = append(b.logitRows, rest...)
	return nil
}

// readPlan decodes a step plan into e.batch and checks it against this
// rank's limits, so that a corrupt plan is an error, never a read or
// write out of range.
func (e *Engine) readPlan(header, body []int32) error {
	if err := decodePlan(&e.batch, header, body); err != nil {
		return err
	}
	return e.checkPlan(&e.batch)
}

// checkPlan checks every index a forward pass takes from the plan: token
// ids against the vocabulary, positions against the context, KV slots
// and block ids against the pool, query and logit rows against the batch.
func (e *Engine) checkPlan(b *batch) error {
	cfg, rows := e.m.cfg, len(b.tokens)
	bad := func(format string, args ...any) error {
		return fmt.Errorf("engine: corrupt step plan: "+format, args...)
	}
	switch {
	case rows == 0:
		return bad("no rows (rank 0 plans no empty step)")
	case rows > e.scratch.maxRows:
		return fmt.Errorf("engine: step plan of %d rows exceeds this rank's MaxBatchTokens %d", rows, e.scratch.maxRows)
	case len(b.seqs) > e.opts.MaxSeqs || len(b.logitRows) > e.opts.MaxSeqs:
		return fmt.Errorf("engine: step plan of %d sequences and %d logit rows exceeds this rank's MaxSeqs %d", len(b.seqs), len(b.logitRows), e.opts.MaxSeqs)
	}
	slots := int64(e.pool.total) * int64(e.opts.BlockSize)
	for i := range rows {
		switch t, p, s := b.tokens[i], b.positions[i], b.slots[i]; {
		case t < 0 || int(t) >= cfg.VocabSize:
			return bad("row %d: token %d outside a vocabulary of %d", i, t, cfg.VocabSize)
		case p < 0 || int(p) >= cfg.MaxPositions:
			return bad("row %d: position %d outside a context of %d", i, p, cfg.MaxPositions)
		case s < 0 || int64(s) >= slots:
			return bad("row %d: KV slot %d outside a pool of %d", i, s, slots)
		}
	}
	for i, q := range b.seqs {
		end := int64(q.Pos) + int64(q.QLen)
		switch {
		case q.QRow < 0 || q.QLen < 1 || q.QRow+q.QLen > rows:
			return bad("sequence %d: rows %d+%d outside a batch of %d", i, q.QRow, q.QLen, rows)
		case q.Pos < 0 || end > int64(cfg.MaxPositions):
			return bad("sequence %d: positions %d+%d outside a context of %d", i, q.Pos, q.QLen, cfg.MaxPositions)
		case int64(len(q.Blocks))*int64(e.opts.BlockSize) < end:
			return bad("sequence %d: %d blocks for %d positions", i, len(q.Blocks), end)
		}
		for _, blk := range q.Blocks {
			if blk < 0 || int(blk) >= e.pool.total {
				return bad("sequence %d: block %d outside a pool of %d", i, blk, e.pool.total)
			}
		}
	}
	for _, r := range b.logitRows {
		if r < 0 || int(r) >= rows {
			return bad("logit row %d outside a batch of %d", r, rows)
		}
	}
	return nil
}

// int32s views words as a collective buffer (the bytes travel unchanged).
func int32s(words []int32) nccl.Buffer {
	return nccl.Float32s(unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(words))), len(words)))
}

// broadcastPlan sends b from rank 0 to the group.
func (e *Engine) broadcastPlan(ctx context.Context, b *batch) error {
	e.planWords = encodePlan(e.planWords, b)
	start := time.Now()
	if err := e.comm.Broadcast(ctx, int32s(e.planWords[:headerWords]), 0); err != nil {
		return fmt.Errorf("engine: broadcasting step plan: %w", err)
	}
	if err := e.comm.Broadcast(ctx, int32s(e.planWords[headerWords:]), 0); err != nil {
		return fmt.Errorf("engine: broadcasting step plan: %w", err)
	}
	e.recordCall(nccl.KindBroadcast, 4*len(e.planWords), start)
	return nil
}

// Shutdown tells the group's other ranks to return from Follow. Only rank
// 0 calls it; it is a no-op without tensor parallelism.
func (e *Engine) Shutdown(ctx context.Context) error {
	if e.comm == nil || e.m.plan.TP == 1 {
		return nil
	}
	h := make([]int32, headerWords)
	h[0] = planShutdown
	return e.comm.Broadcast(ctx, int32s(h), 0)
}

// Follow runs the steps rank 0 plans, until rank 0 calls Shutdown
// (ErrShutdown), ctx ends or a collective fails. Ranks other than 0 call
// it instead of Add and Step.
func (e *Engine) Follow(ctx context.Context) error {
	if e.m.plan.Rank == 0 {
		return errors.New("engine: rank 0 leads; it does not follow")
	}
	header := make([]int32, headerWords)
	var body []int32
	for {
		if err := e.comm.Broadcast(ctx, int32s(header), 0); err != nil {
			return fmt.Errorf("engine: receiving step plan: %w", err)
		}
		switch header[0] {
		case planShutdown:
			return ErrShutdown
		case planStep:
		default:
			return fmt.Errorf("engine: unknown step plan command %d", header[0])
		}
		n := int(header[4])
		if n < 0 || n > 1<<28 {
			return fmt.Errorf("engine: step plan of %d words", n)
		}
		body = append(body[:0], make([]int32, n)...)
		if err := e.comm.Broadcast(ctx, int32s(body), 0); err != nil {
			return fmt.Errorf("engine: receiving step plan: %w", err)
		}
		if err := e.readPlan(header, body); err != nil {
			return err
		}
		start := time.Now()
		e.step++
		e.rec = StepRecord{Step: e.step, Start: start, Seqs: e.rec.Seqs[:0], Collectives: e.rec.Collectives[:0]}
		// The plan has no request ids; a one-row sequence past position 0
		// is taken for a decode row (a one-token tail of a prompt chunk
		// is counted as decode too: rare, and only in the record).
		for _, q := range e.batch.seqs {
			if q.QLen == 1 && q.Pos > 0 {
				e.rec.DecodeTokens++
			} else {
				e.rec.PrefillTokens += q.QLen
			}
		}
		if _, err := e.forward(ctx, &e.batch); err != nil {
			return err
		}
		e.rec.Compute = time.Since(start)
		if e.opts.OnStep != nil {
			e.opts.OnStep(&e.rec)
		}
	}
}
