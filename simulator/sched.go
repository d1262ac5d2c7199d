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
	// DisablePrefixCaching is the worker's --no-prefix-caching: requests
	// sharing a prefix compute it every time.
	DisablePrefixCaching bool
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
// computed (in the KV cache), generated, and the blocks it holds: its
// own, and those of its workload prefix it shares through the cache.
type seq struct {
	r                           *request
	tokens, computed, generated int
	maxTokens                   int
	blocks, shared              int
	hold                        bool // keep the blocks at the end (prefill of a disaggregated request)
}

// cachedPrefix is a workload prefix in a group's prefix cache: its whole
// blocks, and the sequences using them (none: the blocks count as free,
// and are evicted when the pool needs them).
type cachedPrefix struct {
	id, blocks, refs int
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
	// cache holds the workload prefixes computed here, oldest first.
	cache []*cachedPrefix
	// hits counts the prompt tokens taken from the cache.
	hits int
}

func (e *sched) blocksFor(n int) int { return (n + e.opts.BlockSize - 1) / e.opts.BlockSize }

// reserve grows s's blocks to cover n more rows, as engine.reserve:
// free blocks first, then cached prefixes nobody uses, oldest first.
func (e *sched) reserve(s *seq, n int) bool {
	need := e.blocksFor(s.computed+n) - s.blocks - s.shared
	if need <= 0 {
		return true
	}
	if need > e.free {
		return false
	}
	e.free -= need
	s.blocks += need
	e.evict()
	return true
}

// evict forgets the oldest unused cached prefixes whose blocks the free
// pool has handed out: free blocks count cached ones, so when fewer are
// free than unused prefixes hold, those blocks were reused.
func (e *sched) evict() {
	unused := 0
	for _, c := range e.cache {
		if c.refs == 0 {
			unused += c.blocks
		}
	}
	for i := 0; i < len(e.cache) && unused > e.free; {
		if c := e.cache[i]; c.refs == 0 {
			unused -= c.blocks
			e.cache = slices.Delete(e.cache, i, i+1)
			continue
		}
		i++
	}
}

// cached returns the group's entry for a workload prefix, or nil.
func (e *sched) cached(id int) *cachedPrefix {
	if id == 0 || e.opts.DisablePrefixCaching {
		return nil
	}
	for _, c := range e.cache {
		if c.id == id {
			return c
		}
	}
	return nil
}

// admit starts a sequence holding nothing from its workload prefix's
// cached blocks, leaving at least its last token to compute, as
// engine.admitPrefix.
func (e *sched) admit(s *seq) {
	if s.blocks != 0 || s.shared != 0 || s.computed != 0 {
		return
	}
	c := e.cached(s.r.Prefix)
	if c == nil {
		return
	}
	n := min(c.blocks, (s.tokens-1)/e.opts.BlockSize)
	if n < c.blocks {
		return // a prompt no longer than its prefix: not in the workloads
	}
	if c.refs == 0 {
		e.free -= n
	}
	c.refs++
	s.shared, s.computed = n, n*e.opts.BlockSize
	e.hits += s.computed
}

// unadmit undoes admit for a sequence that could not be scheduled.
func (e *sched) unadmit(s *seq) {
	e.hits -= s.computed
	e.releaseShared(s)
	s.computed = 0
}

// register puts s's workload prefix in the cache once s has computed
// its whole blocks, as engine.registerFull; s then shares them.
func (e *sched) register(s *seq) {
	id, n := s.r.Prefix, s.r.PrefixLen/e.opts.BlockSize
	if id == 0 || n == 0 || e.opts.DisablePrefixCaching || s.shared != 0 || s.computed < n*e.opts.BlockSize || e.cached(id) != nil {
		return
	}
	e.cache = append(e.cache, &cachedPrefix{id: id, blocks: n, refs: 1})
	s.blocks -= n
	s.shared = n
}

// release returns s's blocks: its own to the free pool, its shared
// prefix's when no other sequence uses them (they stay cached).
func (e *sched) release(s *seq) {
	e.free += s.blocks
	s.blocks = 0
	e.releaseShared(s)
}

func (e *sched) releaseShared(s *seq) {
	if s.shared == 0 {
		return
	}
	if c := e.cached(s.r.Prefix); c != nil {
		if c.refs--; c.refs == 0 {
			e.free += c.blocks
		}
	}
	s.shared = 0
}

// preempt frees s's blocks and puts it first in the waiting queue.
func (e *sched) preempt(s *seq) {
	e.release(s)
	s.computed = 0
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
		e.admit(s)
		n := min(s.tokens-s.computed, budget)
		if !e.reserve(s, n) {
			e.unadmit(s)
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
		e.release(s)
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
