package bench

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"text/tabwriter"
)

// metricTitles are the headings vllm bench serve prints.
var metricTitles = map[string][2]string{
	TTFT: {"Time to First Token", "TTFT"},
	TPOT: {"Time per Output Token (excl. 1st token)", "TPOT"},
	ITL:  {"Inter-token Latency", "ITL"},
	E2EL: {"End-to-end Latency", "E2EL"},
}

// WriteReport prints a run's results as vllm bench serve's terminal
// report, with the failures by error code.
func WriteReport(w io.Writer, r *Result) {
	line := func(k string, v any) {
		switch v := v.(type) {
		case float64:
			fmt.Fprintf(w, "%-40s %-10.2f\n", k, v)
		default:
			fmt.Fprintf(w, "%-40s %-10v\n", k, v)
		}
	}
	fmt.Fprintf(w, "%s\n", center(" Serving Benchmark Result ", "=", 50))
	line("Successful requests:", r.Completed)
	line("Failed requests:", r.Failed)
	for _, c := range sortedKeys(r.ErrorsByCode) {
		line("  "+c+":", r.ErrorsByCode[c])
	}
	if r.Load.MaxConcurrency > 0 {
		line("Maximum request concurrency:", r.Load.MaxConcurrency)
	}
	if !math.IsInf(r.Load.RequestRate, 1) {
		line("Request rate configured (RPS):", r.Load.RequestRate)
	}
	line("Benchmark duration (s):", r.Duration)
	line("Total input tokens:", r.TotalInput)
	line("Total generated tokens:", r.TotalOutput)
	line("Request throughput (req/s):", r.RequestThroughput)
	if r.RequestGoodput != nil {
		line("Request goodput (req/s):", *r.RequestGoodput)
	}
	line("Output token throughput (tok/s):", r.OutputThroughput)
	line("Peak output token throughput (tok/s):", r.MaxOutputTokensPerS)
	line("Peak concurrent requests:", float64(r.MaxConcurrentRequests))
	line("Total token throughput (tok/s):", r.TotalTokenThroughput)
	for _, m := range Metrics {
		s, ok := r.Stats[m]
		if !ok {
			continue
		}
		t := metricTitles[m]
		fmt.Fprintf(w, "%s\n", center(t[0], "-", 50))
		line(fmt.Sprintf("Mean %s (ms):", t[1]), s.Mean)
		line(fmt.Sprintf("Median %s (ms):", t[1]), s.Median)
		for i, p := range r.Percentiles {
			line(fmt.Sprintf("P%s %s (ms):", PercentileKey(p), t[1]), s.Percentiles[i])
		}
	}
	fmt.Fprintln(w, strings.Repeat("=", 50))
}

// WriteSweep prints one row per run of a sweep: the load point,
// throughputs, goodput and the mean and highest asked percentile of each
// latency metric.
func WriteSweep(w io.Writer, rs []*Result) {
	if len(rs) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	top := ""
	if n := len(rs[0].Percentiles); n > 0 {
		top = "P" + PercentileKey(rs[0].Percentiles[n-1])
	}
	head := []string{"rate", "concurrency", "ok", "failed", "req/s", "out tok/s", "goodput"}
	for _, m := range Metrics {
		if _, ok := rs[0].Stats[m]; ok {
			head = append(head, "mean "+m, top+" "+m)
		}
	}
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	for _, r := range rs {
		conc, good := "-", "-"
		if r.Load.MaxConcurrency > 0 {
			conc = fmt.Sprint(r.Load.MaxConcurrency)
		}
		if r.RequestGoodput != nil {
			good = fmt.Sprintf("%.2f", *r.RequestGoodput)
		}
		row := []string{PyFloat(r.Load.RequestRate), conc, fmt.Sprint(r.Completed), fmt.Sprint(r.Failed),
			fmt.Sprintf("%.2f", r.RequestThroughput), fmt.Sprintf("%.1f", r.OutputThroughput), good}
		for _, m := range Metrics {
			if s, ok := r.Stats[m]; ok {
				p := 0.0
				if len(s.Percentiles) > 0 {
					p = s.Percentiles[len(s.Percentiles)-1]
				}
				row = append(row, fmt.Sprintf("%.2f", s.Mean), fmt.Sprintf("%.2f", p))
			}
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	tw.Flush()
	fmt.Fprintln(w, "(latencies in ms)")
}

func center(s, pad string, width int) string {
	n := width - len(s)
	if n <= 0 {
		return s
	}
	return strings.Repeat(pad, n/2) + s + strings.Repeat(pad, n-n/2)
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
