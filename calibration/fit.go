package calibration

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/tandemllm/tandem/costmodel"
)

// fitKeys are what the fit matches: the per-token split and the
// latencies the planner ranks by.
var fitKeys = append(slices.Clone(partKeys), "median_ttft_ms", "mean_ttft_ms", "median_tpot_ms", "mean_tpot_ms", "median_itl_ms")

// param is one efficiency factor the fit searches, within [lo, hi], on
// a log scale unless linear.
type param struct {
	name   string
	field  func(*costmodel.Efficiency) *float64
	lo, hi float64
	linear bool
}

var params = []param{
	{name: "memory", field: func(e *costmodel.Efficiency) *float64 { return &e.Memory }, lo: 0.02, hi: 5},
	{name: "compute", field: func(e *costmodel.Efficiency) *float64 { return &e.Compute }, lo: 0.02, hi: 5},
	{name: "step_overhead", field: func(e *costmodel.Efficiency) *float64 { return &e.StepOverhead }, lo: 1e-6, hi: 0.3},
	{name: "layer_overhead", field: func(e *costmodel.Efficiency) *float64 { return &e.LayerOverhead }, lo: 1e-7, hi: 0.02},
	{name: "sample_per_logit", field: func(e *costmodel.Efficiency) *float64 { return &e.SamplePerLogit }, lo: 1e-12, hi: 1e-6},
	{name: "collective_latency", field: func(e *costmodel.Efficiency) *float64 { return &e.CollectiveLatency }, lo: 0.05, hi: 5000},
	{name: "collective_bandwidth", field: func(e *costmodel.Efficiency) *float64 { return &e.CollectiveBandwidth }, lo: 0.01, hi: 100},
	{name: "collective_skew", field: func(e *costmodel.Efficiency) *float64 { return &e.CollectiveSkew }, lo: 0, hi: 0.95, linear: true},
	{name: "background_load", field: func(e *costmodel.Efficiency) *float64 { return &e.BackgroundLoad }, lo: 0, hi: 40, linear: true},
	{name: "transfer", field: func(e *costmodel.Efficiency) *float64 { return &e.Transfer }, lo: 0.01, hi: 100},
	{name: "request_overhead", field: func(e *costmodel.Efficiency) *float64 { return &e.RequestOverhead }, lo: 1e-5, hi: 1},
}

// FitOptions tune Fit. Zero fields take the documented defaults.
type FitOptions struct {
	// Sweeps over all the factors (default 8).
	Sweeps int
	// Progress, if set, is told each sweep's objective.
	Progress func(sweep int, objective float64)
	// BackgroundLoad, if set, fixes the shared device's background load
	// (other work's runnable threads, as measured while the runs ran)
	// instead of searching it; so does every case having its own.
	BackgroundLoad *float64
}

// Fit searches the efficiency factors of hw that make the simulator
// reproduce the cases, starting from the profile's priors: coordinate
// descent (each factor by a coarse scan, then a golden-section search)
// with, after each sweep, a line search along the sweep's own move
// (Powell's acceleration, for factors that trade off against each
// other), on the sum over cases of the squared log-ratio of predicted to
// measured for the per-token split, TTFT, TPOT and ITL.
func Fit(ctx context.Context, cases []Case, hw costmodel.Hardware, opts FitOptions) (*costmodel.Calibration, error) {
	r, err := newReplay(cases, hw)
	if err != nil {
		return nil, err
	}
	if opts.Sweeps <= 0 {
		opts.Sweeps = 8
	}
	base := hw.Efficiency
	fixedBackground := opts.BackgroundLoad != nil || !slices.ContainsFunc(cases, func(c Case) bool { return c.BackgroundLoad == nil })
	if opts.BackgroundLoad != nil {
		base.BackgroundLoad = *opts.BackgroundLoad
	}
	x := toVector(base)
	score, err := r.objective(fromVector(base, x))
	if err != nil {
		return nil, err
	}
	for sweep := range opts.Sweeps {
		start := append([]float64(nil), x...)
		for i := range params {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if params[i].name == "background_load" && fixedBackground {
				continue
			}
			dir := make([]float64, len(params))
			dir[i] = 1
			if x, score, err = r.line(base, x, dir, score); err != nil {
				return nil, err
			}
		}
		move := make([]float64, len(x))
		for i := range x {
			move[i] = x[i] - start[i]
		}
		if x, score, err = r.line(base, x, move, score); err != nil {
			return nil, err
		}
		if opts.Progress != nil {
			opts.Progress(sweep+1, score)
		}
	}
	best := fromVector(base, x)
	fit, err := r.errors(best, fitKeys)
	if err != nil {
		return nil, err
	}
	return &costmodel.Calibration{Hardware: hw.Name, Efficiency: best, Fit: fit}, nil
}

// toVector maps the factors to the search's coordinates (logs, except
// linear ones), each clamped into its range.
func toVector(e costmodel.Efficiency) []float64 {
	x := make([]float64, len(params))
	for i, p := range params {
		v := min(max(*p.field(&e), p.lo), p.hi)
		if !p.linear {
			v = math.Log(v)
		}
		x[i] = v
	}
	return x
}

// fromVector sets base's factors from search coordinates.
func fromVector(base costmodel.Efficiency, x []float64) costmodel.Efficiency {
	for i, p := range params {
		v := x[i]
		if !p.linear {
			v = math.Exp(v)
		}
		*p.field(&base) = min(max(v, p.lo), p.hi) // rounding may step out
	}
	return base
}

// bounds is the interval of t for which x + t·dir stays in every
// factor's range.
func bounds(x, dir []float64) (lo, hi float64) {
	lo, hi = math.Inf(-1), math.Inf(1)
	for i, p := range params {
		if dir[i] == 0 {
			continue
		}
		a, b := p.lo, p.hi
		if !p.linear {
			a, b = math.Log(a), math.Log(b)
		}
		t1, t2 := (a-x[i])/dir[i], (b-x[i])/dir[i]
		lo, hi = max(lo, min(t1, t2)), min(hi, max(t1, t2))
	}
	return lo, hi
}

// objective is the fit's loss under eff.
func (r *replay) objective(eff costmodel.Efficiency) (float64, error) {
	var sum float64
	for i := range r.cases {
		pred, err := r.predict(i, eff)
		if err != nil {
			return 0, err
		}
		for _, k := range fitKeys {
			if e := relErr(k, pred, r.cases[i].Measured); !math.IsNaN(e) {
				l := math.Log(max(1+e, 1e-6))
				sum += l * l
			}
		}
	}
	return sum, nil
}

// line minimises the loss along x + t·dir within the factors' ranges: a
// scan of 13 points, then a golden-section search around the best. It
// returns x unchanged unless the loss goes down.
func (r *replay) line(base costmodel.Efficiency, x, dir []float64, score float64) ([]float64, float64, error) {
	lo, hi := bounds(x, dir)
	if math.IsInf(lo, 0) || math.IsInf(hi, 0) || hi-lo < 1e-12 {
		return x, score, nil
	}
	at := func(t float64) []float64 {
		y := make([]float64, len(x))
		for i := range x {
			y[i] = x[i] + t*dir[i]
		}
		return y
	}
	try := func(t float64) (float64, error) { return r.objective(fromVector(base, at(t))) }
	const n = 12
	bestT, bestS := 0.0, score
	step := (hi - lo) / n
	for k := 0; k <= n; k++ {
		t := lo + float64(k)*step
		s, err := try(t)
		if err != nil {
			return x, score, err
		}
		if s < bestS {
			bestT, bestS = t, s
		}
	}
	a, b := max(lo, bestT-step), min(hi, bestT+step)
	const phi = 0.6180339887498949
	t1, t2 := b-phi*(b-a), a+phi*(b-a)
	s1, err := try(t1)
	if err != nil {
		return x, score, err
	}
	s2, err := try(t2)
	if err != nil {
		return x, score, err
	}
	for range 24 {
		if s1 < s2 {
			b, t2, s2 = t2, t1, s1
			t1 = b - phi*(b-a)
			if s1, err = try(t1); err != nil {
				return x, score, err
			}
		} else {
			a, t1, s1 = t1, t2, s2
			t2 = a + phi*(b-a)
			if s2, err = try(t2); err != nil {
				return x, score, err
			}
		}
	}
	for _, c := range []struct{ t, s float64 }{{t1, s1}, {t2, s2}} {
		if c.s < bestS {
			bestT, bestS = c.t, c.s
		}
	}
	if bestS >= score {
		return x, score, nil
	}
	return at(bestT), bestS, nil
}

// errors is the relative error left per key over the cases: its
// median and 90th percentile of |predicted − measured| / measured.
func (r *replay) errors(eff costmodel.Efficiency, keys []string) ([]costmodel.FitError, error) {
	errs := map[string][]float64{}
	for i := range r.cases {
		pred, err := r.predict(i, eff)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			if e := relErr(k, pred, r.cases[i].Measured); !math.IsNaN(e) {
				errs[k] = append(errs[k], math.Abs(e))
			}
		}
	}
	var out []costmodel.FitError
	for _, k := range keys {
		xs := errs[k]
		if len(xs) == 0 {
			continue
		}
		slices.Sort(xs)
		out = append(out, costmodel.FitError{Component: k, Samples: len(xs), MedianRel: quantile(xs, 0.5), P90Rel: quantile(xs, 0.9)})
	}
	return out, nil
}

// quantile of sorted xs, linear between ranks (numpy's default).
func quantile(xs []float64, q float64) float64 {
	r := q * float64(len(xs)-1)
	lo := int(r)
	if lo >= len(xs)-1 {
		return xs[len(xs)-1]
	}
	return xs[lo] + (r-float64(lo))*(xs[lo+1]-xs[lo])
}

// String describes a fit error for people.
func describe(f costmodel.FitError) string {
	return fmt.Sprintf("%-26s %3d  %6.1f%%  %6.1f%%", f.Component, f.Samples, 100*f.MedianRel, 100*f.P90Rel)
}
