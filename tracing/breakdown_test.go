package tracing

import (
	"math"
	"testing"
	"time"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// µs is a duration of n microseconds.
func µs(n int64) time.Duration { return time.Duration(n) * time.Microsecond }

// parts is a token's expected breakdown, in µs.
type parts struct {
	itl, queue, compute, allreduce, kv, sampling, other int64
	arCount                                             int
	arBytes                                             int64
	errBound                                            int64
}

func (p parts) cost(index int, step uint64, group, node string) TokenCost {
	return TokenCost{
		Index: index, Step: step, Group: group, Node: node,
		ITL: µs(p.itl), Queue: µs(p.queue), Compute: µs(p.compute), Allreduce: µs(p.allreduce),
		KVTransfer: µs(p.kv), Sampling: µs(p.sampling), Other: µs(p.other),
		AllreduceCount: p.arCount, AllreduceBytes: p.arBytes, ErrorBound: µs(p.errBound),
	}
}

func TestBreakdown(t *testing.T) {
	const decodeAR = 4 * 4 << 10
	// Consistent disaggregated fixture: see disaggFixture for the times.
	disagg := []TokenCost{
		// Queue: arrival → step 10 (1000), the gap before step 11 (50),
		// scheduling (50+40).
		parts{itl: 8260, queue: 1140, compute: 6000, allreduce: 1000, sampling: 120, arCount: 8, arBytes: 4<<20 + 4<<18, errBound: 20}.cost(0, 11, "prefill-0", "gpu-a"),
		// The KV span of both decode ranks (8500..9200) and the wait for
		// the first decode step.
		parts{itl: 3270, queue: 470, compute: 1800, allreduce: 200, kv: 700, sampling: 100, arCount: 4, arBytes: decodeAR, errBound: 40}.cost(1, 100, "decode-0", "gpu-b"),
		parts{itl: 2200, queue: 100, compute: 1800, allreduce: 200, sampling: 100, arCount: 4, arBytes: decodeAR, errBound: 40}.cost(2, 101, "decode-0", "gpu-b"),
		parts{itl: 2200, queue: 100, compute: 1800, allreduce: 200, sampling: 100, arCount: 4, arBytes: decodeAR, errBound: 40}.cost(3, 102, "decode-0", "gpu-b"),
		// Step 103 ran without the request: its time is queueing.
		parts{itl: 4400, queue: 2300, compute: 1800, allreduce: 200, sampling: 100, arCount: 4, arBytes: decodeAR, errBound: 40}.cost(4, 104, "decode-0", "gpu-b"),
		parts{itl: 2200, queue: 100, compute: 1800, allreduce: 200, sampling: 100, arCount: 4, arBytes: decodeAR, errBound: 40}.cost(5, 105, "decode-0", "gpu-b"),
	}
	unified := []TokenCost{
		parts{itl: 3600, queue: 520, compute: 3000, sampling: 80, errBound: 2}.cost(0, 1, "unified-0", "cpu-host"),
		parts{itl: 980, queue: 20, compute: 900, sampling: 60, errBound: 2}.cost(1, 2, "unified-0", "cpu-host"),
		parts{itl: 980, queue: 20, compute: 900, sampling: 60, errBound: 2}.cost(2, 3, "unified-0", "cpu-host"),
		parts{itl: 980, queue: 20, compute: 900, sampling: 60, errBound: 2}.cost(3, 4, "unified-0", "cpu-host"),
	}
	delay := func(toks []*tandemv1.TokenTrace, i int, d int64) { toks[i].UnixNanos += d * us }

	tests := []struct {
		name   string
		trace  func() *tandemv1.RequestTrace
		mutate func(t *tandemv1.RequestTrace)
		want   []TokenCost
	}{
		{name: "disaggregated TP-2 to TP-2", trace: disaggFixture, want: disagg},
		{name: "unified TP-1", trace: unifiedFixture, want: unified},
		{
			// A token delivered late lengthens its ITL and shortens the next
			// one's by as much; the lanes did nothing different, so Other
			// takes both.
			name:   "transport delay on a decode token",
			trace:  disaggFixture,
			mutate: func(t *tandemv1.RequestTrace) { delay(t.Tokens, 3, 250) },
			want: with(disagg, func(c []TokenCost) {
				c[3].ITL, c[3].Other = c[3].ITL+µs(250), µs(250)
				c[4].ITL, c[4].Other = c[4].ITL-µs(250), -µs(250)
			}),
		},
		{
			// A late first token: TTFT and Other grow; the decode group starts
			// its window when the coordinator has the token, so the next
			// token's wait shrinks instead.
			name:   "transport delay on the first token",
			trace:  disaggFixture,
			mutate: func(t *tandemv1.RequestTrace) { delay(t.Tokens, 0, 200) },
			want: with(disagg, func(c []TokenCost) {
				c[0].ITL, c[0].Other = c[0].ITL+µs(200), µs(200)
				c[1].ITL, c[1].Queue = c[1].ITL-µs(200), c[1].Queue-µs(200)
			}),
		},
		{
			// The coordinator took so long that the KV moved before it had
			// the first token: only KV time inside the window counts.
			name:   "KV before the window",
			trace:  disaggFixture,
			mutate: func(t *tandemv1.RequestTrace) { delay(t.Tokens, 0, 900) },
			want: with(disagg, func(c []TokenCost) {
				c[0].ITL, c[0].Other = c[0].ITL+µs(900), µs(900)
				c[1].ITL, c[1].KVTransfer, c[1].Queue = c[1].ITL-µs(900), µs(40), c[1].Queue-µs(240)
			}),
		},
		{
			// Only the senders recorded the transfer: their span (8490..9190)
			// stands in.
			name:  "KV recorded by the prefill ranks only",
			trace: disaggFixture,
			mutate: func(t *tandemv1.RequestTrace) {
				for _, r := range t.Ranks {
					if r.Group == "decode-0" {
						r.KvTransfers = nil
					}
				}
			},
			want: disagg,
		},
		{
			// Each decode rank records one load of all layers (layer -1).
			name:  "whole loads",
			trace: wholeLoadFixture,
			want: with(disagg, func(c []TokenCost) {
				c[1].KVTransfer, c[1].Queue = µs(650), c[1].Queue+µs(50)
			}),
		},
		{
			name:   "decode rank 0 missing",
			trace:  disaggFixture,
			mutate: func(t *tandemv1.RequestTrace) { t.Ranks = append(t.Ranks[:3:3], t.Ranks[4:]...) },
			want: with(disagg, func(c []TokenCost) {
				for i := 1; i < len(c); i++ {
					c[i] = TokenCost{Index: i, Step: c[i].Step, Group: c[i].Group, ITL: c[i].ITL, Other: c[i].ITL}
				}
			}),
		},
		{
			// The offset is 600 µs short of the truth (within the 700 µs
			// bound): the first token's lane seems to end after the
			// coordinator had the token, and Other goes negative. Later
			// tokens compare times of one lane, where the offset cancels.
			name:  "rank clock ahead",
			trace: unifiedFixture,
			mutate: func(t *tandemv1.RequestTrace) {
				t.Ranks[0].ClockOffsetNanos += 600 * us
				t.Ranks[0].ClockErrorNanos = 700 * us
			},
			want: with(unified, func(c []TokenCost) {
				c[0].Queue, c[0].Other = c[0].Queue+µs(600), -µs(600)
				for i := range c {
					c[i].ErrorBound = µs(700)
				}
			}),
		},
		{
			// The other way, the first step seems to start 100 µs before the
			// arrival: Queue keeps only the scheduling, never negative, and
			// Other takes the rest.
			name:  "rank clock behind",
			trace: unifiedFixture,
			mutate: func(t *tandemv1.RequestTrace) {
				t.Ranks[0].ClockOffsetNanos -= 600 * us
				t.Ranks[0].ClockErrorNanos = 700 * us
			},
			want: with(unified, func(c []TokenCost) {
				c[0].Queue, c[0].Other = µs(20), µs(500)
				for i := range c {
					c[i].ErrorBound = µs(700)
				}
			}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := tt.trace()
			if tt.mutate != nil {
				tt.mutate(tr)
			}
			got := Breakdown(tr)
			if len(got) != len(tt.want) {
				t.Fatalf("Breakdown gave %d tokens, want %d", len(got), len(tt.want))
			}
			for i, c := range got {
				if c != tt.want[i] {
					t.Errorf("token %d:\n got %+v\nwant %+v", i, c, tt.want[i])
				}
				if sum := c.Queue + c.Compute + c.Allreduce + c.KVTransfer + c.Sampling + c.Other; sum != c.ITL {
					t.Errorf("token %d: parts add to %v, ITL is %v", i, sum, c.ITL)
				}
			}
		})
	}
}

// with returns a copy of costs changed by f.
func with(costs []TokenCost, f func(c []TokenCost)) []TokenCost {
	c := append([]TokenCost(nil), costs...)
	f(c)
	return c
}

// TestBreakdownConsistentFixtures checks, independently of the expected
// tables, that consistent fixtures leave nothing in Other and that the
// first token's queue covers the time from arrival to the first step.
func TestBreakdownConsistentFixtures(t *testing.T) {
	for name, f := range map[string]func() *tandemv1.RequestTrace{"disaggregated": disaggFixture, "unified": unifiedFixture} {
		t.Run(name, func(t *testing.T) {
			tr := f()
			costs := Breakdown(tr)
			for _, c := range costs {
				if c.Other.Abs() > time.Microsecond {
					t.Errorf("token %d: Other = %v in a consistent trace", c.Index, c.Other)
				}
			}
			lane := findRank(tr, tr.Tokens[0].Group, 0)
			firstStart := lane.Steps[0].StartUnixNanos + lane.ClockOffsetNanos
			if wait := time.Duration(firstStart - tr.ArrivalUnixNanos); costs[0].Queue < wait {
				t.Errorf("first token Queue %v < arrival to first step %v", costs[0].Queue, wait)
			}
		})
	}
}

func TestBreakdownEmpty(t *testing.T) {
	if got := Breakdown(&tandemv1.RequestTrace{RequestId: "x"}); len(got) != 0 {
		t.Fatalf("Breakdown of a trace without tokens = %v", got)
	}
	if got := Breakdown(nil); len(got) != 0 {
		t.Fatalf("Breakdown(nil) = %v", got)
	}
}

func TestSummarize(t *testing.T) {
	tests := []struct {
		name  string
		trace *tandemv1.RequestTrace
		want  Summary
	}{
		{
			name:  "disaggregated",
			trace: disaggFixture(),
			// TTFT 8.26 ms; last token at 22.53 ms: 14.27 ms for 5 tokens.
			want: Summary{PromptLen: 20, TokenizeMs: 0.3, TTFTMs: 8.26, SteadyMs: 14.27, Tokens: 6, MsPerToken: 2.854, TokensPerS: 1000 / 2.854},
		},
		{
			name:  "unified",
			trace: unifiedFixture(),
			want:  Summary{PromptLen: 12, TokenizeMs: 0.12, TTFTMs: 3.6, SteadyMs: 2.94, Tokens: 4, MsPerToken: 0.98, TokensPerS: 1000 / 0.98},
		},
		{
			name:  "one token",
			trace: &tandemv1.RequestTrace{ArrivalUnixNanos: 100, PromptTokens: 3, Tokens: []*tandemv1.TokenTrace{{UnixNanos: 100 + 2e6}}},
			want:  Summary{PromptLen: 3, TTFTMs: 2, Tokens: 1},
		},
		{
			name:  "no tokens",
			trace: &tandemv1.RequestTrace{PromptTokens: 3, TokenizeNanos: 5e5},
			want:  Summary{PromptLen: 3, TokenizeMs: 0.5},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Summarize(tt.trace)
			near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9*math.Max(1, math.Abs(b)) }
			if got.PromptLen != tt.want.PromptLen || got.Tokens != tt.want.Tokens || got.PeakRSSMB != tt.want.PeakRSSMB ||
				!near(got.TokenizeMs, tt.want.TokenizeMs) || !near(got.TTFTMs, tt.want.TTFTMs) || !near(got.SteadyMs, tt.want.SteadyMs) ||
				!near(got.MsPerToken, tt.want.MsPerToken) || !near(got.TokensPerS, tt.want.TokensPerS) {
				t.Fatalf("Summarize =\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}
