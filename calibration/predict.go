package calibration

import (
	"fmt"
	"math"
	"slices"

	"github.com/tandemllm/tandem/costmodel"
	"github.com/tandemllm/tandem/simulator"
)

// replay holds each case's cost model, built once, so a search only
// swaps efficiency factors.
type replay struct {
	cases  []Case
	models []*costmodel.Model
}

func newReplay(cases []Case, hw costmodel.Hardware) (*replay, error) {
	r := &replay{cases: cases}
	for _, c := range cases {
		m, err := c.model(hw, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.Name, err)
		}
		r.models = append(r.models, m)
	}
	return r, nil
}

// predict simulates case i with eff and returns its figures under the
// keys of Case.Measured.
func (r *replay) predict(i int, eff costmodel.Efficiency) (map[string]float64, error) {
	c := r.cases[i]
	if c.BackgroundLoad != nil {
		eff.BackgroundLoad = *c.BackgroundLoad
	}
	m, err := r.models[i].WithEfficiency(eff)
	if err != nil {
		return nil, err
	}
	res, err := simulator.Run(simulator.Options{Cost: m, Deployment: c.Deployment, Engine: c.Engine, Workload: c.Workload})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.Name, err)
	}
	out := res.Metrics([]float64{50, 90, 95, 99})
	p := res.Parts
	out["compute_ms_per_token"] = p.Compute * 1e3
	out["allreduce_ms_per_token"] = p.Allreduce * 1e3
	out["kv_transfer_ms_per_token"] = p.KVTransfer * 1e3
	out["sampling_ms_per_token"] = p.Sampling * 1e3
	return out, nil
}

// floor is the smallest measured value a relative error is taken of:
// below it (a part a configuration barely has) the ratio is noise.
func floor(key string) float64 {
	if key == "output_throughput" {
		return 1e-6
	}
	if slices.Contains(partKeys, key) {
		return 0.05 // ms per token
	}
	return 1e-3
}

// relErr is (predicted − measured) / measured, NaN where the measured
// value is below the key's floor or either is missing.
func relErr(key string, pred, meas map[string]float64) float64 {
	m, okM := meas[key]
	p, okP := pred[key]
	if !okM || !okP || m < floor(key) || math.IsNaN(p) {
		return math.NaN()
	}
	return (p - m) / m
}
