package worker

import (
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemllm/tandem/engine"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// kvEventBuffer is how many batches a subscriber may fall behind before
// batches are dropped for it (it then sees a gap in seq and resubscribes).
const kvEventBuffer = 256

// kvEvents fans the engine's prefix-cache events out to the subscribers
// of Worker.KVEvents, in numbered batches. publish and subscribe run on
// the leader's loop, between steps, so a snapshot and the batches after
// it follow each other exactly.
type kvEvents struct {
	group     string
	blockSize int32

	mu   sync.Mutex
	seq  uint64 // of the last batch made
	subs map[chan *tandemv1.KVEventsResponse]struct{}
}

func newKVEvents(group string, blockSize int) *kvEvents {
	return &kvEvents{group: group, blockSize: int32(blockSize), subs: map[chan *tandemv1.KVEventsResponse]struct{}{}}
}

// publish makes the events taken from the engine into the next batch and
// queues it for every subscriber; one too far behind misses it.
func (k *kvEvents) publish(events []engine.KVEvent) {
	if len(events) == 0 {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.seq++
	b := k.batch(k.seq, false)
	for _, ev := range events {
		b.Events = append(b.Events, wireEvent(ev))
	}
	for ch := range k.subs {
		select {
		case ch <- b:
		default: // the subscriber sees the gap and resynchronises
		}
	}
}

// subscribe registers a subscriber whose first batch is a snapshot of
// hashes, the whole cache as of the last batch made.
func (k *kvEvents) subscribe(hashes []uint64) (chan *tandemv1.KVEventsResponse, *tandemv1.KVEventsResponse) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ch := make(chan *tandemv1.KVEventsResponse, kvEventBuffer)
	k.subs[ch] = struct{}{}
	snap := k.batch(k.seq, true)
	snap.Events = []*tandemv1.KVEvent{{Kind: tandemv1.KVEventKind_KV_EVENT_KIND_STORED, BlockHashes: hashes}}
	return ch, snap
}

func (k *kvEvents) unsubscribe(ch chan *tandemv1.KVEventsResponse) {
	k.mu.Lock()
	delete(k.subs, ch)
	k.mu.Unlock()
}

func (k *kvEvents) batch(seq uint64, snapshot bool) *tandemv1.KVEventsResponse {
	return &tandemv1.KVEventsResponse{Seq: seq, Snapshot: snapshot, UnixNanos: time.Now().UnixNano(), Group: k.group, BlockSize: k.blockSize}
}

func wireEvent(ev engine.KVEvent) *tandemv1.KVEvent {
	out := &tandemv1.KVEvent{Kind: tandemv1.KVEventKind_KV_EVENT_KIND_STORED, BlockHashes: make([]uint64, len(ev.Hashes))}
	if ev.Kind == engine.KVRemoved {
		out.Kind = tandemv1.KVEventKind_KV_EVENT_KIND_REMOVED
	}
	for i, h := range ev.Hashes {
		out.BlockHashes[i] = uint64(h)
	}
	return out
}

// KVEvents streams the group's prefix-cache events: a snapshot, then each
// batch as the loop makes it (see the proto's comment).
func (l *leader) KVEvents(_ *tandemv1.KVEventsRequest, stream tandemv1.Worker_KVEventsServer) error {
	ctx := stream.Context()
	var (
		ch   chan *tandemv1.KVEventsResponse
		snap *tandemv1.KVEventsResponse
	)
	err := l.do(ctx, func(e *engine.Engine) error {
		l.events.publish(e.TakeKVEvents()) // what happened before the snapshot goes first
		cached := e.CachedHashes()
		hashes := make([]uint64, len(cached))
		for i, h := range cached {
			hashes[i] = uint64(h)
		}
		ch, snap = l.events.subscribe(hashes)
		return nil
	})
	if err != nil {
		return statusOf(err)
	}
	defer l.events.unsubscribe(ch)
	for b := snap; ; {
		if err := stream.Send(b); err != nil {
			return err
		}
		select {
		case b = <-ch:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-l.dead:
			return status.Error(codes.Unavailable, "group is down")
		}
	}
}
