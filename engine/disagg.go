package engine

import "fmt"

// Disaggregated serving splits a request between two groups: a prefill
// group computes the prompt's KV cache and the first token and keeps the
// KV (Request.HoldKV) until it has been sent; a decode group reserves
// blocks for the incoming KV (Reserve), loads it (WriteKV) and continues
// from the first token (AddPrefilled). Blocks held either way are outside
// every step, so ReadKV and WriteKV may run beside Step and Follow.

// HeldKV is the KV cache of a request that is no longer running: the
// blocks and the token positions they cover.
type HeldKV struct {
	Blocks []int32
	Tokens int
}

// Held returns the KV a finished HoldKV request (or a Reserve) keeps.
func (e *Engine) Held(id string) (HeldKV, bool) {
	h, ok := e.held[id]
	return h, ok
}

// Release frees the blocks a request holds after it finished (HoldKV) or
// that Reserve set aside for it.
func (e *Engine) Release(id string) error {
	h, ok := e.held[id]
	if !ok {
		return fmt.Errorf("%w: %q holds no KV", ErrNotFound, id)
	}
	delete(e.held, id)
	e.pool.release(h.Blocks)
	return nil
}

// Reserve sets aside blocks for tokens positions of a request whose KV
// will arrive from elsewhere. It fails with ErrOutOfBlocks rather than
// preempting running sequences.
func (e *Engine) Reserve(id string, tokens int) (HeldKV, error) {
	if _, ok := e.held[id]; ok || e.byID[id] != nil {
		return HeldKV{}, fmt.Errorf("%w: %q is already in use", ErrDuplicateID, id)
	}
	if tokens <= 0 || tokens > e.m.cfg.MaxPositions {
		return HeldKV{}, fmt.Errorf("%w: cannot reserve KV for %d tokens", ErrInvalidRequest, tokens)
	}
	blocks, err := e.pool.grow(nil, tokens)
	if err != nil {
		return HeldKV{}, err
	}
	h := HeldKV{Blocks: blocks, Tokens: tokens}
	e.held[id] = h
	return h, nil
}

// AddPrefilled queues a request whose prompt was computed elsewhere and
// whose first generated token is first. With reserved, the prompt's KV is
// in the blocks Reserve set aside for req.ID (loaded with WriteKV), and
// the first step decodes first; without, the engine recomputes the prompt
// (the fallback when a KV transfer failed). first counts towards
// MaxTokens, so it must not have ended the request.
func (e *Engine) AddPrefilled(req Request, first int32, reserved bool) error {
	s, err := e.newSequence(req)
	if err != nil {
		return err
	}
	if req.Params.MaxTokens < 2 {
		return fmt.Errorf("%w: max_tokens %d leaves nothing to decode after the first token", ErrInvalidParams, req.Params.MaxTokens)
	}
	if first < 0 || int(first) >= e.m.cfg.VocabSize {
		return fmt.Errorf("%w: first token %d is outside the vocabulary (%d)", ErrInvalidRequest, first, e.m.cfg.VocabSize)
	}
	s.tokens = append(s.tokens, first)
	s.generated = 1
	if s.stream != nil {
		s.text.WriteString(s.stream.Add(first))
		s.emitted = s.text.Len()
	}
	if reserved {
		h, ok := e.held[req.ID]
		if !ok || h.Tokens != len(req.Prompt) {
			return fmt.Errorf("%w: no KV reserved for the %d prompt tokens of %q", ErrInvalidRequest, len(req.Prompt), req.ID)
		}
		delete(e.held, req.ID)
		s.blocks, s.computed = h.Blocks, h.Tokens
		e.byID[req.ID] = s
		e.running = append(e.running, s)
		return nil
	}
	if _, held := e.held[req.ID]; held {
		return fmt.Errorf("%w: %q is already in use", ErrDuplicateID, req.ID)
	}
	e.byID[req.ID] = s
	e.waiting = append(e.waiting, s)
	return nil
}

// ReadKV copies layer's keys and values at h's first tokens positions,
// for the rank's local KV heads [headFrom, headTo), into dst laid out
// [2][tokens][heads][HeadDim] as little-endian elements of the cache's
// dtype (KVCacheDType). It may run beside Step or Follow (see the package
// comment on disaggregation) and on any rank.
func (e *Engine) ReadKV(layer int, blocks []int32, tokens, headFrom, headTo int, dst []byte) {
	e.m.be.KVRead(e.kv, layer, e.kvSlots(blocks, tokens), headFrom, headTo, dst)
}

// WriteKV is ReadKV's reverse: it loads KV that arrived from a prefill
// group into reserved blocks.
func (e *Engine) WriteKV(layer int, blocks []int32, tokens, headFrom, headTo int, src []byte) {
	e.m.be.KVLoad(e.kv, layer, e.kvSlots(blocks, tokens), headFrom, headTo, src)
}

func (e *Engine) kvSlots(blocks []int32, tokens int) []int32 {
	return e.pool.slots(make([]int32, 0, tokens), blocks, 0, tokens)
}
