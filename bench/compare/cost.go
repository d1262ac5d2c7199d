package compare

import (
	"math"
	"strings"

	"github.com/tandemllm/tandem/model"
	"github.com/tandemllm/tandem/parallel"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
	"github.com/tandemllm/tandem/tracing"
)

// ActivationBytes is the size of one activation element the collectives
// move: the engine all-reduces float32 rows whatever the weights' dtype.
const ActivationBytes = 4

// UnknownDType is a configuration's KV cache dtype when neither its
// flags nor its model tell it.
const UnknownDType = "unknown"

// KVElementBytes is the size of one KV cache element of dtype d, as
// the cache holds it and KV transfer moves it: 4 for fp32, 2 for bf16
// and fp16, NaN when unknown.
func KVElementBytes(d string) float64 {
	switch d {
	case "fp32":
		return 4
	case "bf16", "fp16":
		return 2
	}
	return math.NaN()
}

// cacheDType is the KV cache dtype of a local cluster started with the
// tandem up flags args serving m: --kv-cache-dtype's unless auto; for
// auto (the default) what the engine picks, bf16 on --device cuda and on
// the CPU the weights' dtype; unknown with --device auto, which picks
// when it starts, or weights of no stated dtype.
func cacheDType(args []string, m *model.Config) string {
	if d := kvDTypes[strings.ToLower(lastFlag(args, "--kv-cache-dtype", "auto"))]; d != "" && d != "auto" {
		return d
	}
	switch lastFlag(args, "--device", "cpu") {
	case "cuda":
		return "bf16"
	case "cpu":
		if m == nil {
			return UnknownDType
		}
		switch strings.ToLower(m.TorchDType) {
		case "bfloat16":
			return "bf16"
		case "float16":
			return "fp16"
		case "float32":
			return "fp32"
		}
	}
	return UnknownDType
}

// lastFlag is the value of the last --name in args (--name V or
// --name=V), def when there is none: the one pflag keeps.
func lastFlag(args []string, name, def string) string {
	v := def
	for i, a := range args {
		switch {
		case a == name && i+1 < len(args):
			v = args[i+1]
		case strings.HasPrefix(a, name+"="):
			v = a[len(name)+1:]
		}
	}
	return v
}

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
	// AnalyticKV is layers × head dim × 2 (K and V) × the cache dtype's
	// element bytes × the KV heads the decode ranks need (each of the
	// model's KV heads once, more when the decode group replicates
	// them). NaN when no KV moved (unified serving), and AnalyticKV when
	// the cache dtype is unknown.
	KVBytes, AnalyticKV float64
	// Complete is false when some rank of the request's groups could not
	// be asked for its records.
	Complete bool
}

// RequestCost computes a request's cost from its trace, the model's
// shape (nil: no analytic values) and the size of its KV cache's
// elements (KVElementBytes; NaN: no analytic KV).
func RequestCost(t *tandemv1.RequestTrace, m *model.Config, kvElem float64) Cost {
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
			c.AnalyticKV = analyticKV(m, len(lanes[pg]), len(lanes[t.GetDecodeGroup()]), kvElem)
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
// sends to a decode group of TP d, of elem bytes an element.
func analyticKV(m *model.Config, p, d int, elem float64) float64 {
	ts, err := parallel.KVTransfers(m.KVHeads, max(p, 1), max(d, 1))
	if err != nil {
		return math.NaN()
	}
	heads := 0
	for _, t := range ts {
		heads += t.Heads.To - t.Heads.From
	}
	return float64(m.Layers*heads*m.HeadDim*2) * elem
}

func ms[T ~int64](d T) float64 { return float64(d) / 1e6 }
