package tracing

import (
	"time"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// The fixtures are built in coordinator time, in microseconds after the
// arrival, and stored in each rank's own clock (coordinator time minus the
// rank's offset), as the coordinator would receive them. Tokens reach the
// coordinator exactly when their step ends, so the fixtures are
// consistent: every token's parts add up to its ITL with nothing left
// over.

const fixtureArrival = 1_700_000_000_000_000_000

const fixtureRequest = "req-42"

const us = int64(time.Microsecond)

// coord is a fixture time in coordinator Unix nanoseconds.
func coord(micros int64) int64 { return fixtureArrival + micros*us }

// fxStep is a step of a fixture, times in µs of coordinator time.
type fxStep struct {
	id                              uint64
	start, queue, sched, comp, samp int64
	prefill, decode                 int32
	seqs                            []*tandemv1.StepSeq // rank 0 only
	allreduce                       int                 // calls, each allreduceUs long
	allreduceUs, allreduceBytes     int64
	other                           []*tandemv1.CollectiveTrace // broadcasts, allgathers
}

func (f fxStep) end() int64 { return f.start + f.sched + f.comp + f.samp }

// trace renders the step as rank of offset (ns) records it.
func (f fxStep) trace(rank int32, offset int64) *tandemv1.StepTrace {
	s := &tandemv1.StepTrace{
		Step:           f.id,
		StartUnixNanos: coord(f.start) - offset,
		ScheduleNanos:  f.sched * us,
		ComputeNanos:   f.comp * us,
		SampleNanos:    f.samp * us,
		QueueNanos:     f.queue * us,
		PrefillTokens:  f.prefill,
		DecodeTokens:   f.decode,
		FreeBlocks:     500 - int32(f.id),
		// As a worker collecting detailed traces records them.
		Ops: []*tandemv1.OpTime{{Op: "q_proj", Nanos: f.comp * us / 8}, {Op: "attention", Nanos: f.comp * us / 4}},
	}
	if rank == 0 {
		s.Seqs = f.seqs
	} else {
		// Only rank 0 samples; its peers spend that time in compute.
		s.SampleNanos = 0
		s.ComputeNanos += f.samp * us
	}
	at := f.sched * us
	for range f.allreduce {
		s.Collectives = append(s.Collectives, &tandemv1.CollectiveTrace{Kind: "allreduce", Bytes: f.allreduceBytes, DurationNanos: f.allreduceUs * us, OffsetNanos: at})
		at += f.allreduceUs*us + 20*us
	}
	for _, c := range f.other {
		c := &tandemv1.CollectiveTrace{Kind: c.Kind, Bytes: c.Bytes, DurationNanos: c.DurationNanos, OffsetNanos: at}
		s.Collectives = append(s.Collectives, c)
		at += c.DurationNanos
	}
	return s
}

func seq(id string, pos, tokens int32, prefill, sampled bool) *tandemv1.StepSeq {
	return &tandemv1.StepSeq{RequestId: id, Position: pos, Tokens: tokens, Prefill: prefill, Sampled: sampled}
}

// fxKV is a KV transfer of a fixture, times in µs of coordinator time.
type fxKV struct {
	layer, src, dst int32
	start, dur      int64
}

func (k fxKV) trace(offset int64) *tandemv1.KVTransferTrace {
	return &tandemv1.KVTransferTrace{Layer: k.layer, SourceRank: k.src, DestRank: k.dst, Bytes: 64 << 10, StartUnixNanos: coord(k.start) - offset, DurationNanos: k.dur * us}
}

// lane builds a rank's trace; offset and clockErr are in ns, peers'
// steps carry no composition.
func lane(node, group string, role tandemv1.Role, rank int32, offset, clockErr int64, steps []fxStep, kv []fxKV) *tandemv1.RankTrace {
	r := &tandemv1.RankTrace{Node: node, Group: group, Role: role, Rank: rank, Addr: node + ":7000", ClockOffsetNanos: offset, ClockErrorNanos: clockErr}
	for _, s := range steps {
		r.Steps = append(r.Steps, s.trace(rank, offset))
	}
	for _, k := range kv {
		r.KvTransfers = append(r.KvTransfers, k.trace(offset))
	}
	return r
}

// disaggFixture is a request served by prefill TP-2 (two prompt chunks)
// then decode TP-2 (five tokens), on nodes whose clocks differ from the
// coordinator's. Decode step 103 ran without the request (absent from
// its trace).
func disaggFixture() *tandemv1.RequestTrace {
	gather := []*tandemv1.CollectiveTrace{{Kind: "allgather", Bytes: 4096, DurationNanos: 40 * us}}
	plan := []*tandemv1.CollectiveTrace{{Kind: "broadcast", Bytes: 64, DurationNanos: 5 * us}, {Kind: "broadcast", Bytes: 512, DurationNanos: 5 * us}}
	prefill := []fxStep{
		{id: 10, start: 1000, queue: 200, sched: 50, comp: 4000, prefill: 16, allreduce: 4, allreduceUs: 150, allreduceBytes: 1 << 20, other: plan,
			seqs: []*tandemv1.StepSeq{seq(fixtureRequest, 0, 16, true, false)}},
		{id: 11, start: 5100, queue: 50, sched: 40, comp: 3000, samp: 120, prefill: 4, allreduce: 4, allreduceUs: 100, allreduceBytes: 1 << 18, other: append(plan, gather...),
			seqs: []*tandemv1.StepSeq{seq(fixtureRequest, 0, 4, true, true)}},
	}
	var decode []fxStep
	start := int64(9400)
	for id := uint64(100); id <= 105; id++ {
		s := fxStep{id: id, start: start, queue: 70, sched: 30, comp: 2000, samp: 100, decode: 2, allreduce: 4, allreduceUs: 50, allreduceBytes: 4 << 10, other: append(plan, gather...),
			seqs: []*tandemv1.StepSeq{seq("other", 0, 1, false, true), seq(fixtureRequest, 1, 1, false, true)}}
		if id == 100 {
			s.queue = 200
		}
		if id == 103 { // not the request's: only the other sequence ran
			s.seqs = s.seqs[:1]
		}
		decode = append(decode, s)
		start = s.end() + 70
	}
	held := append(decode[:3:3], decode[4:]...)

	const pOff, dOff = 5 * int64(time.Millisecond), -3 * int64(time.Millisecond)
	t := &tandemv1.RequestTrace{
		RequestId:        fixtureRequest,
		Model:            "tiny",
		ArrivalUnixNanos: fixtureArrival,
		TokenizeNanos:    300 * us,
		PromptTokens:     20,
		FinishReason:     tandemv1.FinishReason_FINISH_REASON_LENGTH,
		EndUnixNanos:     coord(held[len(held)-1].end() + 70),
		PrefillGroup:     "prefill-0",
		DecodeGroup:      "decode-0",
		Ranks: []*tandemv1.RankTrace{
			// Listed out of order: views sort them.
			lane("gpu-b", "decode-0", tandemv1.Role_ROLE_DECODE, 1, dOff+2000, 35*us, held, []fxKV{{0, 1, 1, 8520, 300}, {1, 1, 1, 8850, 350}}),
			lane("gpu-a", "prefill-0", tandemv1.Role_ROLE_PREFILL, 0, pOff, 20*us, prefill, []fxKV{{0, 0, 0, 8490, 290}, {1, 0, 0, 8790, 300}}),
			lane("gpu-a", "prefill-0", tandemv1.Role_ROLE_PREFILL, 1, pOff+1000, 25*us, prefill, []fxKV{{0, 1, 1, 8510, 300}, {1, 1, 1, 8840, 350}}),
			lane("gpu-b", "decode-0", tandemv1.Role_ROLE_DECODE, 0, dOff, 40*us, held, []fxKV{{0, 0, 0, 8500, 300}, {1, 0, 0, 8800, 300}}),
		},
	}
	t.Tokens = append(t.Tokens, &tandemv1.TokenTrace{Index: 0, TokenId: 1000, UnixNanos: coord(prefill[1].end()), Group: "prefill-0", Step: 11})
	for i, s := range held {
		t.Tokens = append(t.Tokens, &tandemv1.TokenTrace{Index: int32(i + 1), TokenId: int32(1001 + i), UnixNanos: coord(s.end()), Group: "decode-0", Step: s.id})
	}
	return t
}

// unifiedFixture is a request on one TP-1 group: the prompt in one step
// batched with another request's decode, then three decode steps.
func unifiedFixture() *tandemv1.RequestTrace {
	steps := []fxStep{
		{id: 1, start: 500, queue: 400, sched: 20, comp: 3000, samp: 80, prefill: 12, decode: 1,
			seqs: []*tandemv1.StepSeq{seq("other", 0, 1, false, true), seq(fixtureRequest, 1, 12, true, true)}},
	}
	for id := uint64(2); id <= 4; id++ {
		prev := steps[len(steps)-1]
		steps = append(steps, fxStep{id: id, start: prev.end() + 10, queue: 10, sched: 10, comp: 900, samp: 60, decode: 1,
			seqs: []*tandemv1.StepSeq{seq(fixtureRequest, 0, 1, false, true)}})
	}
	t := &tandemv1.RequestTrace{
		RequestId:        fixtureRequest,
		Model:            "tiny",
		ArrivalUnixNanos: fixtureArrival,
		TokenizeNanos:    120 * us,
		PromptTokens:     12,
		FinishReason:     tandemv1.FinishReason_FINISH_REASON_STOP,
		EndUnixNanos:     coord(steps[3].end() + 50),
		DecodeGroup:      "unified-0",
		Ranks:            []*tandemv1.RankTrace{lane("cpu-host", "unified-0", tandemv1.Role_ROLE_UNIFIED, 0, 700, 2*us, steps, nil)},
	}
	for i, s := range steps {
		t.Tokens = append(t.Tokens, &tandemv1.TokenTrace{Index: int32(i), TokenId: int32(500 + i), UnixNanos: coord(s.end()), Group: "unified-0", Step: s.id})
	}
	return t
}

// wholeLoadFixture is disaggFixture with the decode ranks recording each
// load as one record of all layers (layer -1, source unknown), as the
// worker's LoadKV does: 8550..9200 in all.
func wholeLoadFixture() *tandemv1.RequestTrace {
	t := disaggFixture()
	for _, r := range t.Ranks {
		if r.Group != "decode-0" {
			continue
		}
		r.KvTransfers = []*tandemv1.KVTransferTrace{fxKV{-1, -1, r.Rank, 8550 + 50*int64(r.Rank), 600}.trace(r.ClockOffsetNanos)}
	}
	return t
}
