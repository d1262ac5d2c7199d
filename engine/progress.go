package engine

import (
	"context"
	"sync"
)

// progress publishes how far this rank's forward pass has come, so that
// another goroutine can read a layer's KV as soon as it is written (a
// prefill streaming its KV while later layers still run). A layer counts
// as done once its ops are issued: Backend.KVRead sees the effect of
// every op issued before it (the CPU backend runs ops synchronously; the
// CUDA backend orders its copy after them with an event).
type progress struct {
	mu     sync.Mutex
	cond   sync.Cond
	step   uint64 // the step whose layers are counted
	layers int    // layers of step done
}

func (p *progress) init() { p.cond.L = &p.mu }

// begin marks the start of step's forward pass (and so the end of every
// earlier step's).
func (p *progress) begin(step uint64) {
	p.mu.Lock()
	p.step, p.layers = step, 0
	p.mu.Unlock()
	p.cond.Broadcast()
}

func (p *progress) layerDone(layer int) {
	p.mu.Lock()
	p.layers = layer + 1
	p.mu.Unlock()
	p.cond.Broadcast()
}

// WaitLayer blocks until this rank has computed layer of step (or begun
// a later step), or ctx ends. It may be called from any goroutine.
func (e *Engine) WaitLayer(ctx context.Context, step uint64, layer int) error {
	p := &e.progress
	stop := context.AfterFunc(ctx, func() {
		// Under the lock, so the wake-up cannot fall between a waiter's
		// check of ctx and its Wait.
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for !(p.step > step || p.step == step && p.layers > layer) {
		if err := ctx.Err(); err != nil {
			return err
		}
		p.cond.Wait()
	}
	return nil
}

// Blocks returns the KV block table of a running (or held) request: the
// blocks its prompt occupies, the same ids on every rank. Blocks the
// caller reads must not be freed meanwhile (see Request.HoldKV).
func (e *Engine) Blocks(id string) ([]int32, bool) {
	if s := e.byID[id]; s != nil && s.blocks != nil {
		return append([]int32(nil), s.blocks...), true
	}
	if h, ok := e.held[id]; ok {
		return append([]int32(nil), h.Blocks...), true
	}
	return nil, false
}
