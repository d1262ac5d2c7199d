package compare

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tandemllm/tandem/bench"
	"github.com/tandemllm/tandem/bench/plot"
	"github.com/tandemllm/tandem/bench/serve"
	"github.com/tandemllm/tandem/bench/stats"
)

// Report is a comparison's results, written as one JSON.
type Report struct {
	Date     string         `json:"date"`
	Rounds   int            `json:"rounds"`
	Workload serve.Workload `json:"workload"`
	Link     string         `json:"link,omitempty"`
	// Partial says the comparison stopped early (StoppedBy says why: an
	// interrupt or an error) after BlocksRun blocks; its figures are
	// those of the blocks that finished, and its differences use only
	// the CompleteRounds rounds every configuration finished.
	Partial        bool            `json:"partial,omitempty"`
	StoppedBy      string          `json:"stopped_by,omitempty"`
	BlocksRun      string          `json:"blocks_run,omitempty"`
	CompleteRounds int             `json:"complete_rounds"`
	Configurations []Configuration `json:"configurations"`
	// Baseline is the configuration the others are compared with, or
	// "" when every pair is (--pairwise).
	Baseline string `json:"baseline,omitempty"`
	// ConfidenceLevel is the family-wise level (--confidence, default
	// 95%) shared by the differences of one configuration pair at one
	// load point (Bonferroni); each interval's own is in its ci_level.
	ConfidenceLevel float64  `json:"family_confidence_level"`
	Points          []*Point `json:"points"`
}

// Point is one load point of the comparison.
type Point struct {
	Load           string `json:"load"`
	RequestRate    any    `json:"request_rate"`
	MaxConcurrency int    `json:"max_concurrency,omitempty"`
	// Warmups is the number of warm-up requests each configuration got
	// at this point before its first block and after each start of its
	// local cluster.
	Warmups     int            `json:"num_warmups"`
	Configs     []*ConfigPoint `json:"configurations"`
	Differences []Difference   `json:"differences"`
}

// ConfigPoint is one configuration at one load point, rounds pooled.
type ConfigPoint struct {
	Name string `json:"name"`
	// Result is the bench result over every round's requests, with vLLM's
	// keys (per-request arrays only in Detailed reports).
	Result json.RawMessage `json:"result"`
	// RoundThroughputs is each round's output tokens per second.
	RoundThroughputs []float64 `json:"round_output_throughputs"`
	// Cost is the mean per-token cost over the traced requests.
	Cost   CostSummary `json:"cost"`
	res    *bench.Result
	traced bool // its requests were joined to server traces
}

// CostSummary is the mean of the requests' costs.
type CostSummary struct {
	Traced     int `json:"traced_requests"`
	Missing    int `json:"missing_traces"`
	Incomplete int `json:"incomplete_traces"`
	// Milliseconds per output token.
	Queue      Num `json:"queue_ms_per_token"`
	Compute    Num `json:"compute_ms_per_token"`
	Allreduce  Num `json:"allreduce_ms_per_token"`
	KVTransfer Num `json:"kv_transfer_ms_per_token"`
	Sampling   Num `json:"sampling_ms_per_token"`
	Other      Num `json:"other_ms_per_token"`
	// Bytes, measured and analytic.
	AllreduceBytes    Num `json:"allreduce_bytes_per_token"`
	AnalyticAllreduce Num `json:"analytic_allreduce_bytes_per_token"`
	KVBytes           Num `json:"kv_bytes_per_prompt_token"`
	AnalyticKV        Num `json:"analytic_kv_bytes_per_prompt_token"`
}

// Difference is one metric of one configuration minus another's (the
// baseline's, or the pair's first with --pairwise), with its interval.
type Difference struct {
	Config   string `json:"configuration"`
	Baseline string `json:"baseline"`
	Metric   string `json:"metric"`
	Base     Num    `json:"baseline_value"`
	Value    Num    `json:"value"`
	Diff     Num    `json:"difference"`
	Lo       Num    `json:"ci_low"`
	Hi       Num    `json:"ci_high"`
	Level    Num    `json:"ci_level"`
	// Method says how the interval was made: "rounds+bootstrap" (the
	// union of the between-round t interval and the request bootstrap,
	// stats.Paired), "bootstrap" (a count, from requests alone) or ""
	// (none: too few rounds).
	Method  string `json:"ci_method"`
	Verdict string `json:"verdict"`
	// Samples is the fewer of the two sides' values the difference
	// rests on (requests; rounds for a run-level figure).
	Samples int `json:"samples"`
}

// Num is a figure that JSON writes as null when it is not a number
// (a metric a configuration does not have).
type Num float64

// MarshalJSON writes NaN and infinities as null.
func (n Num) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(n)) || math.IsInf(float64(n), 0) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(n))
}

// NotDistinguishable is the verdict of an interval holding zero;
// NotEnoughSamples that of a percentile with fewer samples a side than
// stats.PercentileSamples asks, whatever its interval.
const (
	NotDistinguishable = "not distinguishable"
	NotEnoughSamples   = "not enough samples"
)

// DefaultConfidence is Config.Confidence's default: one pair's metrics at
// one load point all hold their true differences 95% of the time.
const DefaultConfidence = 0.95

// metric is one compared quantity: per-request values of a sample (or,
// for run-level figures, one value per round) and the statistic over
// them. A count is a figure the machine's load does not change (bytes
// per token, fixed by the model and TP degree), so requests alone give
// its interval; every other figure is a timing.
type metric struct {
	key, title string
	values     func(*Sample) []float64
	stat       func([]float64) float64
	count      bool
	// pct is the percentile stat computes (0: not a percentile).
	pct float64
}

func p99(xs []float64) float64 { return stats.Percentile(xs, 99) }

func resultMs(m string) func(*Sample) []float64 {
	return func(s *Sample) []float64 {
		out := make([]float64, len(s.Result.Samples[m]))
		for i, v := range s.Result.Samples[m] {
			out[i] = 1000 * v
		}
		return out
	}
}

func costOf(f func(Cost) float64) func(*Sample) []float64 {
	return func(s *Sample) []float64 {
		var out []float64
		for _, c := range s.Costs {
			if v := f(c); !math.IsNaN(v) {
				out = append(out, v)
			}
		}
		return out
	}
}

var metrics = []metric{
	{key: "mean_ttft_ms", title: "mean TTFT (ms)", values: resultMs(bench.TTFT), stat: stats.Mean},
	{key: "p99_ttft_ms", title: "P99 TTFT (ms)", values: resultMs(bench.TTFT), stat: p99, pct: 99},
	{key: "mean_tpot_ms", title: "mean TPOT (ms)", values: resultMs(bench.TPOT), stat: stats.Mean},
	{key: "p99_tpot_ms", title: "P99 TPOT (ms)", values: resultMs(bench.TPOT), stat: p99, pct: 99},
	{key: "mean_itl_ms", title: "mean ITL (ms)", values: resultMs(bench.ITL), stat: stats.Mean},
	{key: "mean_e2el_ms", title: "mean E2E (ms)", values: resultMs(bench.E2EL), stat: stats.Mean},
	{key: "p99_e2el_ms", title: "P99 E2E (ms)", values: resultMs(bench.E2EL), stat: p99, pct: 99},
	{key: "output_throughput", title: "output tok/s",
		values: func(s *Sample) []float64 { return []float64{s.Result.OutputThroughput} }, stat: stats.Mean},
	{key: "queue_ms_per_token", title: "queue ms/tok", values: costOf(func(c Cost) float64 { return c.Queue }), stat: stats.Mean},
	{key: "compute_ms_per_token", title: "compute ms/tok", values: costOf(func(c Cost) float64 { return c.Compute }), stat: stats.Mean},
	{key: "allreduce_ms_per_token", title: "allreduce ms/tok", values: costOf(func(c Cost) float64 { return c.Allreduce }), stat: stats.Mean},
	{key: "kv_transfer_ms_per_token", title: "KV transfer ms/tok", values: costOf(func(c Cost) float64 { return c.KVTransfer }), stat: stats.Mean},
	{key: "sampling_ms_per_token", title: "sampling ms/tok", values: costOf(func(c Cost) float64 { return c.Sampling }), stat: stats.Mean},
	{key: "other_ms_per_token", title: "other ms/tok", values: costOf(func(c Cost) float64 { return c.Other }), stat: stats.Mean},
	{key: "allreduce_bytes_per_token", title: "allreduce B/tok", values: costOf(func(c Cost) float64 { return c.AllreduceBytes }), stat: stats.Mean, count: true},
	{key: "kv_bytes_per_prompt_token", title: "KV B/prompt tok", values: costOf(func(c Cost) float64 { return c.KVBytes }), stat: stats.Mean, count: true},
}

// rounds gathers a metric's values by round.
func (m metric) rounds(samples []*Sample) stats.Rounds {
	var r stats.Rounds
	for _, s := range samples {
		r = append(r, m.values(s))
	}
	return r
}

// NewReport pools each configuration's rounds and computes the
// differences: from the baseline (--baseline, default the first
// configuration), or between every pair with --pairwise, over the first
// complete rounds (those every configuration finished).
func NewReport(c Config, plan *serve.Plan, sides []*Side, complete int) *Report {
	rep := &Report{Date: time.Now().Format("20060102-150405"), Rounds: c.Rounds, Workload: plan.Workload, Link: c.Link,
		ConfidenceLevel: c.confidence(), CompleteRounds: complete}
	for _, s := range sides {
		rep.Configurations = append(rep.Configurations, s.Configuration)
	}
	pairs := comparisons(c, sides)
	if !c.Pairwise {
		rep.Baseline = pairs[0][0].Name
	}
	for i, pt := range plan.Points {
		p := &Point{Load: pt.String(), RequestRate: rateJSON(pt.RequestRate), MaxConcurrency: pt.MaxConcurrency, Warmups: AutoWarmups(pt)}
		if c.WarmupsGiven {
			p.Warmups = c.NumWarmups
		}
		for _, s := range sides {
			if len(s.samples(i)) > 0 {
				p.Configs = append(p.Configs, configPoint(s, i))
			}
		}
		for _, pr := range pairs {
			p.Differences = append(p.Differences, differences(pr[0], pr[1], i, complete, rep.ConfidenceLevel)...)
		}
		rep.Points = append(rep.Points, p)
	}
	return rep
}

// comparisons are the pairs (A, B) whose differences B − A the report
// gives.
func comparisons(c Config, sides []*Side) [][2]*Side {
	var out [][2]*Side
	if c.Pairwise {
		for i := range sides {
			for _, b := range sides[i+1:] {
				out = append(out, [2]*Side{sides[i], b})
			}
		}
		return out
	}
	base := sides[0]
	for _, s := range sides {
		if s.Name == c.Baseline {
			base = s
		}
	}
	for _, s := range sides {
		if s != base {
			out = append(out, [2]*Side{base, s})
		}
	}
	return out
}

// samples are s's rounds at point i (none when it never ran there).
func (s *Side) samples(i int) []*Sample {
	if i >= len(s.Samples) {
		return nil
	}
	return s.Samples[i]
}

func rateJSON(r float64) any {
	if math.IsInf(r, 1) {
		return "inf"
	}
	return r
}

// configPoint pools one side's rounds at point i.
func configPoint(s *Side, i int) *ConfigPoint {
	var runs []*bench.Run
	cp := &ConfigPoint{Name: s.Name}
	var all []Cost
	for _, smp := range s.samples(i) {
		runs = append(runs, smp.Run)
		cp.RoundThroughputs = append(cp.RoundThroughputs, smp.Result.OutputThroughput)
		all = append(all, smp.Costs...)
		cp.Cost.Missing += smp.Missing
	}
	cp.res = bench.Summarize(bench.Merge(runs...), s.settings)
	cp.Cost = summarizeCosts(all, cp.Cost.Missing)
	cp.traced = s.Traced()
	return cp
}

func summarizeCosts(cs []Cost, missing int) CostSummary {
	s := CostSummary{Traced: len(cs), Missing: missing}
	mean := func(f func(Cost) float64) Num {
		var vs []float64
		for _, c := range cs {
			if v := f(c); !math.IsNaN(v) {
				vs = append(vs, v)
			}
		}
		if len(vs) == 0 {
			return Num(math.NaN())
		}
		return Num(stats.Mean(vs))
	}
	for _, c := range cs {
		if !c.Complete {
			s.Incomplete++
		}
	}
	s.Queue, s.Compute = mean(func(c Cost) float64 { return c.Queue }), mean(func(c Cost) float64 { return c.Compute })
	s.Allreduce, s.KVTransfer = mean(func(c Cost) float64 { return c.Allreduce }), mean(func(c Cost) float64 { return c.KVTransfer })
	s.Sampling, s.Other = mean(func(c Cost) float64 { return c.Sampling }), mean(func(c Cost) float64 { return c.Other })
	s.AllreduceBytes, s.AnalyticAllreduce = mean(func(c Cost) float64 { return c.AllreduceBytes }), mean(func(c Cost) float64 { return c.AnalyticAllreduce })
	s.KVBytes, s.AnalyticKV = mean(func(c Cost) float64 { return c.KVBytes }), mean(func(c Cost) float64 { return c.AnalyticKV })
	return s
}

// differences computes b − a for every metric both have at point i
// over the first complete rounds, with intervals that all hold together
// with confidence family (Bonferroni over the metrics compared). A
// timing's interval is stats.Paired's and needs stats.MinRounds rounds;
// a count's is the request bootstrap's with fewer. A percentile's
// verdict needs stats.PercentileSamples values on each side.
func differences(a, b *Side, i, complete int, family float64) []Difference {
	type pair struct {
		m      metric
		ra, rb stats.Rounds
	}
	sa, sb := a.samples(i), b.samples(i)
	sa, sb = sa[:min(len(sa), complete)], sb[:min(len(sb), complete)]
	var ps []pair
	for _, m := range metrics {
		ra, rb := m.rounds(sa), m.rounds(sb)
		if len(ra.Pool()) == 0 || len(rb.Pool()) == 0 {
			continue
		}
		ps = append(ps, pair{m, ra, rb})
	}
	level := 1 - (1-family)/float64(len(ps))
	var out []Difference
	for k, p := range ps {
		d := Difference{Config: b.Name, Baseline: a.Name, Metric: p.m.key, Level: Num(level),
			Base: Num(p.m.stat(p.ra.Pool())), Value: Num(p.m.stat(p.rb.Pool())), Lo: Num(math.NaN()), Hi: Num(math.NaN()),
			Samples: min(len(p.ra.Pool()), len(p.rb.Pool()))}
		d.Diff = d.Value - d.Base
		boot := stats.Bootstrap{Level: level, Seed: uint64(k + 1)}
		iv, err := boot.Paired(p.ra, p.rb, p.m.stat)
		d.Method = "rounds+bootstrap"
		if errors.Is(err, stats.ErrFewRounds) && p.m.count {
			iv, err = boot.Diff(p.ra, p.rb, p.m.stat)
			d.Method = "bootstrap"
		}
		switch {
		case errors.Is(err, stats.ErrFewRounds) && complete < stats.MinRounds:
			d.Method, d.Verdict = "", fmt.Sprintf("%s (needs --rounds >= %d)", NotDistinguishable, stats.MinRounds)
		case errors.Is(err, stats.ErrFewRounds):
			d.Method, d.Verdict = "", fmt.Sprintf("%s (values in fewer than %d rounds on both sides)", NotDistinguishable, stats.MinRounds)
		case err != nil:
			continue
		case p.m.pct > 0 && d.Samples < stats.PercentileSamples(p.m.pct):
			d.Verdict = fmt.Sprintf("%s (P%g needs %d a side, has %d)", NotEnoughSamples, p.m.pct, stats.PercentileSamples(p.m.pct), d.Samples)
		case !iv.Distinguishable():
			d.Verdict = NotDistinguishable
		case iv.Lo > 0:
			d.Verdict = b.Name + " higher"
		default:
			d.Verdict = b.Name + " lower"
		}
		if d.Method != "" {
			d.Lo, d.Hi = Num(iv.Lo), Num(iv.Hi)
		}
		out = append(out, d)
	}
	return out
}

// WriteTable prints, per load point, every configuration's figures side
// by side, then each difference with its interval.
func (r *Report) WriteTable(w io.Writer) {
	if r.Partial {
		fmt.Fprintf(w, "PARTIAL: stopped after %s blocks (%s); differences over the %d round(s) every configuration finished\n",
			r.BlocksRun, r.StoppedBy, r.CompleteRounds)
	}
	dtypes := map[string]string{}
	for _, cf := range r.Configurations {
		dtypes[cf.Name] = cf.KVCacheDType
	}
	for _, p := range r.Points {
		fmt.Fprintf(w, "\n=== %s: %d round(s) ===\n", p.Load, r.Rounds)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		head := []string{"metric"}
		for _, c := range p.Configs {
			head = append(head, c.Name)
		}
		fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
		rows := [][]string{
			row("completed", p.Configs, func(c *ConfigPoint) string { return fmt.Sprint(c.res.Completed) }),
			row("failed", p.Configs, func(c *ConfigPoint) string { return fmt.Sprint(c.res.Failed) }),
		}
		for _, m := range metrics {
			rows = append(rows, row(m.title, p.Configs, func(c *ConfigPoint) string { return num(r.value(c, m)) }))
			if m.key == "allreduce_bytes_per_token" {
				rows = append(rows, row("  analytic", p.Configs, func(c *ConfigPoint) string { return num(c.Cost.AnalyticAllreduce) }))
			}
			if m.key == "kv_bytes_per_prompt_token" {
				rows = append(rows, row("  analytic", p.Configs, func(c *ConfigPoint) string { return num(c.Cost.AnalyticKV) }),
					row("KV cache dtype", p.Configs, func(c *ConfigPoint) string { return dtypes[c.Name] }))
			}
		}
		rows = append(rows, row("traced requests", p.Configs, func(c *ConfigPoint) string {
			if !c.traced {
				return "-"
			}
			return fmt.Sprintf("%d/%d", c.Cost.Traced, c.res.Completed)
		}))
		for _, rw := range rows {
			fmt.Fprintln(tw, strings.Join(rw, "\t")+"\t")
		}
		tw.Flush()
		if len(p.Differences) == 0 {
			continue
		}
		against := "against " + r.Baseline
		if r.Baseline == "" {
			against = "every pair"
		}
		fmt.Fprintf(w, "differences B − A, %s (intervals: 95%% for all the differences of a pair together, Bonferroni; each the union of a t interval over the rounds' paired differences and a bootstrap over rounds and requests, bytes from requests alone; P99 needs %d requests a side):\n",
			against, stats.PercentileSamples(99))
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, d := range p.Differences {
			fmt.Fprintf(tw, "  %s − %s\t%s\t%s\t[%s, %s]\t%s\n", d.Config, d.Baseline, title(d.Metric), signed(d.Diff), signed(d.Lo), signed(d.Hi), d.Verdict)
		}
		tw.Flush()
	}
}

// value is a configuration's figure for m at its point.
func (r *Report) value(c *ConfigPoint, m metric) Num {
	switch m.key {
	case "output_throughput":
		return Num(c.res.OutputThroughput)
	case "queue_ms_per_token":
		return c.Cost.Queue
	case "compute_ms_per_token":
		return c.Cost.Compute
	case "allreduce_ms_per_token":
		return c.Cost.Allreduce
	case "kv_transfer_ms_per_token":
		return c.Cost.KVTransfer
	case "sampling_ms_per_token":
		return c.Cost.Sampling
	case "other_ms_per_token":
		return c.Cost.Other
	case "allreduce_bytes_per_token":
		return c.Cost.AllreduceBytes
	case "kv_bytes_per_prompt_token":
		return c.Cost.KVBytes
	}
	for _, mm := range []string{bench.TTFT, bench.TPOT, bench.ITL, bench.E2EL} {
		if strings.HasSuffix(m.key, "_"+mm+"_ms") {
			return Num(m.stat(resultMsOf(c.res, mm)))
		}
	}
	return Num(math.NaN())
}

func resultMsOf(r *bench.Result, m string) []float64 {
	out := make([]float64, len(r.Samples[m]))
	for i, v := range r.Samples[m] {
		out[i] = 1000 * v
	}
	return out
}

func title(key string) string {
	for _, m := range metrics {
		if m.key == key {
			return m.title
		}
	}
	return key
}

func row(name string, cs []*ConfigPoint, f func(*ConfigPoint) string) []string {
	out := []string{name}
	for _, c := range cs {
		out = append(out, f(c))
	}
	return out
}

func num(n Num) string { return format(n, "") }

func signed(n Num) string { return format(n, "+") }

// format writes n with three decimals (none from 1000 up), "-" for no
// value; flag "+" signs it.
func format(n Num, flag string) string {
	v := float64(n)
	switch {
	case math.IsNaN(v):
		return "-"
	case math.Abs(v) >= 1000:
		return fmt.Sprintf("%"+flag+".0f", v)
	}
	return fmt.Sprintf("%"+flag+".3f", v)
}

// save writes the report JSON and the charts.
func (c *Config) save(rep *Report, stderr io.Writer) error {
	name := c.ResultFilename
	if name == "" {
		name = "compare-" + rep.Date + ".json"
	}
	for _, p := range rep.Points {
		for _, cp := range p.Configs {
			raw, err := compactResult(cp.res, c.SaveDetailed)
			if err != nil {
				return err
			}
			cp.Result = raw
		}
	}
	path, err := serve.WriteJSON(filepath.Join(c.ResultDir, name), rep)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "saved %s\n", path)
	if c.Plot != "" {
		files, err := rep.Plots(c.Plot)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "plots: %s\n", strings.Join(files, " "))
	}
	return nil
}

// perRequest are the result keys holding one entry per request, kept
// only in detailed reports (vllm bench serve drops them too without
// --save-detailed).
var perRequest = []string{"input_lens", "output_lens", "ttfts", "itls", "latencies", "start_times", "queue_times",
	"generated_texts", "errors", "error_codes", "request_ids"}

func compactResult(r *bench.Result, detailed bool) (json.RawMessage, error) {
	data, err := json.Marshal(r)
	if err != nil || detailed {
		return data, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	for _, k := range perRequest {
		delete(m, k)
	}
	return json.Marshal(m)
}

// Plots draws the comparison's charts into dir, one colour per
// configuration: per load point the latency CDFs and ITL by position,
// and across points throughput against P99 latency.
func (r *Report) Plots(dir string) ([]string, error) {
	var files []string
	var pareto []serve.Series
	for _, cf := range r.Configurations {
		ser := serve.Series{Label: cf.Name}
		for _, p := range r.Points {
			for _, c := range p.Configs {
				if c.Name == cf.Name {
					ser.Results = append(ser.Results, c.res)
				}
			}
		}
		pareto = append(pareto, ser)
	}
	for _, p := range r.Points {
		var ss []serve.Series
		for _, c := range p.Configs {
			ss = append(ss, serve.Series{Label: c.Name, Results: []*bench.Result{c.res}})
		}
		cdf, err := serve.CDFPlot(dir, "latency_cdf_"+p.Load, ss)
		if err != nil {
			return files, err
		}
		itl, err := serve.ITLPlot(dir, "itl_by_position_"+p.Load, ss)
		if err != nil {
			return files, err
		}
		files = append(files, cdf.PNG, cdf.SVG, itl.PNG, itl.SVG)
	}
	pf, err := serve.ParetoPlot(dir, "throughput_vs_p99", pareto)
	if err != nil {
		return files, err
	}
	files = append(files, pf.PNG, pf.SVG)
	sf, err := plot.Stacks(dir, "cost_split", r.costStacks())
	if err != nil {
		return files, err
	}
	return append(files, sf.PNG, sf.SVG), nil
}

// costStacks is the per-token cost split of each configuration, one
// panel per load point (a negative "other", clock error, drawn as 0).
func (r *Report) costStacks() []plot.Stack {
	var out []plot.Stack
	for _, p := range r.Points {
		st := plot.Stack{Title: "Cost per output token, " + p.Load, YLabel: "ms per output token"}
		parts := []plot.Part{{Label: "queue"}, {Label: "compute"}, {Label: "allreduce"}, {Label: "KV transfer"}, {Label: "sampling"}, {Label: "other"}}
		for _, c := range p.Configs {
			st.Categories = append(st.Categories, c.Name)
			for i, v := range []Num{c.Cost.Queue, c.Cost.Compute, c.Cost.Allreduce, c.Cost.KVTransfer, c.Cost.Sampling, c.Cost.Other} {
				f := float64(v)
				if math.IsNaN(f) || f < 0 {
					f = 0
				}
				parts[i].Values = append(parts[i].Values, f)
			}
		}
		st.Parts = parts
		out = append(out, st)
	}
	return out
}
