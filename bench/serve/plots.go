package serve

import (
	"github.com/tandemllm/tandem/bench"
	"github.com/tandemllm/tandem/bench/plot"
	"github.com/tandemllm/tandem/bench/stats"
)

// Series is one line of a chart: a label and the runs behind it.
type Series struct {
	Label   string
	Results []*bench.Result
}

// SweepPlots draws a sweep's charts into dir: the latency CDFs and ITL by
// position with one line per load point, and throughput against P99
// latency across the points. It returns the files written.
func SweepPlots(dir, model string, rs []*bench.Result) ([]string, error) {
	var points []Series
	for _, r := range rs {
		points = append(points, Series{Label: r.Load.String(), Results: []*bench.Result{r}})
	}
	var files []string
	for _, f := range []func() (plot.Files, error){
		func() (plot.Files, error) { return CDFPlot(dir, "latency_cdf", points) },
		func() (plot.Files, error) { return ITLPlot(dir, "itl_by_position", points) },
		func() (plot.Files, error) {
			return ParetoPlot(dir, "throughput_vs_p99", []Series{{Label: model, Results: rs}})
		},
	} {
		fs, err := f()
		if err != nil {
			return files, err
		}
		files = append(files, fs.PNG, fs.SVG)
	}
	return files, nil
}

// CDFPlot draws the CDF of each latency metric, one panel each, one line
// per series (its runs' samples pooled).
func CDFPlot(dir, name string, ss []Series) (plot.Files, error) {
	var panels []plot.Panel
	for _, m := range bench.Metrics {
		p := plot.Panel{Title: metricName(m) + " CDF", XLabel: metricName(m) + " (ms)"}
		for _, s := range ss {
			var ms []float64
			for _, r := range s.Results {
				for _, v := range r.Samples[m] {
					ms = append(ms, v*1000)
				}
			}
			p.Series = append(p.Series, plot.Series{Label: s.Label, Values: ms})
		}
		panels = append(panels, p)
	}
	return plot.CDFs(dir, name, panels)
}

// ITLPlot draws the median and P99 inter-token latency at each output
// token position (the gap before token k+1), one line per series.
func ITLPlot(dir, name string, ss []Series) (plot.Files, error) {
	med := plot.Panel{Title: "Median ITL by token position", XLabel: "output token", YLabel: "ITL (ms)"}
	p99 := plot.Panel{Title: "P99 ITL by token position", XLabel: "output token", YLabel: "ITL (ms)"}
	for _, s := range ss {
		var byPos [][]float64
		for _, r := range s.Results {
			for _, itls := range r.ITLs {
				for k, v := range itls {
					for len(byPos) <= k {
						byPos = append(byPos, nil)
					}
					byPos[k] = append(byPos[k], v*1000)
				}
			}
		}
		a, b := plot.Series{Label: s.Label}, plot.Series{Label: s.Label}
		for k, vs := range byPos {
			x := float64(k + 2)
			a.X, a.Values = append(a.X, x), append(a.Values, stats.Median(vs))
			b.X, b.Values = append(b.X, x), append(b.Values, stats.Percentile(vs, 99))
		}
		med.Series, p99.Series = append(med.Series, a), append(p99.Series, b)
	}
	return plot.Curves(dir, name, []plot.Panel{med, p99})
}

// ParetoPlot draws, per series, output throughput against the P99 of
// TTFT, TPOT and E2EL of each of its runs (its load points).
func ParetoPlot(dir, name string, ss []Series) (plot.Files, error) {
	var panels []plot.Panel
	for _, m := range []string{bench.TTFT, bench.TPOT, bench.E2EL} {
		p := plot.Panel{Title: "Throughput vs P99 " + metricName(m), XLabel: "P99 " + metricName(m) + " (ms)", YLabel: "output tokens/s"}
		for _, s := range ss {
			line := plot.Series{Label: s.Label}
			for _, r := range s.Results {
				line.X = append(line.X, 1000*stats.Percentile(r.Samples[m], 99))
				line.Values = append(line.Values, r.OutputThroughput)
			}
			p.Series = append(p.Series, line)
		}
		panels = append(panels, p)
	}
	return plot.Curves(dir, name, panels)
}

func metricName(m string) string {
	if m == bench.E2EL {
		return "E2E latency"
	}
	return map[string]string{bench.TTFT: "TTFT", bench.TPOT: "TPOT", bench.ITL: "ITL"}[m]
}
