package engine

import (
	"errors"
	"fmt"
)

// ErrPrefixEvicted is returned by Reserve when the prefix it was told to
// keep from the prefix cache is no longer all there: the caller recomputes
// instead of loading the rest.
var ErrPrefixEvicted = errors.New("engine: the cached prefix to keep is no longer in the prefix cache")

// Disaggregated serving splits a request between two groups: a prefill
// group computes the prompt's KV cache and the first token and keeps the
// KV (Request.HoldKV) until it has been sent; a decode group reserves
// blocks for the incoming KV (Reserve), loads it (WriteKV) and continues
// from the first token (AddPrefilled). A decode group whose prefix cache
// already holds the prompt's first blocks keeps them (Reserve's skip) and
// loads only the rest. Blocks held either way are outside every step, so
// ReadKV and WriteKV may run beside Step and Follow.

// HeldKV is the KV cache of a request that is no longer running: the
// blocks and the token positions they cover. After Reserve, Skip leading
// positions are already there (from the prefix cache) and [Skip, Tokens)
// are to be loaded.
type HeldKV struct {
	Blocks []int32
	Tokens int
	Skip   int
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

// Reserve sets aside blocks for the KV of prompt, a request whose KV
// will arrive from elsewhere. Its first skip positions (whole blocks, and
// short of the last token's block) are taken from the prefix cache and
// will not arrive: when they are no longer all cached it fails with
// ErrPrefixEvicted. It fails with ErrOutOfBlocks rather than preempting
// running sequences.
func (e *Engine) Reserve(id string, prompt []int32, skip int) (HeldKV, error) {
	if _, ok := e.held[id]; ok || e.byID[id] != nil {
		return HeldKV{}, fmt.Errorf("%w: %q is already in use", ErrDuplicateID, id)
	}
	tokens, bs := len(prompt), e.opts.BlockSize
	if tokens <= 0 || tokens > e.m.cfg.MaxPositions {
		return HeldKV{}, fmt.Errorf("%w: cannot reserve KV for %d tokens", ErrInvalidRequest, tokens)
	}
	if skip < 0 || skip%bs != 0 || skip > (tokens-1)/bs*bs {
		return HeldKV{}, fmt.Errorf("%w: cannot keep %d cached tokens of a %d-token prompt in blocks of %d", ErrInvalidRequest, skip, tokens, bs)
	}
	var blocks []int32
	if skip > 0 {
		blocks = e.cachedPrefix(&sequence{tokens: prompt}, skip/bs)
		if len(blocks)*bs < skip {
			return HeldKV{}, fmt.Errorf("%w: %d of %d tokens cached", ErrPrefixEvicted, len(blocks)*bs, skip)
		}
		for _, b := range blocks {
			e.pool.take(b)
		}
	}
	blocks, err := e.pool.grow(blocks, tokens)
	if err != nil {
		e.pool.release(blocks)
		return HeldKV{}, err
	}
	if e.pool.caching {
		e.prefix.Queries += int64(tokens)
		e.prefix.Hits += int64(skip)
	}
	h := HeldKV{Blocks: blocks, Tokens: tokens, Skip: skip}
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
		e.registerFull(s)
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

// ReadKV copies layer's keys and values at token positions [from, to)
// of the block table blocks, for the rank's local KV heads [headFrom,
// headTo), into dst laid out [2][to-from][heads][HeadDim] as little-endian
// elements of the cache's dtype (KVCacheDType). It may run beside Step or
// Follow (see the package comment on disaggregation) and on any rank.
func (e *Engine) ReadKV(layer int, blocks []int32, from, to, headFrom, headTo int, dst []byte) {
	e.m.be.KVRead(e.kv, layer, e.kvSlots(blocks, from, to), headFrom, headTo, dst)
}

// WriteKV is ReadKV's reverse: it loads KV that arrived from a prefill
// group into reserved blocks.
func (e *Engine) WriteKV(layer int, blocks []int32, from, to, headFrom, headTo int, src []byte) {
	e.m.be.KVLoad(e.kv, layer, e.kvSlots(blocks, from, to), headFrom, headTo, src)
}

func (e *Engine) kvSlots(blocks []int32, from, to int) []int32 {
	return e.pool.slots(make([]int32, 0, to-from), blocks, from, to)
}
