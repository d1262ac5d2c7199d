package engine

import (
	"slices"
	"strings"

	"github.com/tandemllm/tandem/compute"
)

// scheduled is one sequence's rows in the current step.
type scheduled struct {
	s      *sequence
	n      int
	sample bool
}

// schedule fills e.batch for the next step and returns the sequences in
// it. Sequences in decode go first (one row each), then prefill chunks of
// running sequences, then waiting ones in arrival order, within
// MaxBatchTokens rows and MaxSeqs sequences. When KV blocks run out, the
// most recently admitted sequence is preempted: it frees its blocks and is
// recomputed from the start later (vLLM's recompute preemption).
func (e *Engine) schedule() []scheduled {
	e.batch.reset()
	var out []scheduled
	budget := e.opts.MaxBatchTokens
	// Decode rows first: they are latency-critical and cost one row each.
	for i := 0; i < len(e.running) && budget > 0 && len(out) < e.opts.MaxSeqs; i++ {
		s := e.running[i]
		if len(s.tokens)-s.computed != 1 {
			continue
		}
		for !e.reserve(s, 1) {
			victim := e.running[len(e.running)-1]
			e.preempt(victim)
			if victim == s {
				break
			}
		}
		if s.blocks == nil {
			break // s itself was preempted
		}
		out = e.add(out, s, 1)
		budget--
	}
	for _, s := range e.running {
		if budget == 0 || len(out) == e.opts.MaxSeqs {
			break
		}
		if n := min(len(s.tokens)-s.computed, budget); n > 1 && e.reserve(s, n) {
			out = e.add(out, s, n)
			budget -= n
		}
	}
	for len(e.waiting) > 0 && budget > 0 && len(out) < e.opts.MaxSeqs {
		s := e.waiting[0]
		e.admitPrefix(s)
		n := min(len(s.tokens)-s.computed, budget)
		if !e.reserve(s, n) {
			e.unadmit(s)
			break
		}
		e.waiting = e.waiting[1:]
		e.running = append(e.running, s)
		out = e.add(out, s, n)
		budget -= n
	}
	return out
}

// reserve grows s's block table to cover n more rows.
func (e *Engine) reserve(s *sequence, n int) bool {
	blocks, err := e.pool.grow(s.blocks, s.computed+n)
	s.blocks = blocks
	return err == nil
}

// preempt frees s's blocks and puts it at the head of the waiting queue.
// Its full blocks stay in the prefix cache, so its recomputation may
// start from them.
func (e *Engine) preempt(s *sequence) {
	e.pool.release(s.blocks)
	s.blocks = nil
	s.computed, s.registered = 0, 0
	e.running = slices.DeleteFunc(e.running, func(x *sequence) bool { return x == s })
	e.waiting = slices.Insert(e.waiting, 0, s)
}

// add appends n rows of s to the batch.
func (e *Engine) add(out []scheduled, s *sequence, n int) []scheduled {
	b := &e.batch
	row := len(b.tokens)
	from, to := s.computed, s.computed+n
	b.tokens = append(b.tokens, s.tokens[from:to]...)
	for p := from; p < to; p++ {
		b.positions = append(b.positions, int32(p))
	}
	b.slots = e.pool.slots(b.slots, s.blocks, from, to)
	b.seqs = append(b.seqs, compute.AttnSeq{QRow: row, QLen: n, Pos: from, Blocks: s.blocks})
	sample := to == len(s.tokens)
	if sample {
		b.logitRows = append(b.logitRows, int32(row+n-1))
	}
	decode := n == 1 && s.generated > 0
	if decode {
		e.rec.DecodeTokens++
	} else {
		e.rec.PrefillTokens += n
	}
	e.rec.Seqs = append(e.rec.Seqs, SeqRecord{RequestID: s.req.ID, Pos: from, Tokens: n, Prefill: !decode, Sampled: sample})
	return append(out, scheduled{s: s, n: n, sample: sample})
}

// sampleAll advances every scheduled sequence and samples those whose
// rows reached the end of their tokens; logits has one row per sampler.
func (e *Engine) sampleAll(logits []float32, steps []scheduled) []Output {
	vocab := e.m.cfg.VocabSize
	var outs []Output
	row := 0
	for _, st := range steps {
		s := st.s
		s.computed += st.n
		e.registerFull(s)
		if !st.sample {
			continue
		}
		l := logits[row*vocab : (row+1)*vocab]
		row++
		outs = append(outs, e.sampleOne(s, l))
	}
	return outs
}

func (e *Engine) sampleOne(s *sequence, logits []float32) Output {
	p := &s.req.Params
	tok := s.sampler.sample(logits, len(s.tokens))
	out := Output{RequestID: s.req.ID, Index: s.generated, Token: tok, Step: e.rec.Step}
	if p.Logprobs || p.TopLogprobs > 0 {
		chosen, top := logprobs(logits, tok, p.TopLogprobs, s.lpScratch)
		out.Logprob, out.TopLogprobs = &chosen, top
	}
	s.tokens = append(s.tokens, tok)
	s.generated++
	switch {
	case e.isStop(s, tok):
		out.FinishReason = FinishStop
	case s.generated >= p.MaxTokens:
		out.FinishReason = FinishLength
	}
	if s.stream != nil {
		s.text.WriteString(s.stream.Add(tok))
		if out.FinishReason != "" {
			s.text.WriteString(s.stream.Flush())
		}
		var stopped bool
		out.Text, stopped = s.takeText(p.Stop, out.FinishReason != "")
		if stopped {
			out.FinishReason = FinishStop
		}
	}
	if out.FinishReason != "" {
		e.finish(s)
	}
	return out
}

func (e *Engine) isStop(s *sequence, tok int32) bool {
	if !s.req.Params.IgnoreEOS && slices.Contains(e.m.eos, tok) {
		return true
	}
	return slices.Contains(s.req.Params.StopTokenIDs, tok)
}

// takeText returns the text not yet returned, cut before the first stop
// string (stopped is then true). Unless final, it holds back a tail that
// could still grow into a stop string.
func (s *sequence) takeText(stops []string, final bool) (delta string, stopped bool) {
	text := s.text.String()
	cut, hold := len(text), 0
	for _, stop := range stops {
		from := max(0, s.emitted-len(stop)+1)
		if i := strings.Index(text[from:], stop); i >= 0 && from+i < cut {
			cut, stopped = from+i, true
		}
		if !final {
			hold = max(hold, partialSuffix(text, stop))
		}
	}
	end := cut
	if !stopped {
		end = max(s.emitted, len(text)-hold)
	}
	if end < s.emitted {
		end = s.emitted
	}
	delta = text[s.emitted:end]
	s.emitted = end
	return delta, stopped
}

// partialSuffix is the length of the longest proper prefix of stop that
// text ends with.
func partialSuffix(text, stop string) int {
	for k := min(len(stop)-1, len(text)); k > 0; k-- {
		if strings.HasSuffix(text, stop[:k]) {
			return k
		}
	}
	return 0
}
