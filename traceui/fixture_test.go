package traceui

import (
	"context"
	"fmt"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// fixtureSource is an in-memory Source: traces in arrival order, and an
// error every call returns when err is set.
type fixtureSource struct {
	traces []*tandemv1.RequestTrace
	err    error
}

func (s *fixtureSource) ListRequests(ctx context.Context, limit int) ([]*tandemv1.RequestSummary, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.err != nil {
		return nil, s.err
	}
	var out []*tandemv1.RequestSummary
	for _, t := range slices.Backward(s.traces) {
		if len(out) == limit {
			break
		}
		out = append(out, summarize(t))
	}
	return out, nil
}

func (s *fixtureSource) GetTrace(ctx context.Context, id string) (*tandemv1.RequestTrace, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.err != nil {
		return nil, s.err
	}
	for _, t := range s.traces {
		if t.GetRequestId() == id {
			return t, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "no trace for request %q", id)
}

// summarize is what the coordinator's ListRequests says of a trace.
func summarize(t *tandemv1.RequestTrace) *tandemv1.RequestSummary {
	s := &tandemv1.RequestSummary{
		RequestId:        t.GetRequestId(),
		ArrivalUnixNanos: t.GetArrivalUnixNanos(),
		PromptTokens:     t.GetPromptTokens(),
		CompletionTokens: int32(len(t.GetTokens())),
		FinishReason:     t.GetFinishReason(),
	}
	if g := t.GetPrefillGroup(); g != "" {
		s.Groups = append(s.Groups, g)
	}
	if g := t.GetDecodeGroup(); g != "" {
		s.Groups = append(s.Groups, g)
	}
	if toks := t.GetTokens(); len(toks) > 0 {
		first, last := toks[0].GetUnixNanos(), toks[len(toks)-1].GetUnixNanos()
		s.TtftMs = float64(first-t.GetArrivalUnixNanos()) / 1e6
		if len(toks) > 1 {
			s.TpotMs = float64(last-first) / float64(len(toks)-1) / 1e6
		}
	}
	return s
}

// fixtureArrival is 2023-11-14 22:13:20 UTC.
const fixtureArrival = 1_700_000_000_000_000_000

// fixtureTrace is a disaggregated request over 2 nodes: prefill-0 (TP-2)
// on node-a, decode-0 (TP-2) on node-b, with clock offsets, collectives,
// KV transfers and tokens. arrival shifts it in time.
func fixtureTrace(id string, arrival int64, tokens int) *tandemv1.RequestTrace {
	t := &tandemv1.RequestTrace{
		RequestId: id, Model: "gqa-tiny", ArrivalUnixNanos: arrival, TokenizeNanos: 250_000,
		PromptTokens: 96, FinishReason: tandemv1.FinishReason_FINISH_REASON_LENGTH,
		EndUnixNanos: arrival + 6_000_000 + int64(tokens)*3_000_000,
		PrefillGroup: "prefill-0", DecodeGroup: "decode-0",
	}
	for rank := range int32(2) {
		t.Ranks = append(t.Ranks, fixtureRank("node-a", "prefill-0", tandemv1.Role_ROLE_PREFILL, rank, 800_000, arrival+500_000, 1))
	}
	for rank := range int32(2) {
		t.Ranks = append(t.Ranks, fixtureRank("node-b", "decode-0", tandemv1.Role_ROLE_DECODE, rank, -1_200_000, arrival+6_000_000, tokens-1))
	}
	// The first token comes from prefill-0's step, the rest from decode-0.
	for i := range tokens {
		tok := &tandemv1.TokenTrace{Index: int32(i), TokenId: int32(500 + 7*i), Group: "decode-0", Step: uint64(1000 + i - 1)}
		if i == 0 {
			tok.Group, tok.Step = "prefill-0", 10
			tok.UnixNanos = arrival + 4_600_000
		} else {
			tok.UnixNanos = arrival + 6_000_000 + int64(i)*3_000_000 - 200_000
		}
		t.Tokens = append(t.Tokens, tok)
	}
	return t
}

// fixtureRank is one rank's record: steps every 3 ms from base
// (coordinator clock), each with allreduces; prefill ranks sent KV.
func fixtureRank(node, group string, role tandemv1.Role, rank int32, offset, base int64, steps int) *tandemv1.RankTrace {
	r := &tandemv1.RankTrace{
		Node: node, Group: group, Role: role, Rank: rank,
		Addr:             fmt.Sprintf("%s:%d", node, 7100+rank),
		ClockOffsetNanos: offset, ClockErrorNanos: 40_000,
	}
	first := uint64(1000)
	if role == tandemv1.Role_ROLE_PREFILL {
		first = 10
	}
	for i := range steps {
		s := &tandemv1.StepTrace{
			Step: first + uint64(i), StartUnixNanos: base + int64(i)*3_000_000 - offset,
			ScheduleNanos: 30_000, ComputeNanos: 2_400_000, SampleNanos: 80_000, QueueNanos: 15_000,
			FreeBlocks: 480,
		}
		if role == tandemv1.Role_ROLE_PREFILL {
			s.PrefillTokens = 96
			s.ComputeNanos = 3_800_000
		} else {
			s.DecodeTokens = 1
		}
		for l := range 4 {
			s.Collectives = append(s.Collectives, &tandemv1.CollectiveTrace{
				Kind: "allreduce", Bytes: 24 << 10, DurationNanos: 60_000, OffsetNanos: 300_000 + int64(l)*500_000,
			})
		}
		r.Steps = append(r.Steps, s)
	}
	if role == tandemv1.Role_ROLE_PREFILL {
		for l := range 4 {
			r.KvTransfers = append(r.KvTransfers, &tandemv1.KVTransferTrace{
				Layer: int32(l), SourceRank: rank, DestRank: rank, Bytes: 1 << 20,
				StartUnixNanos: base + 4_300_000 + int64(l)*250_000 - offset, DurationNanos: 200_000,
			})
		}
	}
	return r
}
