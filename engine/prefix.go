package engine

import (
	"github.com/tandemllm/tandem/blockhash"
)

// Prefix caching (vLLM's automatic prefix caching): a full KV block is
// named by a hash chained over its tokens and its parent block's hash,
// from the model's identity (Options.ModelID; see package blockhash). Once
// a sequence has computed a block, the block is registered under that
// name and stays in the cache after the sequence ends, on the free list
// in least-recently-used order; it is evicted only when a block must be
// handed out and no uncached one is free. A new sequence starts from its
// longest cached prefix and computes only the rest; the last prompt token
// is always computed, so that its logits exist, and so is any block it
// lies in: a cached block is never written. Only rank 0 decides (it owns
// the block tables, which its step plans carry to the other ranks), so
// every rank's cache holds the same blocks.

// KVEventKind says what happened to the blocks of a KVEvent.
type KVEventKind uint8

// KV event kinds.
const (
	KVStored  KVEventKind = iota + 1 // blocks entered the prefix cache
	KVRemoved                        // blocks were evicted from it
)

// KVEvent reports blocks entering or leaving the prefix cache, in the
// order it happened: what a router needs to know which prefixes the group
// holds (vLLM's BlockStored and BlockRemoved).
type KVEvent struct {
	Kind   KVEventKind
	Hashes []blockhash.Hash
}

// PrefixStats are the prefix cache's counters, in tokens (vLLM's
// prefix_cache_queries and prefix_cache_hits).
type PrefixStats struct {
	// Queries are the prompt tokens of sequences admitted (again, after a
	// preemption); Hits those found in the cache and not computed.
	Queries, Hits int64
	// CachedBlocks are the blocks in the cache, in use or not.
	CachedBlocks int
}

// PrefixStats returns the prefix cache's counters.
func (e *Engine) PrefixStats() PrefixStats {
	s := e.prefix
	s.CachedBlocks = e.pool.Cached()
	return s
}

// TakeKVEvents returns the prefix cache's events since the last call, in
// order, and forgets them.
func (e *Engine) TakeKVEvents() []KVEvent {
	ev := e.pool.events
	e.pool.events = nil
	return ev
}

// CachedHashes lists the name of every block in the prefix cache, for a
// subscriber that starts over (a full resync); events taken after it
// apply on top of it.
func (e *Engine) CachedHashes() []blockhash.Hash { return e.pool.hashes() }

// blockHashes extends s's hashes to its first n full blocks.
func (e *Engine) blockHashes(s *sequence, n int) []blockhash.Hash {
	if len(s.hashes) < n {
		bs := e.opts.BlockSize
		s.hashes = blockhash.Chain(s.hashes, e.opts.ModelID, s.tokens[:min(len(s.tokens), n*bs)], bs)
	}
	return s.hashes[:min(n, len(s.hashes))]
}

// cachedPrefix finds the longest run of s's leading blocks in the cache,
// among its first limit, and returns them.
func (e *Engine) cachedPrefix(s *sequence, limit int) []int32 {
	if !e.pool.caching || limit <= 0 {
		return nil
	}
	bs := e.opts.BlockSize
	var blocks []int32
	for i, h := range e.blockHashes(s, limit) {
		b, ok := e.pool.lookup(h, s.tokens[i*bs:(i+1)*bs])
		if !ok {
			break
		}
		blocks = append(blocks, b)
	}
	return blocks
}

// admitPrefix starts a sequence that holds no blocks from its longest
// cached prefix, leaving at least its last token to compute, and counts
// the query.
func (e *Engine) admitPrefix(s *sequence) {
	if s.blocks != nil || s.computed != 0 {
		return
	}
	e.prefix.Queries += int64(len(s.tokens))
	blocks := e.cachedPrefix(s, (len(s.tokens)-1)/e.opts.BlockSize)
	for _, b := range blocks {
		e.pool.take(b)
	}
	s.blocks, s.computed, s.registered = blocks, len(blocks)*e.opts.BlockSize, len(blocks)
	e.prefix.Hits += int64(s.computed)
}

// unadmit undoes admitPrefix for a sequence that could not be scheduled.
func (e *Engine) unadmit(s *sequence) {
	e.prefix.Queries -= int64(len(s.tokens))
	e.prefix.Hits -= int64(s.computed)
	e.pool.release(s.blocks)
	s.blocks, s.computed, s.registered = nil, 0, 0
}

// registerFull puts the blocks s has computed in full since the last call
// into the cache.
func (e *Engine) registerFull(s *sequence) {
	full := s.computed / e.opts.BlockSize
	if !e.pool.caching || full <= s.registered {
		return
	}
	bs := e.opts.BlockSize
	for i, h := range e.blockHashes(s, full)[s.registered:] {
		i += s.registered
		e.pool.register(s.blocks[i], h, s.tokens[i*bs:(i+1)*bs])
	}
	s.registered = full
}
