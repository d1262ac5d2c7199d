package tracing

import (
	"sync"

	"google.golang.org/protobuf/proto"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// DefaultCapacity is the number of step records a Recorder keeps when
// NewRecorder is given no capacity: at tens of steps a second, about a
// minute of a busy rank's history.
const DefaultCapacity = 4096

// Recorder is a rank's flight recorder: a bounded ring of step records.
// Record fills the next slot in place, reusing its slices, so recording
// allocates nothing once the ring has wrapped (and slices have grown to
// the usual batch size).
//
// A Recorder is safe for concurrent use: Record and RecordKV from the
// step loop and the KV movers, Steps and KV from gRPC handlers.
type Recorder struct {
	mu sync.Mutex

	// steps is the ring; a slot is allocated the first time it is filled.
	steps     []*tandemv1.StepTrace
	next      int  // the slot Record fills next
	wrapped   bool // every slot holds a record
	kv        []kvRecord
	kvNext    int
	kvWrapped bool
}

// kvRecord is a KV transfer kept as plain values, so that RecordKV copies
// into the ring without allocating.
type kvRecord struct {
	requestID           string
	layer, source, dest int32
	bytes, start, dur   int64
}

// NewRecorder returns a recorder keeping the last capacity steps
// (DefaultCapacity when capacity <= 0) and the last 4×capacity KV
// transfer records.
func NewRecorder(capacity int) *Recorder {
	if capacity <= 0 {
		capacity = DefaultCapacity
	}
	return &Recorder{
		steps: make([]*tandemv1.StepTrace, capacity),
		kv:    make([]kvRecord, capacity*4),
	}
}

// Record calls fill with the next slot under the recorder's lock. The
// slot is a *tandemv1.StepTrace reset to zero, with zero-length Seqs,
// Collectives and Ops that keep their capacity (and the messages beyond
// their length: AddSeq, AddCollective and AddOp reuse them), and with Gpu, if an
// earlier record set it, pointing at zeroed counters to fill in place
// (set it to nil for a step without counters). fill must not keep the
// pointer or anything reachable from it.
func (r *Recorder) Record(fill func(s *tandemv1.StepTrace)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.steps[r.next]
	if s == nil {
		s = new(tandemv1.StepTrace)
		r.steps[r.next] = s
	} else {
		resetStep(s)
	}
	fill(s)
	r.next++
	if r.next == len(r.steps) {
		r.next, r.wrapped = 0, true
	}
}

// resetStep zeroes s but keeps its slices' backing arrays and its GPU
// counters, the parts that would otherwise be allocated again each step.
func resetStep(s *tandemv1.StepTrace) {
	seqs, colls, ops, gpu := s.Seqs[:0], s.Collectives[:0], s.Ops[:0], s.Gpu
	s.Reset()
	s.Seqs, s.Collectives, s.Ops = seqs, colls, ops
	if gpu != nil {
		gpu.Reset()
		s.Gpu = gpu
	}
}

// AddSeq appends a zeroed StepSeq to s and returns it, reusing the message
// an earlier record left beyond the slice's length when there is one.
func AddSeq(s *tandemv1.StepTrace) *tandemv1.StepSeq { return addSlot(&s.Seqs) }

// AddCollective appends a zeroed CollectiveTrace to s and returns it,
// reusing the message an earlier record left beyond the slice's length
// when there is one.
func AddCollective(s *tandemv1.StepTrace) *tandemv1.CollectiveTrace {
	return addSlot(&s.Collectives)
}

// AddOp appends a zeroed OpTime to s and returns it, reusing the message
// an earlier record left beyond the slice's length when there is one.
func AddOp(s *tandemv1.StepTrace) *tandemv1.OpTime { return addSlot(&s.Ops) }

// addSlot appends a zeroed message to *list: the one an earlier record
// left beyond its length, reset, or a new one.
func addSlot[T any, P interface {
	*T
	Reset()
}](list *[]P) P {
	n := len(*list)
	if n < cap(*list) {
		*list = (*list)[:n+1]
		if m := (*list)[n]; m != nil {
			m.Reset()
			return m
		}
		m := P(new(T))
		(*list)[n] = m
		return m
	}
	m := P(new(T))
	*list = append(*list, m)
	return m
}

// GPU returns s's GPU counters to fill in place, allocating them only
// when s has none yet.
func GPU(s *tandemv1.StepTrace) *tandemv1.GPUCounters {
	if s.Gpu == nil {
		s.Gpu = new(tandemv1.GPUCounters)
	}
	return s.Gpu
}

// RecordKV notes one KV transfer (one layer between one pair of ranks) of
// a request. KV records have their own ring, of 4×capacity entries,
// because a request moves one record per layer and rank pair.
func (r *Recorder) RecordKV(requestID string, kv *tandemv1.KVTransferTrace) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.kv[r.kvNext] = kvRecord{
		requestID: requestID,
		layer:     kv.GetLayer(),
		source:    kv.GetSourceRank(),
		dest:      kv.GetDestRank(),
		bytes:     kv.GetBytes(),
		start:     kv.GetStartUnixNanos(),
		dur:       kv.GetDurationNanos(),
	}
	r.kvNext++
	if r.kvNext == len(r.kv) {
		r.kvNext, r.kvWrapped = 0, true
	}
}

// Steps returns deep copies of the records, oldest first, of the steps
// whose Seqs hold requestID (when it is not empty) or whose step id is in
// ids. Rank 0 is asked by request id; the other ranks, which record no
// batch composition, by the step ids rank 0 answered.
func (r *Recorder) Steps(requestID string, ids []uint64) []*tandemv1.StepTrace {
	want := make(map[uint64]struct{}, len(ids))
	for _, id := range ids {
		want[id] = struct{}{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*tandemv1.StepTrace
	r.eachStep(func(s *tandemv1.StepTrace) {
		if _, ok := want[s.GetStep()]; ok || (requestID != "" && holds(s, requestID)) {
			out = append(out, proto.CloneOf(s))
		}
	})
	return out
}

// eachStep calls f with every record, oldest first; r.mu is held.
func (r *Recorder) eachStep(f func(s *tandemv1.StepTrace)) {
	start, n := 0, r.next
	if r.wrapped {
		start, n = r.next, len(r.steps)
	}
	for i := range n {
		f(r.steps[(start+i)%len(r.steps)])
	}
}

// holds reports whether the step's batch had a row of the request.
func holds(s *tandemv1.StepTrace, requestID string) bool {
	for _, q := range s.GetSeqs() {
		if q.GetRequestId() == requestID {
			return true
		}
	}
	return false
}

// KV returns copies of the request's KV transfer records, oldest first.
func (r *Recorder) KV(requestID string) []*tandemv1.KVTransferTrace {
	r.mu.Lock()
	defer r.mu.Unlock()
	start, n := 0, r.kvNext
	if r.kvWrapped {
		start, n = r.kvNext, len(r.kv)
	}
	var out []*tandemv1.KVTransferTrace
	for i := range n {
		k := &r.kv[(start+i)%len(r.kv)]
		if k.requestID != requestID {
			continue
		}
		out = append(out, &tandemv1.KVTransferTrace{
			Layer:          k.layer,
			SourceRank:     k.source,
			DestRank:       k.dest,
			Bytes:          k.bytes,
			StartUnixNanos: k.start,
			DurationNanos:  k.dur,
		})
	}
	return out
}
