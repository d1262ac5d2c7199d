package engine

import (
	"errors"
	"fmt"
	"slices"

	"github.com/tandemllm/tandem/blockhash"
)

// ErrOutOfBlocks is returned when the KV block pool cannot hold a sequence.
var ErrOutOfBlocks = errors.New("engine: out of KV cache blocks")

// none marks the end of the free list and a block that is not on it.
const none = -1

// blockPool hands out KV cache block ids and keeps the prefix cache: full
// blocks named by their blockhash.Hash, kept after their sequences end.
//
// Every block has a reference count (the sequences and reservations
// using it). Blocks nobody uses are on the free list, which is also the
// eviction order: uncached blocks at its head (they cost nothing to hand
// out; the one freed last goes first, being cache-warm), then cached ones
// from least to most recently used. A block handed out from the list
// that was cached is evicted: its hash is forgotten and reported.
type blockPool struct {
	blockSize int
	total     int
	ref       []int32
	// The free list, doubly linked through prev and next.
	prev, next []int32
	head, tail int32
	nfree      int

	caching bool
	hash    []blockhash.Hash // by block, valid while cached[b]
	cached  []bool
	tokens  []int32 // by block, BlockSize tokens: compared on a hit
	byHash  map[blockhash.Hash]int32
	ncached int
	events  []KVEvent // stores and evictions not yet taken
}

func newBlockPool(numBlocks, blockSize int, caching bool) *blockPool {
	p := &blockPool{
		blockSize: blockSize, total: numBlocks, caching: caching,
		ref: make([]int32, numBlocks), prev: make([]int32, numBlocks), next: make([]int32, numBlocks),
		head: none, tail: none,
	}
	if caching {
		p.hash = make([]blockhash.Hash, numBlocks)
		p.cached = make([]bool, numBlocks)
		p.tokens = make([]int32, numBlocks*blockSize)
		p.byHash = make(map[blockhash.Hash]int32)
	}
	for b := range int32(numBlocks) {
		p.pushTail(b)
	}
	return p
}

// Free is the number of blocks a sequence could be given: unused blocks,
// cached or not.
func (p *blockPool) Free() int { return p.nfree }

// Cached is the number of blocks in the prefix cache, used or not.
func (p *blockPool) Cached() int { return p.ncached }

// blocksFor is how many blocks n tokens occupy.
func (p *blockPool) blocksFor(n int) int { return (n + p.blockSize - 1) / p.blockSize }

// grow extends table so it covers n tokens, allocating new blocks.
func (p *blockPool) grow(table []int32, n int) ([]int32, error) {
	need := p.blocksFor(n) - len(table)
	if need <= 0 {
		return table, nil
	}
	if need > p.nfree {
		return table, fmt.Errorf("%w: need %d more, %d free of %d", ErrOutOfBlocks, need, p.nfree, p.total)
	}
	for range need {
		b := p.head
		p.unlink(b)
		if p.caching && p.cached[b] {
			p.evict(b)
		}
		p.ref[b] = 1
		table = append(table, b)
	}
	return table, nil
}

// release drops table's hold on each of its blocks. Blocks nobody uses
// any more go on the free list: uncached ones at its head, cached ones at
// its tail in reverse order, so that a sequence's later blocks, the least
// likely to be shared, are evicted before its earlier ones.
func (p *blockPool) release(table []int32) {
	for _, b := range slices.Backward(table) {
		if p.ref[b]--; p.ref[b] > 0 {
			continue
		}
		if p.caching && p.cached[b] {
			p.pushTail(b)
		} else {
			p.pushHead(b)
		}
	}
}

// slots appends, for token positions [from, to), the cache slot of each
// position under table.
func (p *blockPool) slots(dst []int32, table []int32, from, to int) []int32 {
	for pos := from; pos < to; pos++ {
		dst = append(dst, table[pos/p.blockSize]*int32(p.blockSize)+int32(pos%p.blockSize))
	}
	return dst
}

// lookup returns the cached block named h, if its tokens are tokens.
func (p *blockPool) lookup(h blockhash.Hash, tokens []int32) (int32, bool) {
	if !p.caching {
		return 0, false
	}
	b, ok := p.byHash[h]
	if !ok || !slices.Equal(p.tokens[int(b)*p.blockSize:(int(b)+1)*p.blockSize], tokens) {
		return 0, false
	}
	return b, true
}

// take adds a hold on a cached block found by lookup.
func (p *blockPool) take(b int32) {
	if p.ref[b] == 0 {
		p.unlink(b)
	}
	p.ref[b]++
}

// register names full block b, which holds tokens, h in the cache, unless
// another block already has that name (the same prefix computed twice at
// once): b then stays uncached, a private copy freed when its sequence
// ends.
func (p *blockPool) register(b int32, h blockhash.Hash, tokens []int32) {
	if !p.caching || p.cached[b] {
		return
	}
	if _, dup := p.byHash[h]; dup {
		return
	}
	p.cached[b], p.hash[b] = true, h
	p.byHash[h] = b
	copy(p.tokens[int(b)*p.blockSize:], tokens)
	p.ncached++
	p.event(KVStored, h)
}

// evict forgets cached block b's name.
func (p *blockPool) evict(b int32) {
	delete(p.byHash, p.hash[b])
	p.cached[b] = false
	p.ncached--
	p.event(KVRemoved, p.hash[b])
}

// event appends h to the last pending event when it is of the same kind,
// so that a step's stores travel as one event.
func (p *blockPool) event(kind KVEventKind, h blockhash.Hash) {
	if n := len(p.events); n > 0 && p.events[n-1].Kind == kind {
		p.events[n-1].Hashes = append(p.events[n-1].Hashes, h)
		return
	}
	p.events = append(p.events, KVEvent{Kind: kind, Hashes: []blockhash.Hash{h}})
}

// hashes lists every cached block's name.
func (p *blockPool) hashes() []blockhash.Hash {
	out := make([]blockhash.Hash, 0, p.ncached)
	for h := range p.byHash {
		out = append(out, h)
	}
	return out
}

func (p *blockPool) pushHead(b int32) {
	p.prev[b], p.next[b] = none, p.head
	if p.head != none {
		p.prev[p.head] = b
	} else {
		p.tail = b
	}
	p.head = b
	p.nfree++
}

func (p *blockPool) pushTail(b int32) {
	p.prev[b], p.next[b] = p.tail, none
	if p.tail != none {
		p.next[p.tail] = b
	} else {
		p.head = b
	}
	p.tail = b
	p.nfree++
}

func (p *blockPool) unlink(b int32) {
	if p.prev[b] != none {
		p.next[p.prev[b]] = p.next[b]
	} else {
		p.head = p.next[b]
	}
	if p.next[b] != none {
		p.prev[p.next[b]] = p.prev[b]
	} else {
		p.tail = p.prev[b]
	}
	p.prev[b], p.next[b] = none, none
	p.nfree--
}
