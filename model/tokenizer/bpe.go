package tokenizer

import (
	"sync"
	"unicode/utf8"
)

// bpe is the byte-pair-encoding model: it turns one pre-token into ids by
// starting from its characters and repeatedly applying the lowest-ranked
// merge among adjacent pairs (leftmost first on ties).
type bpe struct {
	vocab  map[string]int32
	merges map[uint64]merge // key: pairKey(left, right)
	unk    int32            // -1 when the model has no unknown token
	// byteIDs[b] is the id of the <0xXX> token for byte b, or -1; used
	// when byteFallback is set.
	byteIDs      [256]int32
	byteFallback bool
	fuseUnk      bool
	ignoreMerges bool
	cache        *wordCache
}

type merge struct {
	rank int32
	id   int32 // the merged token
}

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// symbol is one part of a word being merged, in a doubly linked list over
// the word's initial parts.
type symbol struct {
	id         int32
	prev, next int32 // indices into the symbol slice, -1 at the ends
	dead       bool
}

// encode appends the ids of word to dst.
func (m *bpe) encode(dst []int32, word string) []int32 {
	if word == "" {
		return dst
	}
	if m.ignoreMerges {
		if id, ok := m.vocab[word]; ok {
			return append(dst, id)
		}
	}
	if ids, ok := m.cache.get(word); ok {
		return append(dst, ids...)
	}
	start := len(dst)
	dst = m.merge(dst, m.initialSymbols(word))
	m.cache.put(word, dst[start:])
	return dst
}

// initialSymbols splits word into per-character symbols. A character that is
// not in the vocabulary becomes byte tokens (byte fallback), the unknown
// token (fused with a preceding one when fuseUnk is set), or nothing.
func (m *bpe) initialSymbols(word string) []symbol {
	syms := make([]symbol, 0, len(word))
	add := func(id int32) {
		n := int32(len(syms))
		syms = append(syms, symbol{id: id, prev: n - 1, next: n + 1})
	}
	for i := 0; i < len(word); {
		_, n := utf8.DecodeRuneInString(word[i:])
		ch := word[i : i+n]
		i += n
		if id, ok := m.vocab[ch]; ok {
			add(id)
			continue
		}
		if m.byteFallback && m.hasBytes(ch) {
			for j := 0; j < len(ch); j++ {
				add(m.byteIDs[ch[j]])
			}
			continue
		}
		if m.unk < 0 {
			continue
		}
		if m.fuseUnk && len(syms) > 0 && syms[len(syms)-1].id == m.unk {
			continue
		}
		add(m.unk)
	}
	if len(syms) > 0 {
		syms[len(syms)-1].next = -1
	}
	return syms
}

func (m *bpe) hasBytes(ch string) bool {
	for j := 0; j < len(ch); j++ {
		if m.byteIDs[ch[j]] < 0 {
			return false
		}
	}
	return true
}

// merge applies merges to syms and appends the resulting ids to dst. A
// min-heap of candidate pairs keyed by (rank, position) makes a word of n
// symbols cost O(n log n); stale candidates are skipped when popped.
func (m *bpe) merge(dst []int32, syms []symbol) []int32 {
	h := make(pairHeap, 0, len(syms))
	for i := 0; i+1 < len(syms); i++ {
		if mg, ok := m.merges[pairKey(syms[i].id, syms[i+1].id)]; ok {
			h = append(h, candidate{rank: mg.rank, pos: int32(i), left: syms[i].id, right: syms[i+1].id})
		}
	}
	h.init()
	for len(h) > 0 {
		c := h.pop()
		s := &syms[c.pos]
		if s.dead || s.id != c.left || s.next < 0 || syms[s.next].id != c.right {
			continue // a neighbour merged since this candidate was pushed
		}
		right := &syms[s.next]
		s.id = m.merges[pairKey(c.left, c.right)].id
		right.dead = true
		s.next = right.next
		if s.next >= 0 {
			syms[s.next].prev = c.pos
		}
		if s.prev >= 0 {
			p := syms[s.prev]
			if mg, ok := m.merges[pairKey(p.id, s.id)]; ok {
				h.push(candidate{rank: mg.rank, pos: s.prev, left: p.id, right: s.id})
			}
		}
		if s.next >= 0 {
			nx := syms[s.next]
			if mg, ok := m.merges[pairKey(s.id, nx.id)]; ok {
				h.push(candidate{rank: mg.rank, pos: c.pos, left: s.id, right: nx.id})
			}
		}
	}
	for i := int32(0); i >= 0 && int(i) < len(syms); i = syms[i].next {
		dst = append(dst, syms[i].id)
	}
	return dst
}

type candidate struct {
	rank, pos   int32
	left, right int32
}

// pairHeap is a min-heap of merge candidates ordered by rank, then position.
type pairHeap []candidate

func (h pairHeap) less(a, b int) bool {
	if h[a].rank != h[b].rank {
		return h[a].rank < h[b].rank
	}
	return h[a].pos < h[b].pos
}

func (h pairHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h *pairHeap) push(c candidate) {
	*h = append(*h, c)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !s.less(i, p) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *pairHeap) pop() candidate {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	*h = s[:last]
	h.down(0)
	return top
}

func (h pairHeap) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		j := l
		if r := l + 1; r < len(h) && h.less(r, l) {
			j = r
		}
		if !h.less(j, i) {
			return
		}
		h[i], h[j] = h[j], h[i]
		i = j
	}
}

// wordCache memoizes the ids of recently seen words. It is bounded: when
// full it is emptied and refilled, which keeps the hot words of the current
// workload without per-entry bookkeeping. Long words are not cached.
type wordCache struct {
	mu       sync.RWMutex
	m        map[string][]int32
	capacity int
}

// maxCachedWord is the longest word, in bytes, worth caching.
const maxCachedWord = 256

func newWordCache(capacity int) *wordCache {
	return &wordCache{m: make(map[string][]int32), capacity: capacity}
}

func (c *wordCache) get(word string) ([]int32, bool) {
	if c == nil || c.capacity <= 0 {
		return nil, false
	}
	c.mu.RLock()
	ids, ok := c.m[word]
	c.mu.RUnlock()
	return ids, ok
}

func (c *wordCache) put(word string, ids []int32) {
	if c == nil || c.capacity <= 0 || len(word) > maxCachedWord {
		return
	}
	cp := append([]int32(nil), ids...)
	c.mu.Lock()
	if len(c.m) >= c.capacity {
		clear(c.m)
	}
	c.m[word] = cp
	c.mu.Unlock()
}
