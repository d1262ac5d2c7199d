package simulator

import (
	"fmt"
	"math"
	"slices"

	"github.com/tandemllm/tandem/costmodel"
)

// SLO is a goodput target, as `vllm bench serve --goodput` takes it:
// a request is good when it meets every bound that is set (seconds).
type SLO struct {
	TTFT, TPOT, E2EL float64
}

// Dist summarises samples in seconds.
type Dist struct {
	Samples []float64 `json:"-"`
	Mean    float64   `json:"mean"`
	Median  float64   `json:"median"`
	Std     float64   `json:"std"`
}

func newDist(xs []float64) Dist {
	d := Dist{Samples: slices.Sorted(slices.Values(xs))}
	if len(xs) == 0 {
		return d
	}
	var sum float64
	for _, x := range xs {
		sum += x
	}
	d.Mean = sum / float64(len(xs))
	var ss float64
	for _, x := range xs {
		ss += (x - d.Mean) * (x - d.Mean)
	}
	d.Std = math.Sqrt(ss / float64(len(xs)))
	d.Median = d.Percentile(50)
	return d
}

// Percentile is numpy's default (linear) percentile of the samples, as
// vLLM computes it; 0 without samples.
func (d Dist) Percentile(p float64) float64 {
	xs := d.Samples
	if len(xs) == 0 {
		return 0
	}
	r := p / 100 * float64(len(xs)-1)
	lo := int(math.Floor(r))
	if lo >= len(xs)-1 {
		return xs[len(xs)-1]
	}
	return xs[lo] + (r-float64(lo))*(xs[lo+1]-xs[lo])
}

// Parts is the mean time per output token in each part of a step, over
// the completed requests, as the traces' per-token breakdown splits it:
// compute (with the plan broadcast and logits gather), allreduce,
// sampling, the KV transfer's visible part, and queue (the rest of the
// latency).
type Parts struct {
	Compute, Allreduce, Sampling, KVTransfer, Queue float64
}

// tokenParts accumulates a request's parts over the steps serving it.
type tokenParts struct {
	compute, allreduce, sampling, kv float64
	tokens                           int
}

// add counts a step of dur seconds that served st: its allreduce and
// sampling are unshared; its device work stretched with the device's
// sharing, and on a shared device the ranks' waits for each
// other (skew) show in the allreduce, as the traces record them.
func (p *tokenParts) add(g *group, eff costmodel.Efficiency, shared bool, dur float64) {
	c := g.cost
	stretch := 1.0
	if w := c.Compute(); w > 0 {
		stretch = max(1, (dur-c.Communication()-c.Overhead-c.Sampling)/w)
	}
	samp := c.Sampling
	ar := c.AllReduce
	if shared && g.tp > 1 {
		ar += eff.CollectiveSkew * float64(g.tp-1) / float64(g.tp) * c.Compute() * stretch
	}
	p.allreduce += ar
	p.sampling += samp
	p.compute += dur - ar - samp
}

// Result is what a simulated benchmark reports.
type Result struct {
	Deployment Deployment `json:"deployment"`
	GPUs       int        `json:"gpus"`
	Completed  int        `json:"completed"`
	Failed     int        `json:"failed"`
	// Duration is from the first request sent to the last token received.
	Duration                float64 `json:"duration"`
	TTFT, TPOT, ITL, E2EL   Dist
	RequestThroughput       float64 `json:"request_throughput"`
	OutputThroughput        float64 `json:"output_throughput"`
	TotalThroughput         float64 `json:"total_token_throughput"`
	Goodput                 float64 `json:"request_goodput"`
	Good                    int     `json:"good"`
	Steps, Preemptions      int
	Parts                   Parts
	InputTokens, OutputToks int
	// PrefixCacheHits is the prompt tokens taken from prefix caches
	// (the workers' prefix_cache_hits).
	PrefixCacheHits int `json:"prefix_cache_hits"`
}

func (s *sim) result() *Result {
	res := &Result{Deployment: s.opts.Deployment, GPUs: s.opts.Deployment.GPUs(), Steps: s.steps, Duration: s.lastFinish}
	var ttft, tpot, itl, e2el []float64
	var parts Parts
	slo := s.opts.SLO
	for _, r := range s.reqs {
		res.Preemptions += r.preemptions
		if r.failed {
			res.Failed++
			continue
		}
		res.Completed++
		res.InputTokens += r.Input
		res.OutputToks += len(r.tokens)
		t0, last := r.tokens[0]-r.sent, r.tokens[len(r.tokens)-1]-r.sent
		ttft = append(ttft, t0)
		e2el = append(e2el, last)
		var tp float64
		if len(r.tokens) > 1 {
			tp = (last - t0) / float64(len(r.tokens)-1)
			tpot = append(tpot, tp)
		}
		for i := 1; i < len(r.tokens); i++ {
			itl = append(itl, r.tokens[i]-r.tokens[i-1])
		}
		if (slo.TTFT == 0 || t0 <= slo.TTFT) && (slo.TPOT == 0 || tp <= slo.TPOT) && (slo.E2EL == 0 || last <= slo.E2EL) {
			res.Good++
		}
		n := float64(len(r.tokens))
		p := r.parts
		parts.Compute += p.compute / n
		parts.Allreduce += p.allreduce / n
		parts.Sampling += p.sampling / n
		parts.KVTransfer += p.kv / n
		parts.Queue += max(0, last/n-(p.compute+p.allreduce+p.sampling+p.kv)/n)
	}
	for _, g := range s.groups {
		res.PrefixCacheHits += g.e.hits
	}
	res.TTFT, res.TPOT, res.ITL, res.E2EL = newDist(ttft), newDist(tpot), newDist(itl), newDist(e2el)
	if n := float64(res.Completed); n > 0 {
		res.Parts = Parts{parts.Compute / n, parts.Allreduce / n, parts.Sampling / n, parts.KVTransfer / n, parts.Queue / n}
	}
	if d := res.Duration; d > 0 {
		res.RequestThroughput = float64(res.Completed) / d
		res.OutputThroughput = float64(res.OutputToks) / d
		res.TotalThroughput = float64(res.InputTokens+res.OutputToks) / d
		res.Goodput = float64(res.Good) / d
	}
	return res
}

// PerGPU divides a throughput by the deployment's GPUs.
func (r *Result) PerGPU(x float64) float64 { return x / float64(max(1, r.GPUs)) }

// Metrics are the result under `vllm bench serve`'s result keys
// (latencies in milliseconds): completed, request_throughput,
// request_goodput, output_throughput, total_token_throughput, and for
// each of ttft, tpot, itl and e2el the mean_, median_, std_ and p<P>_
// keys of the percentiles asked.
func (r *Result) Metrics(percentiles []float64) map[string]float64 {
	m := map[string]float64{
		"completed":              float64(r.Completed),
		"request_throughput":     r.RequestThroughput,
		"request_goodput":        r.Goodput,
		"output_throughput":      r.OutputThroughput,
		"total_token_throughput": r.TotalThroughput,
		"duration":               r.Duration,
		"prefix_cache_hits":      float64(r.PrefixCacheHits),
	}
	for _, d := range []struct {
		name string
		d    Dist
	}{{"ttft", r.TTFT}, {"tpot", r.TPOT}, {"itl", r.ITL}, {"e2el", r.E2EL}} {
		m["mean_"+d.name+"_ms"] = d.d.Mean * 1e3
		m["median_"+d.name+"_ms"] = d.d.Median * 1e3
		m["std_"+d.name+"_ms"] = d.d.Std * 1e3
		for _, p := range percentiles {
			m[fmt.Sprintf("p%s_%s_ms", percentileKey(p), d.name)] = d.d.Percentile(p) * 1e3
		}
	}
	return m
}

// percentileKey writes a percentile as vLLM does: 99 → "99", 99.9 → "99.9".
func percentileKey(p float64) string {
	return fmt.Sprintf("%g", p)
}
