package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tandemllm/tandem/blockhash"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// errKVGap is returned by prefixIndex.apply for a batch whose sequence
// number does not follow the last one applied: batches were lost, and
// the group's index must be rebuilt from a snapshot.
var errKVGap = errors.New("gap in KV events")

// prefixIndex knows which KV blocks each group holds in its prefix cache,
// from the groups' KV events (Worker.KVEvents): the coordinator's side of
// KV-aware routing. It may be stale (events in flight, a stream being
// reopened): a wrong answer routes a request to a group that then
// computes more of its prompt than expected, never to wrong output.
type prefixIndex struct {
	mu      sync.Mutex
	groups  map[*groupState]*groupBlocks // by group state: a group re-registered with another leader starts afresh
	changed chan struct{}                // closed at the next apply or forget, when someone waits (changes)
}

// changes returns a channel closed at the index's next change, which
// comes from the groups' event streams: what tests wait on.
func (x *prefixIndex) changes() <-chan struct{} {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.changed == nil {
		x.changed = make(chan struct{})
	}
	return x.changed
}

// signalLocked wakes those waiting for a change. Called with x.mu held.
func (x *prefixIndex) signalLocked() {
	if x.changed != nil {
		close(x.changed)
		x.changed = nil
	}
}

// groupBlocks is one group's cached blocks as last known.
type groupBlocks struct {
	blockSize int
	hashes    map[blockhash.Hash]struct{}
	seq       uint64 // of the last batch applied
	synced    bool   // a snapshot has been applied since the stream (re)opened
}

func newPrefixIndex() *prefixIndex {
	return &prefixIndex{groups: map[*groupState]*groupBlocks{}}
}

// apply applies one batch of group's events and returns the blocks the
// group now holds. A snapshot replaces what was known; any other batch
// must carry the next sequence number, else it is refused with errKVGap
// and the group is marked unsynced until the next snapshot.
func (x *prefixIndex) apply(gs *groupState, b *tandemv1.KVEventsResponse) (int, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	defer x.signalLocked()
	group := gs.name
	g := x.groups[gs]
	if g == nil || b.GetSnapshot() {
		g = &groupBlocks{hashes: map[blockhash.Hash]struct{}{}}
		x.groups[gs] = g
	}
	switch {
	case b.GetSnapshot():
		g.synced = true
	case !g.synced:
		return len(g.hashes), fmt.Errorf("%w: group %s sent batch %d before a snapshot", errKVGap, group, b.GetSeq())
	case b.GetSeq() != g.seq+1:
		g.synced = false
		return len(g.hashes), fmt.Errorf("%w: group %s sent batch %d after %d", errKVGap, group, b.GetSeq(), g.seq)
	}
	g.seq, g.blockSize = b.GetSeq(), int(b.GetBlockSize())
	for _, ev := range b.GetEvents() {
		for _, h := range ev.GetBlockHashes() {
			switch ev.GetKind() {
			case tandemv1.KVEventKind_KV_EVENT_KIND_STORED:
				g.hashes[blockhash.Hash(h)] = struct{}{}
			case tandemv1.KVEventKind_KV_EVENT_KIND_REMOVED:
				delete(g.hashes, blockhash.Hash(h))
			}
		}
	}
	return len(g.hashes), nil
}

// forget drops a group (it left, or its stream is being reopened: until
// the new snapshot nothing is assumed about it).
func (x *prefixIndex) forget(g *groupState) {
	x.mu.Lock()
	delete(x.groups, g)
	x.signalLocked()
	x.mu.Unlock()
}

// cached is how many leading tokens of prompt group holds in whole blocks
// of its block size, hashed for model; hashes caches the chains already
// computed for this prompt, by block size.
func (x *prefixIndex) cached(gs *groupState, model string, prompt []int32, hashes map[int][]blockhash.Hash) int {
	x.mu.Lock()
	defer x.mu.Unlock()
	g := x.groups[gs]
	if g == nil || !g.synced || g.blockSize <= 0 || len(g.hashes) == 0 {
		return 0
	}
	chain, ok := hashes[g.blockSize]
	if !ok {
		chain = blockhash.Chain(nil, model, prompt, g.blockSize)
		hashes[g.blockSize] = chain
	}
	n := 0
	for _, h := range chain {
		if _, ok := g.hashes[h]; !ok {
			break
		}
		n++
	}
	return n * g.blockSize
}

// kvEventsRetry is how long to wait before reopening a group's event
// stream that broke for another reason than a gap.
const kvEventsRetry = 500 * time.Millisecond

// followKVEvents keeps the index of g up to date until g leaves: it opens
// g's event stream, applies each batch, and on a gap in the sequence
// numbers (batches lost) or a broken stream opens it again, which starts
// with a snapshot: a full resynchronisation.
func (c *Coordinator) followKVEvents(g *groupState) {
	c.metrics.KVIndexGroup(g.name)
	defer func() {
		c.index.forget(g)
		c.mu.Lock()
		defer c.mu.Unlock()
		if cur := c.groups[g.name]; cur == nil || cur == g { // not replaced by a newer state of the same name
			c.metrics.KVIndexForget(g.name)
		}
	}()
	for opened := 0; g.ctx.Err() == nil; opened++ {
		if opened > 0 {
			c.metrics.KVResync(g.name)
		}
		err := c.streamKVEvents(g)
		c.index.forget(g)
		c.metrics.KVIndexBlocks(g.name, 0)
		if g.ctx.Err() != nil {
			return
		}
		if errors.Is(err, errKVGap) {
			c.log.Warn("KV events lost; resynchronising the group's prefix index", "group", g.name, "err", err)
			continue
		}
		c.log.Debug("KV event stream ended; reopening", "group", g.name, "err", err)
		select {
		case <-g.ctx.Done():
			return
		case <-time.After(kvEventsRetry):
		}
	}
}

// streamKVEvents applies one event stream of g until it ends or a batch
// is missing.
func (c *Coordinator) streamKVEvents(g *groupState) error {
	ctx, cancel := context.WithCancel(g.ctx)
	defer cancel()
	stream, err := g.client.KVEvents(ctx, &tandemv1.KVEventsRequest{})
	if err != nil {
		return err
	}
	for {
		b, err := stream.Recv()
		if err != nil {
			return err
		}
		n, err := c.index.apply(g, b)
		c.metrics.KVIndexBlocks(g.name, n)
		if err != nil {
			return err
		}
	}
}
