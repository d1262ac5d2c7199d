package tracing

import (
	"time"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// TokenCost is where the time before one output token went: its ITL split
// into the parts the rank-0 lane of its group recorded. See the package
// documentation for the rules.
type TokenCost struct {
	// Index is the token's position among the output tokens.
	Index int
	// Step is the step that sampled it, on Group's rank Rank (always 0),
	// which runs on Node.
	Step        uint64
	Group, Node string
	Rank        int
	// ITL is the coordinator's receive time of this token minus the
	// previous token's; for the first token, minus the arrival (TTFT).
	ITL time.Duration
	// The parts of ITL; Other is what the lane's window does not cover and
	// may be negative (see the package documentation).
	Queue, Compute, Allreduce, KVTransfer, Sampling, Other time.Duration
	// AllreduceCount and AllreduceBytes are the allreduce calls in
	// Allreduce, and their payload on the lane's rank.
	AllreduceCount int
	AllreduceBytes int64
	// ErrorBound is the clock error of the ranks involved: the parts are
	// known to about ± this much.
	ErrorBound time.Duration
}

// Breakdown attributes each output token's ITL to queueing, compute,
// allreduce, KV transfer and sampling, from what the rank-0 lane of the
// token's group recorded. Tokens whose lane or step is missing from the
// trace get their whole ITL as Other.
func Breakdown(t *tandemv1.RequestTrace) []TokenCost {
	toks := t.GetTokens()
	out := make([]TokenCost, len(toks))
	prev := t.GetArrivalUnixNanos()
	for i, tok := range toks {
		c := &out[i]
		*c = TokenCost{
			Index: int(tok.GetIndex()),
			Step:  tok.GetStep(),
			Group: tok.GetGroup(),
			ITL:   time.Duration(tok.GetUnixNanos() - prev),
		}
		if lane := findRank(t, tok.GetGroup(), 0); lane != nil {
			c.Node = lane.GetNode()
			c.ErrorBound = time.Duration(lane.GetClockErrorNanos())
			attribute(c, t, lane, i)
		}
		c.Other = c.ITL - (c.Queue + c.Compute + c.Allreduce + c.KVTransfer + c.Sampling)
		prev = tok.GetUnixNanos()
	}
	return out
}

// attribute fills c's parts for token i, produced on lane.
func attribute(c *TokenCost, t *tandemv1.RequestTrace, lane *tandemv1.RankTrace, i int) {
	toks := t.GetTokens()
	off := lane.GetClockOffsetNanos()
	last := findStep(lane, c.Step)
	if last == nil {
		return
	}
	// The window is the lane's time between the previous token and this
	// one, in coordinator time. After a token of the same lane it starts
	// where that token's step ended, so the delivery to the coordinator
	// stays out of it (and the lane's clock offset cancels). Otherwise it
	// starts when the coordinator had the previous token (the decode group
	// cannot start before), or at the arrival for the first token.
	var from uint64 // the window's steps have ids in (from, c.Step]
	winStart := t.GetArrivalUnixNanos()
	sameLane := i > 0 && toks[i-1].GetGroup() == c.Group
	if i > 0 {
		winStart = toks[i-1].GetUnixNanos()
	}
	if sameLane {
		from = toks[i-1].GetStep()
		if p := findStep(lane, from); p != nil {
			winStart = stepEnd(p) + off
		}
	}
	winEnd := stepEnd(last) + off

	var work int64 // the steps' own time: schedule, compute, sampling
	for _, s := range lane.GetSteps() {
		if id := s.GetStep(); id <= from || id > c.Step || !servedBy(s, t.GetRequestId()) {
			continue
		}
		var ar int64
		for _, col := range s.GetCollectives() {
			if col.GetKind() == "allreduce" {
				ar += col.GetDurationNanos()
				c.AllreduceCount++
				c.AllreduceBytes += col.GetBytes()
			}
		}
		c.Queue += time.Duration(s.GetScheduleNanos())
		c.Compute += time.Duration(s.GetComputeNanos() - ar)
		c.Allreduce += time.Duration(ar)
		c.Sampling += time.Duration(s.GetSampleNanos())
		work += s.GetScheduleNanos() + s.GetComputeNanos() + s.GetSampleNanos()
	}

	// The first token of a group that continues another's request waited
	// for the KV: the span of the group's KV loads within the window (of
	// the sending group's records when the receivers have none).
	var kv int64
	if i > 0 && !sameLane {
		lo, hi, bound, ok := kvSpan(t, c.Group)
		if !ok { // the receivers recorded nothing: the senders' view
			lo, hi, bound, ok = kvSpan(t, toks[i-1].GetGroup())
		}
		if ok {
			lo, hi = max(lo, winStart), min(hi, winEnd)
			kv = max(0, hi-lo)
			c.KVTransfer = time.Duration(kv)
			c.ErrorBound = max(c.ErrorBound, bound)
		}
	}
	// The rest of the window is waiting: the steps' queue time, gaps where
	// the lane ran steps without this request, and (first tokens) the
	// routing, tokenizing and RPCs before the first step. Clock error can
	// make it negative; Other takes that.
	c.Queue += time.Duration(max(0, winEnd-winStart-work-kv))
}

// servedBy reports whether s had a row of the request; a step without a
// recorded composition is taken to have had one, since it was recorded
// for the request.
func servedBy(s *tandemv1.StepTrace, requestID string) bool {
	return len(s.GetSeqs()) == 0 || holds(s, requestID)
}

// kvSpan is the coordinator-time span of the KV transfers the ranks of
// group recorded, and the largest clock error among those ranks.
func kvSpan(t *tandemv1.RequestTrace, group string) (lo, hi int64, bound time.Duration, ok bool) {
	for _, r := range t.GetRanks() {
		if r.GetGroup() != group || len(r.GetKvTransfers()) == 0 {
			continue
		}
		off := r.GetClockOffsetNanos()
		for _, kv := range r.GetKvTransfers() {
			s := kv.GetStartUnixNanos() + off
			e := s + kv.GetDurationNanos()
			if !ok || s < lo {
				lo = s
			}
			if !ok || e > hi {
				hi = e
			}
			ok = true
		}
		bound = max(bound, time.Duration(r.GetClockErrorNanos()))
	}
	return lo, hi, bound, ok
}

// findRank returns the trace of group's rank, or nil.
func findRank(t *tandemv1.RequestTrace, group string, rank int32) *tandemv1.RankTrace {
	for _, r := range t.GetRanks() {
		if r.GetGroup() == group && r.GetRank() == rank {
			return r
		}
	}
	return nil
}

// findStep returns the lane's record of step id, or nil.
func findStep(lane *tandemv1.RankTrace, id uint64) *tandemv1.StepTrace {
	for _, s := range lane.GetSteps() {
		if s.GetStep() == id {
			return s
		}
	}
	return nil
}

// stepEnd is when a step ended, in its rank's clock. Queue time comes
// before the start, so it is not part of the step.
func stepEnd(s *tandemv1.StepTrace) int64 {
	return s.GetStartUnixNanos() + stepNanos(s)
}

// stepNanos is a step's own duration.
func stepNanos(s *tandemv1.StepTrace) int64 {
	return s.GetScheduleNanos() + s.GetComputeNanos() + s.GetSampleNanos()
}

// Summary is a request's headline figures, the summary row of profiling
// write-ups (and of `tandem generate`).
type Summary struct {
	PromptLen  int
	TokenizeMs float64
	TTFTMs     float64
	// SteadyMs is the time from the first token to the last.
	SteadyMs float64
	Tokens   int
	// MsPerToken is SteadyMs over the tokens after the first; TokensPerS
	// its inverse.
	MsPerToken, TokensPerS float64
	// PeakRSSMB is the largest peak resident set of the ranks that served
	// the request (0 when none reported it).
	PeakRSSMB float64
}

// Summarize computes a request's summary row from its trace.
func Summarize(t *tandemv1.RequestTrace) Summary {
	toks := t.GetTokens()
	s := Summary{
		PromptLen:  int(t.GetPromptTokens()),
		TokenizeMs: ms(t.GetTokenizeNanos()),
		Tokens:     len(toks),
	}
	for _, r := range t.GetRanks() {
		s.PeakRSSMB = max(s.PeakRSSMB, float64(r.GetPeakRssBytes())/(1<<20))
	}
	if len(toks) == 0 {
		return s
	}
	first, last := toks[0].GetUnixNanos(), toks[len(toks)-1].GetUnixNanos()
	s.TTFTMs = ms(first - t.GetArrivalUnixNanos())
	s.SteadyMs = ms(last - first)
	if s.Tokens > 1 {
		s.MsPerToken = s.SteadyMs / float64(s.Tokens-1)
		if s.MsPerToken > 0 {
			s.TokensPerS = 1000 / s.MsPerToken
		}
	}
	return s
}

// ms converts nanoseconds to milliseconds.
func ms[T ~int64](ns T) float64 { return float64(ns) / 1e6 }
