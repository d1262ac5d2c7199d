package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"

	"github.com/tandemllm/tandem/bench/stats"
)

// Metric names, as vllm bench serve's --percentile-metrics and
// --goodput use them.
const (
	TTFT = "ttft"
	TPOT = "tpot"
	ITL  = "itl"
	E2EL = "e2el"
)

// Metrics lists the latency metrics in report order.
var Metrics = []string{TTFT, TPOT, ITL, E2EL}

// Settings say how a run is summarized and labelled.
type Settings struct {
	// Percentiles are the percentiles reported of each latency metric
	// (--metric-percentiles).
	Percentiles []float64
	// PercentileMetrics are the metrics whose statistics are reported
	// (--percentile-metrics).
	PercentileMetrics []string
	// Goodput holds the SLOs in milliseconds by metric (ttft, tpot,
	// e2el); a request is good when it meets every one. Empty: no
	// goodput.
	Goodput map[string]float64
	// Descriptive fields copied into the result.
	Backend, Label, ModelID, TokenizerID, DatasetName string
	// Metadata are KEY=VALUE pairs (--metadata) written as top-level keys
	// of the result, after num_prompts, as vllm bench serve writes them;
	// none may be one of the result's own keys (ResultKeys).
	Metadata [][2]string
	// Detailed keeps the generated texts in the result.
	Detailed bool
}

// Result is one run's results: vllm bench serve's result JSON, key for
// key (MarshalJSON), plus request_ids and errors_by_code.
type Result struct {
	Date                                 string
	Backend, Label, ModelID, TokenizerID string
	Metadata                             [][2]string
	// Interrupted marks the partial result of a run stopped before its
	// end (its unsent requests failed with code NotSent).
	Interrupted                            bool
	DatasetName                            string
	NumPrompts                             int
	Load                                   Load
	Seed                                   uint64
	Duration                               float64 // seconds
	Completed, Failed                      int
	TotalInput, TotalOutput                int
	RequestThroughput                      float64
	RequestGoodput                         *float64 // nil without --goodput
	Goodput                                map[string]float64
	OutputThroughput, TotalTokenThroughput float64
	MaxOutputTokensPerS                    float64
	MaxConcurrentRequests                  int
	// Per request, in workload order; times in seconds as vLLM writes
	// them (0 and no ITLs for a failed request).
	InputLens, OutputLens []int
	TTFTs, Latencies      []float64
	ITLs                  [][]float64
	StartTimes            []float64 // from the run's start
	QueueTimes            []float64
	Errors                []string
	ErrorCodes            []string
	RequestIDs            []string
	GeneratedTexts        []string // only with Settings.Detailed
	ErrorsByCode          map[string]int
	// Percentiles asked, and each metric's statistics in milliseconds.
	Percentiles []float64
	Stats       map[string]stats.Summary
	// Samples holds the values each metric's statistics came from, in
	// seconds (TPOT of requests with more than one output token; ITL
	// pooled over requests).
	Samples map[string][]float64
}

// Summarize computes a run's results as vllm bench serve does: TPOT is
// (latency − TTFT)/(output tokens − 1) over requests with more than one
// output token (taken as 0 for goodput otherwise); ITLs are pooled over
// requests; throughputs divide by the run's duration.
func Summarize(run *Run, s Settings) *Result {
	n := len(run.Outputs)
	r := &Result{
		Date: run.Began.Format("20060102-150405"), Backend: s.Backend, Label: s.Label, ModelID: s.ModelID, Metadata: s.Metadata,
		TokenizerID: s.TokenizerID, DatasetName: s.DatasetName, NumPrompts: n, Load: run.Load, Seed: run.Seed,
		Duration: run.Duration.Seconds(), Goodput: s.Goodput, Percentiles: s.Percentiles,
		InputLens: make([]int, n), OutputLens: make([]int, n), TTFTs: make([]float64, n), Latencies: make([]float64, n),
		ITLs: make([][]float64, n), StartTimes: make([]float64, n), QueueTimes: make([]float64, n),
		Errors: make([]string, n), ErrorCodes: make([]string, n), RequestIDs: make([]string, n),
		ErrorsByCode: map[string]int{}, Stats: map[string]stats.Summary{}, Samples: map[string][]float64{},
	}
	var ttfts, tpots, itls, e2els, goodTPOT []float64
	for i, o := range run.Outputs {
		r.InputLens[i] = o.PromptLen
		if r.InputLens[i] == 0 {
			r.InputLens[i] = run.Workload[i].PromptLen
		}
		r.ITLs[i] = []float64{}
		r.RequestIDs[i] = o.RequestID
		r.QueueTimes[i] = run.QueueTimes[i].Seconds()
		if !o.Start.IsZero() {
			r.StartTimes[i] = o.Start.Sub(run.Began).Seconds()
		}
		if s.Detailed {
			r.GeneratedTexts = append(r.GeneratedTexts, o.Text)
		}
		if !o.Success {
			r.Failed++
			r.Errors[i], r.ErrorCodes[i] = o.Error, o.Code
			r.ErrorsByCode[o.Code]++
			continue
		}
		r.Completed++
		r.TotalInput += r.InputLens[i]
		r.OutputLens[i] = o.OutputTokens
		r.TotalOutput += o.OutputTokens
		ttft, lat := o.TTFT.Seconds(), o.Latency.Seconds()
		r.TTFTs[i], r.Latencies[i] = ttft, lat
		for _, d := range o.ITL {
			r.ITLs[i] = append(r.ITLs[i], d.Seconds())
		}
		itls = append(itls, r.ITLs[i]...)
		ttfts, e2els = append(ttfts, ttft), append(e2els, lat)
		tpot := 0.0
		if o.OutputTokens > 1 {
			tpot = (lat - ttft) / float64(o.OutputTokens-1)
			tpots = append(tpots, tpot)
		}
		goodTPOT = append(goodTPOT, tpot)
	}
	dur := run.Duration.Seconds()
	r.RequestThroughput = float64(r.Completed) / dur
	r.OutputThroughput = float64(r.TotalOutput) / dur
	r.TotalTokenThroughput = float64(r.TotalInput+r.TotalOutput) / dur
	if len(s.Goodput) > 0 {
		g := float64(good(s.Goodput, ttfts, goodTPOT, e2els)) / dur
		r.RequestGoodput = &g
	}
	r.MaxOutputTokensPerS, r.MaxConcurrentRequests = peaks(run)
	r.Samples = map[string][]float64{TTFT: ttfts, TPOT: tpots, ITL: itls, E2EL: e2els}
	for _, m := range s.PercentileMetrics {
		ms := make([]float64, len(r.Samples[m]))
		for i, v := range r.Samples[m] {
			ms[i] = v * 1000
		}
		if len(ms) == 0 {
			// No sample (every request failed, or none had two tokens):
			// statistics of 0, as vllm bench serve's np.mean(values or 0)
			// gives, not NaN, which JSON lacks and readers choke on.
			ms = []float64{0}
		}
		r.Stats[m] = stats.Summarize(ms, s.Percentiles)
	}
	return r
}

// good counts the requests meeting every SLO (milliseconds); the three
// slices hold one value per completed request, in seconds.
func good(slo map[string]float64, ttfts, tpots, e2els []float64) int {
	n := 0
	by := map[string][]float64{TTFT: ttfts, TPOT: tpots, E2EL: e2els}
	for i := range ttfts {
		ok := true
		for m, limit := range slo {
			ok = ok && by[m][i] <= limit/1000
		}
		if ok {
			n++
		}
	}
	return n
}

// peaks is the most output tokens received in one second of the run and
// the most requests in flight at once (half-open intervals), as vllm
// bench serve computes them.
func peaks(run *Run) (float64, int) {
	var first time.Time
	type event struct {
		at    time.Time
		delta int
	}
	var events []event
	for _, o := range run.Outputs {
		if !o.Success {
			continue
		}
		if first.IsZero() || o.Start.Before(first) {
			first = o.Start
		}
		events = append(events, event{o.Start, 1}, event{o.Start.Add(o.Latency), -1})
	}
	if len(events) == 0 {
		return 0, 0
	}
	buckets := map[int]int{}
	for _, o := range run.Outputs {
		if !o.Success {
			continue
		}
		at := o.Start.Add(o.TTFT)
		buckets[int(at.Sub(first).Seconds())]++
		for _, d := range o.ITL {
			at = at.Add(d)
			buckets[int(at.Sub(first).Seconds())]++
		}
	}
	most := 0
	for _, c := range buckets {
		most = max(most, c)
	}
	sort.Slice(events, func(i, j int) bool {
		if !events[i].at.Equal(events[j].at) {
			return events[i].at.Before(events[j].at)
		}
		return events[i].delta < events[j].delta
	})
	cur, peak := 0, 0
	for _, e := range events {
		cur += e.delta
		peak = max(peak, cur)
	}
	return float64(most), peak
}

// PercentileKey is vllm bench serve's key word for a percentile: "99"
// for 99, "99.9" for 99.9.
func PercentileKey(p float64) string {
	if p == math.Trunc(p) {
		return strconv.Itoa(int(p))
	}
	return strconv.FormatFloat(p, 'g', -1, 64)
}

// field is one key of an ordered JSON object.
type field struct {
	key string
	val any
}

// MarshalJSON writes vllm bench serve's keys in its order (the
// metadata after num_prompts), then the statistics (mean_ttft_ms,
// median_ttft_ms, std_ttft_ms, p99_ttft_ms, …) and Tandem's additions.
func (r *Result) MarshalJSON() ([]byte, error) {
	return marshalObject(r.fields())
}

// ResultKeys are the keys a result summarized with s has, besides its
// metadata.
func ResultKeys(s Settings) []string {
	r := &Result{Percentiles: s.Percentiles, Stats: map[string]stats.Summary{}, GeneratedTexts: []string{}}
	for _, m := range s.PercentileMetrics {
		r.Stats[m] = stats.Summary{Percentiles: make([]float64, len(s.Percentiles))}
	}
	var keys []string
	for _, f := range r.fields() {
		keys = append(keys, f.key)
	}
	return keys
}

// fields are the result's keys and values in order.
func (r *Result) fields() []field {
	// Rates and burstiness are Python floats in vLLM's results (4.0, not
	// 4), so readers that format or type-check them see what they expect.
	var rate any = json.Number(PyFloat(r.Load.RequestRate))
	if math.IsInf(r.Load.RequestRate, 1) {
		rate = "inf"
	}
	var burstiness any = json.Number(PyFloat(r.Load.Burstiness))
	if math.IsInf(r.Load.Burstiness, 0) || math.IsNaN(r.Load.Burstiness) {
		burstiness = nil
	}
	var conc any
	if r.Load.MaxConcurrency > 0 {
		conc = r.Load.MaxConcurrency
	}
	fs := []field{
		{"date", r.Date}, {"endpoint_type", r.Backend}, {"backend", r.Backend}, {"label", nilIfEmpty(r.Label)},
		{"model_id", r.ModelID}, {"tokenizer_id", r.TokenizerID}, {"num_prompts", r.NumPrompts},
	}
	for _, kv := range r.Metadata {
		fs = append(fs, field{kv[0], kv[1]})
	}
	fs = append(fs, []field{
		{"request_rate", rate}, {"burstiness", burstiness}, {"max_concurrency", conc},
		{"duration", r.Duration}, {"completed", r.Completed}, {"failed", r.Failed},
		{"total_input_tokens", r.TotalInput}, {"total_output_tokens", r.TotalOutput},
		{"request_throughput", r.RequestThroughput}, {"request_goodput", r.RequestGoodput},
		{"output_throughput", r.OutputThroughput}, {"total_token_throughput", r.TotalTokenThroughput},
		{"input_lens", r.InputLens}, {"output_lens", r.OutputLens}, {"ttfts", r.TTFTs}, {"itls", r.ITLs},
		{"latencies", r.Latencies}, {"start_times", r.StartTimes}, {"queue_times", r.QueueTimes},
	}...)
	if r.GeneratedTexts != nil {
		fs = append(fs, field{"generated_texts", r.GeneratedTexts})
	}
	// rtfx (the inverse real-time factor of speech benchmarks) is 0 for
	// text, as vllm bench serve writes it.
	fs = append(fs, field{"errors", r.Errors},
		field{"max_output_tokens_per_s", r.MaxOutputTokensPerS}, field{"max_concurrent_requests", r.MaxConcurrentRequests},
		field{"rtfx", 0.0})
	for _, m := range Metrics {
		s, ok := r.Stats[m]
		if !ok {
			continue
		}
		fs = append(fs, field{"mean_" + m + "_ms", s.Mean}, field{"median_" + m + "_ms", s.Median}, field{"std_" + m + "_ms", s.Std})
		for i, p := range r.Percentiles {
			fs = append(fs, field{"p" + PercentileKey(p) + "_" + m + "_ms", s.Percentiles[i]})
		}
	}
	fs = append(fs, field{"request_ids", r.RequestIDs}, field{"error_codes", r.ErrorCodes},
		field{"errors_by_code", r.ErrorsByCode}, field{"dataset_name", r.DatasetName}, field{"seed", r.Seed},
		field{"goodput_slo_ms", r.Goodput}, field{"interrupted", r.Interrupted})
	return fs
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// marshalObject writes fields as one JSON object, in order. NaN and
// infinities (which JSON lacks) are written as null.
func marshalObject(fs []field) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range fs {
		if i > 0 {
			b.WriteString(", ")
		}
		k, _ := json.Marshal(f.key)
		b.Write(k)
		b.WriteString(": ")
		if v, ok := f.val.(float64); ok && (math.IsNaN(v) || math.IsInf(v, 0)) {
			f.val = nil
		}
		v, err := json.Marshal(f.val)
		if err != nil {
			return nil, fmt.Errorf("bench: result key %s: %w", f.key, err)
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// FileName is vllm bench serve's default result file name:
// LABEL-RATEqps[-concurrencyN]-MODEL-DATE.json, with the backend as the
// label when none is given and the model's last path element.
func (r *Result) FileName() string {
	label := r.Label
	if label == "" {
		label = r.Backend
	}
	model := r.ModelID
	if i := bytes.LastIndexByte([]byte(model), '/'); i >= 0 {
		model = model[i+1:]
	}
	return fmt.Sprintf("%s-%s-%s-%s.json", label, r.Load, model, r.Date)
}
