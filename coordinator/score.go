package coordinator

import (
	"math"

	"github.com/tandemllm/tandem/cluster"
)

// RoutingOptions weigh, within one role, how much of a prompt a group
// already holds in its prefix cache against how busy it is. The zero
// value takes the documented defaults.
type RoutingOptions struct {
	// PrefixWeight scores the share of the prompt a group holds (0..1).
	// Default 2. Negative: 0 (routing by load alone).
	PrefixWeight float64
	// LoadWeight scores a group's load (0..1, see choose). Default 1.
	// Negative: 0 (routing by prefix alone, load breaking ties).
	LoadWeight float64
	// MaxRequests is the requests in flight on a group (running and
	// waiting, as last polled plus those routed to it since) at which it
	// counts as at its load limit and is skipped while some group is not,
	// as is one without the free KV blocks the request needs. Default 256
	// (vLLM's max-num-seqs: a group queues beyond it anyway); negative: no
	// limit on requests.
	MaxRequests int
}

func (o *RoutingOptions) defaults() {
	switch {
	case o.PrefixWeight == 0:
		o.PrefixWeight = 2
	case o.PrefixWeight < 0:
		o.PrefixWeight = 0
	}
	switch {
	case o.LoadWeight == 0:
		o.LoadWeight = 1
	case o.LoadWeight < 0:
		o.LoadWeight = 0
	}
	if o.MaxRequests == 0 {
		o.MaxRequests = 256
	}
}

// candidate is a group as routing sees it: its load, and the prompt
// tokens it holds in its prefix cache.
type candidate struct {
	g      *groupState
	load   load
	cached int
}

// choose returns the candidate with the highest score for a prompt of n
// tokens, cs not empty:
//
//	score = PrefixWeight · cached/n − LoadWeight · busy
//
// where cached is the leading prompt tokens the group holds (whole
// blocks, from the prefix index) and busy its load in [0, 1]: for prefill
// groups the prompt tokens waiting to be computed, over the most any
// candidate has; for decode groups the share of KV blocks in use; for
// unified groups the running and waiting requests, over the most any
// candidate has. Groups at their load limit (MaxRequests in flight, or
// fewer free KV blocks than the request needs on a decode or unified
// group) are skipped unless all are. Equal scores go to the
// least loaded by the role's own order (pickPrefill, pickDecode,
// pickUnified), then to the first.
func (o RoutingOptions) choose(cs []candidate, n int64, r cluster.Role) candidate {
	open := make([]candidate, 0, len(cs))
	for _, c := range cs {
		if !o.atLimit(c, n, r) {
			open = append(open, c)
		}
	}
	if len(open) == 0 {
		open = cs
	}
	var maxPending, maxQueued int64
	for _, c := range open {
		maxPending = max(maxPending, c.load.pendingTokens)
		maxQueued = max(maxQueued, c.load.running+c.load.waiting)
	}
	busy := func(l load) float64 {
		switch r {
		case cluster.RolePrefill:
			return ratio(l.pendingTokens, maxPending)
		case cluster.RoleDecode:
			return ratio(l.totalBlocks-l.freeBlocks, l.totalBlocks)
		}
		return ratio(l.running+l.waiting, maxQueued)
	}
	tie := pickUnified
	switch r {
	case cluster.RolePrefill:
		tie = pickPrefill
	case cluster.RoleDecode:
		tie = pickDecode
	}
	best, bestScore := []candidate(nil), math.Inf(-1)
	for _, c := range open {
		score := o.PrefixWeight*ratio(int64(c.cached), n) - o.LoadWeight*busy(c.load)
		switch {
		case score > bestScore+1e-9:
			best, bestScore = []candidate{c}, score
		case score >= bestScore-1e-9:
			best = append(best, c)
		}
	}
	loads := make([]load, len(best))
	for i, c := range best {
		loads[i] = c.load
	}
	return best[tie(loads)]
}

// atLimit reports whether c cannot take a request of n prompt tokens
// without queueing beyond the limit.
func (o RoutingOptions) atLimit(c candidate, n int64, r cluster.Role) bool {
	if o.MaxRequests > 0 && c.load.running+c.load.waiting >= int64(o.MaxRequests) {
		return true
	}
	if r == cluster.RolePrefill {
		return false
	}
	bs := c.g.blockSize()
	return c.load.freeBlocks < blocksFor(n+1, bs)-int64(c.cached)/bs
}

// ratio is a/b, 0 when b is not positive; clamped to [0, 1].
func ratio(a, b int64) float64 {
	if b <= 0 {
		return 0
	}
	return min(max(float64(a)/float64(b), 0), 1)
}
