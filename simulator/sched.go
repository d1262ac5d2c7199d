package simulator

import "slices"

// DefaultBlockSize is the engine's KV block size in tokens
// (engine.DefaultBlockSize; a test holds them equal, as the simulator
// must not import the engine).
const DefaultBlockSize = 16

// EngineOptions mirror engine.Options and the worker's flags.
type EngineOptions struct {
	// MaxBatchTokens bounds a step's rows and is the prefill chunk
	// (default 512, the worker's --max-batch-tokens).
	MaxBatchTokens int
	// MaxSeqs bounds a step's sequences (default 256, at most
	// MaxBatchTokens, as the engine clamps it).
	MaxSeqs int
	// BlockSize is the KV block size in tokens (default DefaultBlockSize).
	BlockSize int
	// Threads is, on a shared device, each rank's compute threads (the
	// CPU worker's --threads; default as `tandem up` sets it: the
	// machine's cores split over all the deployment's ranks, at least 1).
	Threads int
}

func (o *EngineOptions) defaults() {
	if o.MaxBatchTokens <= 0 {
		o.MaxBatchTokens = 512
	}
	if o.MaxSeqs <= 0 {
		o.MaxSeqs = 256
	}
	o.MaxSeqs = min(o.MaxSeqs, o.MaxBatchTokens)
	if o.BlockSize <= 0 {
		o.BlockSize = DefaultBlockSize
	}
}

// seq is the engine's sequence: tokens known (prompt, then generated),
// computed (in the KV cache), generated, and the blocks it holds.
type seq struct {
	r                           *request
	tokens, computed, generated int
	maxTokens                   int
	blocks                      int
	hold                        bool // keep the blocks at the end (prefill of a disaggregated request)
}

// scheduled is one sequence's rows in a step.
type scheduled struct {
	s      *seq
	n      int
	sample bool
}

// sched is one group's scheduler state, the engine's in miniature.
type sched struct {
	opts             EngineOptions
	waiting, running []*seq
	free, total      int
}

func (e *sched) blocksFor(n int) int { return (n + e.opts.BlockSize - 1) / e.opts.BlockSize }

// reserve grows s's blocks to cover n more rows, as engine.reserve.
func (e *sched) reserve(s *seq, n int) bool {
	need := e.blocksFor(s.computed+n) - s.blocks
	if need <= 0 {
		return true
	}
	if need > e.free {
		return false
	}
	e.free -= need
	s.blocks += need
	return true
}

// preempt frees s's blocks and puts it first in the waiting queue.
func (e *sched) preempt(s *seq) {
	e.free += s.blocks
	s.blocks, s.computed = 0, 0
	e.running = slices.DeleteFunc(e.running, func(x *seq) bool { return x == s })
	e.waiting = slices.Insert(e.waiting, 0, s)
	s.r.preemptions++
}

// schedule picks the next step's rows exactly as engine.schedule does.
func (e *sched) schedule() []scheduled {
	var out []scheduled
	budget := e.opts.MaxBatchTokens
	add := func(s *seq, n int) {
		out = append(out, scheduled{s: s, n: n, sample: s.computed+n == s.tokens})
		budget -= n
	}
	for i := 0; i < len(e.running) && budget > 0 && len(out) < e.opts.MaxSeqs; i++ {
		s := e.running[i]
		if s.tokens-s.computed != 1 {
			continue
		}
		preempted := false
		for !e.reserve(s, 1) {
			victim := e.running[len(e.running)-1]
			e.preempt(victim)
			if victim == s {
				preempted = true
				break
			}
		}
		if preempted {
			break
		}
		add(s, 1)
	}
	for _, s := range e.running {
		if budget == 0 || len(out) == e.opts.MaxSeqs {
			break
		}
		if n := min(s.tokens-s.computed, budget); n > 1 && e.reserve(s, n) {
			add(s, n)
		}
	}
	for len(e.waiting) > 0 && budget > 0 && len(out) < e.opts.MaxSeqs {
		s := e.waiting[0]
		n := min(s.tokens-s.computed, budget)
		if !e.reserve(s, n) {
			break
		}
		e.waiting = e.waiting[1:]
		e.running = append(e.running, s)
		add(s, n)
	}
	return out
}

// finish ends s: its blocks go back to the pool unless it holds them
// for a KV transfer (then the caller releases them later).
func (e *sched) finish(s *seq) {
	if !s.hold {
		e.free += s.blocks
		s.blocks = 0
	}
	e.running = slices.DeleteFunc(e.running, func(x *seq) bool { return x == s })
}

// pendingPrefill is engine.Load's PendingPrefillTokens.
func (e *sched) pendingPrefill() int {
	n := 0
	for _, q := range [][]*seq{e.running, e.waiting} {
		for _, s := range q {
			if d := s.tokens - s.computed; d > 1 {
				n += d
			}
		}
	}
	return n
}

func (e *sched) hasWork() bool { return len(e.running)+len(e.waiting) > 0 }
