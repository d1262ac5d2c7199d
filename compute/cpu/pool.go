package cpu

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// task is one op split into chunks; run executes chunk c on worker w
// (0 ≤ w < threads; the dispatching goroutine is worker 0).
type task interface {
	run(c, w int)
}

// maxChunks bounds the chunks of one dispatch (they share 16 bits of state).
const maxChunks = 1<<16 - 1

// spinIters is how many times an idle worker polls for the next op before
// parking. Decode ops follow each other every few microseconds; a futex
// wake-up costs about as much as the op, so workers spin briefly first.
const spinIters = 1 << 14

// pool is a set of worker goroutines started once and fed one task at a
// time. Its state word packs generation<<32 | chunks<<16 | next chunk, so a
// worker claims chunks with one compare-and-swap that also proves the task
// it then reads is current; dispatching allocates nothing.
type pool struct {
	threads int
	state   atomic.Uint64
	// The state word and the done count each have a cache line of their
	// own: both are written by every worker, and shared they moved
	// between the cores on every claim and every finish.
	_      [56]byte
	done   atomic.Int64 // chunks of the current generation finished
	_      [56]byte
	t      task // the current task; read only after a successful claim
	parked atomic.Int32
	closed atomic.Bool
	mu     sync.Mutex
	cond   sync.Cond
	wg     sync.WaitGroup
}

func newPool(threads int) *pool {
	p := &pool{threads: threads}
	p.cond.L = &p.mu
	for w := 1; w < threads; w++ {
		p.wg.Add(1)
		go p.worker(w)
	}
	return p
}

// run executes chunks [0, n) of t on all workers and returns when all are done.
func (p *pool) run(t task, n int) {
	if n <= 0 {
		return
	}
	if p.threads == 1 || n == 1 {
		for c := range n {
			t.run(c, 0)
		}
		return
	}
	if n > maxChunks {
		panic("cpu: too many chunks in one op")
	}
	p.t = t
	p.done.Store(0)
	gen := p.state.Load()>>32 + 1
	p.state.Store(gen<<32 | uint64(n)<<16)
	if p.parked.Load() > 0 {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	}
	p.claim(0)
	for i := 0; p.done.Load() < int64(n); i++ {
		if i%64 == 63 {
			runtime.Gosched()
		}
	}
}

// claim runs chunks until none is left and returns the generation it saw
// last. It takes a share of what is left at a time (guided
// self-scheduling): one chunk a claim cost a cache-line transfer of the
// state word between the cores per chunk, a quarter of the CPU time of decode
// attention's 64 small chunks (2 threads, AMD EPYC VM), while shares that
// shrink with what is left still end the workers together.
func (p *pool) claim(w int) uint64 {
	share := uint64(2 * p.threads)
	for {
		s := p.state.Load()
		n, next := s>>16&0xffff, s&0xffff
		if next >= n {
			return s >> 32
		}
		k := max(1, (n-next)/share)
		if !p.state.CompareAndSwap(s, s+k) {
			continue
		}
		for c := next; c < next+k; c++ {
			p.t.run(int(c), w)
		}
		p.done.Add(int64(k))
	}
}

func (p *pool) worker(w int) {
	defer p.wg.Done()
	seen := p.state.Load() >> 32
	for !p.closed.Load() {
		if p.state.Load()>>32 == seen && !p.spin(seen) {
			p.park(seen)
			continue
		}
		seen = p.claim(w)
	}
}

// spin polls for a new generation for a while and reports whether one came.
func (p *pool) spin(seen uint64) bool {
	for i := range spinIters {
		if p.state.Load()>>32 != seen || p.closed.Load() {
			return true
		}
		if i%256 == 255 {
			runtime.Gosched()
		}
	}
	return false
}

// park sleeps until the generation moves past seen or the pool closes.
// parked is raised before the generation is re-checked, so a dispatcher
// that stores a new generation either sees parked > 0 and broadcasts, or
// the re-check sees the new generation.
func (p *pool) park(seen uint64) {
	p.mu.Lock()
	p.parked.Add(1)
	for p.state.Load()>>32 == seen && !p.closed.Load() {
		p.cond.Wait()
	}
	p.parked.Add(-1)
	p.mu.Unlock()
}

func (p *pool) close() {
	if p.closed.Swap(true) {
		return
	}
	p.mu.Lock()
	p.cond.Broadcast()
	p.mu.Unlock()
	p.wg.Wait()
}
