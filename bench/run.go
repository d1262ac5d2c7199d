package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/tandemllm/tandem/bench/dataset"
)

// Load is how requests are offered: at RequestRate per second (+Inf: all
// at once) with gamma-distributed gaps of shape Burstiness (1: a Poisson
// process), at most MaxConcurrency in flight (0: no limit).
type Load struct {
	RequestRate    float64
	Burstiness     float64
	MaxConcurrency int
}

// String names the load point as vllm bench serve's file names do.
func (l Load) String() string {
	s := PyFloat(l.RequestRate) + "qps"
	if l.MaxConcurrency > 0 {
		s += "-concurrency" + strconv.Itoa(l.MaxConcurrency)
	}
	return s
}

// Options are one run of a workload against a target.
type Options struct {
	// Workload is the requests, sent in order.
	Workload []dataset.Request
	Load
	// IgnoreEOS and Sampling are sent with every request.
	IgnoreEOS bool
	Sampling  Sampling
	// Warmups is the number of warm-up requests sent (within
	// MaxConcurrency) before the measured run; they are not measured.
	// They are Warmup's requests in turn, or, when Warmup is empty,
	// copies of the workload's first request (vllm bench serve's
	// warm-up, which a prefix cache then serves the first request from).
	Warmups int
	Warmup  []dataset.Request
	// Seed draws the arrival times.
	Seed uint64
	// IDPrefix starts every request id; request i is IDPrefix + i.
	IDPrefix string
	// Progress, when not nil, shows a progress bar (on a terminal) or
	// progress lines; Label names the run on it.
	Progress io.Writer
	Label    string
}

// Run is the record of one run.
type Run struct {
	Options
	// Outputs holds one Output per workload request, in workload order.
	Outputs []Output
	// Began is when the first request could be sent; Duration the time
	// from then until the last request ended.
	Began    time.Time
	Duration time.Duration
	// QueueTimes is how long each request waited for a concurrency slot
	// after its arrival time.
	QueueTimes []time.Duration
}

// NotSent is the error code of a request an interrupted run never sent.
const NotSent = "NOT_SENT"

// Execute sends the workload to t and waits for every request. When ctx
// ends it stops sending, cancels the requests in flight (which fail with
// the target's cancellation code) and returns the partial run, its
// unsent requests failed with code NotSent, with ctx's error; it returns
// no run when ctx ends during the warm-up.
func Execute(ctx context.Context, t Target, o Options) (*Run, error) {
	if len(o.Workload) == 0 {
		return nil, fmt.Errorf("bench: empty workload")
	}
	if o.Burstiness <= 0 {
		o.Burstiness = 1
	}
	var slots chan struct{}
	if o.MaxConcurrency > 0 {
		slots = make(chan struct{}, o.MaxConcurrency)
	}
	if err := warmup(ctx, t, o, slots); err != nil {
		return nil, err
	}
	arrivals := Arrivals(len(o.Workload), o.RequestRate, o.Burstiness, o.Seed)
	run := &Run{Options: o, Outputs: make([]Output, len(o.Workload)), QueueTimes: make([]time.Duration, len(o.Workload))}
	bar := newProgress(o.Progress, o.Label, len(o.Workload))
	defer bar.finish()
	var wg sync.WaitGroup
	run.Began = time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	sent := 0
	for i, q := range o.Workload {
		if wait := time.Until(run.Began.Add(arrivals[i])); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			break
		}
		arrived := time.Now()
		if slots != nil {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				break
			}
		}
		run.QueueTimes[i] = time.Since(arrived)
		req := Request{ID: o.IDPrefix + strconv.Itoa(i), Prompt: q.Prompt, PromptLen: q.PromptLen, MaxTokens: q.OutputLen, IgnoreEOS: o.IgnoreEOS, Sampling: o.Sampling}
		wg.Add(1)
		sent++
		go func() {
			defer wg.Done()
			out := t.Send(ctx, req)
			if slots != nil {
				<-slots
			}
			run.Outputs[i] = out
			bar.done(out.Success)
		}()
	}
	wg.Wait()
	run.Duration = time.Since(run.Began)
	for i := sent; i < len(o.Workload); i++ {
		run.Outputs[i] = Output{RequestID: o.IDPrefix + strconv.Itoa(i), Code: NotSent, Error: "not sent: the run was interrupted"}
	}
	return run, ctx.Err()
}

// warmup sends o.Warmups warm-up requests and waits for them.
func warmup(ctx context.Context, t Target, o Options, slots chan struct{}) error {
	if o.Warmups <= 0 {
		return nil
	}
	from := o.Warmup
	if len(from) == 0 {
		from = o.Workload[:1]
	}
	var wg sync.WaitGroup
	for i := range o.Warmups {
		q := from[i%len(from)]
		if slots != nil {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Send(ctx, Request{ID: o.IDPrefix + "warmup-" + strconv.Itoa(i), Prompt: q.Prompt, PromptLen: q.PromptLen, MaxTokens: q.OutputLen, IgnoreEOS: o.IgnoreEOS, Sampling: o.Sampling})
			if slots != nil {
				<-slots
			}
		}()
	}
	wg.Wait()
	return ctx.Err()
}

// Arrivals are the send times of n requests from the run's start: all 0
// at an infinite rate, otherwise cumulative gamma(burstiness,
// 1/(rate·burstiness)) gaps, scaled so that the last arrives at n/rate
// (as vllm bench serve does, so throughput does not depend on the seed's
// luck).
func Arrivals(n int, rate, burstiness float64, seed uint64) []time.Duration {
	out := make([]time.Duration, n)
	if math.IsInf(rate, 1) || n == 0 {
		return out
	}
	rng := rand.New(rand.NewPCG(seed, 0xa221))
	gaps := make([]float64, n)
	total := 0.0
	for i := range gaps {
		if math.IsInf(burstiness, 1) {
			gaps[i] = 1 / rate
		} else {
			gaps[i] = gamma(rng, burstiness) / (rate * burstiness)
		}
		total += gaps[i]
	}
	scale := 1.0
	if total > 0 {
		scale = float64(n) / rate / total
	}
	at := 0.0
	for i, g := range gaps {
		at += g * scale
		out[i] = time.Duration(at * float64(time.Second))
	}
	return out
}

// gamma draws from Gamma(shape, 1) (Marsaglia and Tsang; shapes below 1
// by the boost Gamma(shape+1)·U^(1/shape)).
func gamma(rng *rand.Rand, shape float64) float64 {
	if shape < 1 {
		return gamma(rng, shape+1) * math.Pow(rng.Float64(), 1/shape)
	}
	d := shape - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := rng.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := rng.Float64()
		if math.Log(u) < 0.5*x*x+d-d*v+d*math.Log(v) {
			return d * v
		}
	}
}

// PyFloat formats f as Python's str(float) does for the values a load
// test uses ("inf", "4.0", "0.5"), so file names and keys match vllm
// bench serve's.
func PyFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	case math.IsNaN(f):
		return "nan"
	}
	s := strconv.FormatFloat(f, 'g', -1, 64)
	if f == math.Trunc(f) && math.Abs(f) < 1e16 {
		s = strconv.FormatFloat(f, 'f', 1, 64)
	}
	return s
}

// Merge joins runs of one workload and load point (rounds) into one run:
// outputs and queue times in order, durations summed, so throughputs are
// totals over the total time.
func Merge(runs ...*Run) *Run {
	if len(runs) == 0 {
		return nil
	}
	m := &Run{Options: runs[0].Options, Began: runs[0].Began}
	m.Workload = nil
	for _, r := range runs {
		m.Workload = append(m.Workload, r.Workload...)
		m.Outputs = append(m.Outputs, r.Outputs...)
		m.QueueTimes = append(m.QueueTimes, r.QueueTimes...)
		m.Duration += r.Duration
	}
	return m
}
