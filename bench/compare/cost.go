package compare

import (
	"math"

	"github.com/tandemllm/tandem/model"
	"github.com/tandemllm/tandem/parallel"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
	"github.com/tandemllm/tandem/tracing"
)

// ActivationBytes is the size of one activation element the collectives
// move: the engine all-reduces float32 rows whatever the weights' dtype.
// KVBytes is the size of one KV cache element moved between groups
// (float32, as the cache holds it).
const (
	ActivationBytes = 4
	KVBytes         = 4
)

// Cost is one request's cost, from its server trace.
type Cost struct {
	RequestID    string
	OutputTokens int
	PromptTokens int
	// Milliseconds per output token, by tracing.Breakdown's parts.
	Queue, Compute, Allreduce, KVTransfer, Sampling, Other float64
	// AllreduceBytes is the allreduce payload of every rank of the
	// serving groups per token processed (prompt and decode rows, each
	// step's calls shared among its rows); AnalyticAllreduce is the same
	// from the model's shape: 2 allreduces per layer of hidden × 4 bytes
	// on each of a group's TP ranks (none at TP 1).
	AllreduceBytes, AnalyticAllreduce float64
	// KVBytes is the KV the prefill ranks sent per prompt token;
	// AnalyticKV is layers × head dim × 2 (K and V) × 4 bytes × the KV
	// heads the decode ranks need (each of the model's KV heads once,
	// more when the decode group replicates them). NaN when no KV moved
	// (unified serving).
	KVBytes, AnalyticKV float64
	// Complete is false when some rank of the request's groups could not
	// be asked for its records.
	Complete bool
}

// RequestCost computes a request's cost from its trace and the model's
// shape (nil: no analytic values).
func RequestCost(t *tandemv1.RequestTrace, m *model.Config) Cost {
	c := Cost{RequestID: t.GetRequestId(), OutputTokens: len(t.GetTokens()), PromptTokens: int(t.GetPromptTokens()),
		Complete: len(t.GetMissingRanks()) == 0, KVBytes: math.NaN(), AnalyticKV: math.NaN(),
		AnalyticAllreduce: math.NaN()}
	var parts [6]float64
	for _, tc := range tracing.Breakdown(t) {
		for i, d := range []float64{ms(tc.Queue), ms(tc.Compute), ms(tc.Allreduce), ms(tc.KVTransfer), ms(tc.Sampling), ms(tc.Other)} {
			parts[i] += d
		}
	}
	if n := float64(c.OutputTokens); n > 0 {
		c.Queue, c.Compute, c.Allreduce, c.KVTransfer, c.Sampling, c.Other =
			parts[0]/n, parts[1]/n, parts[2]/n, parts[3]/n, parts[4]/n, parts[5]/n
	}
	lanes := map[string][]*tandemv1.RankTrace{}
	for _, r := range t.GetRanks() {
		lanes[r.GetGroup()] = append(lanes[r.GetGroup()], r)
	}
	var bytes, rows, analytic float64
	for _, group := range lanes {
		b, r, tp := groupAllreduce(t.GetRequestId(), group)
		bytes, rows = bytes+b, rows+r
		if m != nil && tp > 1 {
			analytic += r * float64(tp) * 2 * float64(m.Layers) * float64(m.Hidden) * ActivationBytes
		}
	}
	if rows > 0 {
		c.AllreduceBytes = bytes / rows
		if m != nil {
			c.AnalyticAllreduce = analytic / rows
		}
	}
	if pg := t.GetPrefillGroup(); pg != "" && c.PromptTokens > 0 {
		var sent float64
		for _, r := range lanes[pg] {
			for _, kv := range r.GetKvTransfers() {
				if kv.GetLayer() >= 0 {
					sent += float64(kv.GetBytes())
				}
			}
		}
		c.KVBytes = sent / float64(c.PromptTokens)
		if m != nil {
			c.AnalyticKV = analyticKV(m, len(lanes[pg]), len(lanes[t.GetDecodeGroup()]))
		}
	}
	return c
}

// groupAllreduce sums the allreduce payload of every lane of one group
// over the steps that served the request, each step's share being the
// request's rows in it over the step's rows; it returns those bytes, the
// request's rows in the group's steps and the group's TP degree.
func groupAllreduce(id string, lanes []*tandemv1.RankTrace) (bytes, rows float64, tp int) {
	var lead *tandemv1.RankTrace
	for _, l := range lanes {
		tp = max(tp, int(l.GetRank())+1)
		if l.GetRank() == 0 {
			lead = l
		}
	}
	if lead == nil {
		return 0, 0, tp
	}
	share := map[uint64]float64{}
	for _, s := range lead.GetSteps() {
		mine := 0
		for _, q := range s.GetSeqs() {
			if q.GetRequestId() == id {
				mine += int(q.GetTokens())
			}
		}
		total := s.GetPrefillTokens() + s.GetDecodeTokens()
		if mine == 0 || total == 0 {
			continue
		}
		share[s.GetStep()] = float64(mine) / float64(total)
		rows += float64(mine)
	}
	for _, l := range lanes {
		for _, s := range l.GetSteps() {
			f, ok := share[s.GetStep()]
			if !ok {
				continue
			}
			for _, col := range s.GetCollectives() {
				if col.GetKind() == "allreduce" {
					bytes += f * float64(col.GetBytes())
				}
			}
		}
	}
	return bytes, rows, tp
}

// analyticKV is the KV bytes per prompt token a prefill group of TP p
// sends to a decode group of TP d.
func analyticKV(m *model.Config, p, d int) float64 {
	ts, err := parallel.KVTransfers(m.KVHeads, max(p, 1), max(d, 1))
	if err != nil {
		return math.NaN()
	}
	heads := 0
	for _, t := range ts {
		heads += t.Heads.To - t.Heads.From
	}
	return float64(m.Layers*heads*m.HeadDim*2) * KVBytes
}

func ms[T ~int64](d T) float64 { return float64(d) / 1e6 }
