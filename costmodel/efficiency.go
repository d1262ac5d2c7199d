package costmodel

import "fmt"

// Efficiency holds the factors that turn datasheet peaks into what a
// step reaches. A hardware profile carries priors; a Calibration carries
// values fitted to traces. Overheads are in seconds.
type Efficiency struct {
	// Memory is the share of memory bandwidth reached by weight and KV reads.
	Memory float64 `json:"memory"`
	// Compute is the share of peak FLOP/s reached by the matrix products.
	Compute float64 `json:"compute"`
	// CollectiveBandwidth scales the link bandwidth collectives reach.
	CollectiveBandwidth float64 `json:"collective_bandwidth"`
	// CollectiveLatency scales every collective's latency term.
	CollectiveLatency float64 `json:"collective_latency"`
	// Transfer is the share of link bandwidth the KV transfer reaches.
	Transfer float64 `json:"transfer"`
	// StepOverhead is the fixed cost of a step (scheduling, plan
	// broadcast set-up, delivery); LayerOverhead the fixed cost of each
	// layer of a step (kernel launches).
	StepOverhead  float64 `json:"step_overhead"`
	LayerOverhead float64 `json:"layer_overhead"`
	// SamplePerLogit is the host's sampling time per logit of a sampled row.
	SamplePerLogit float64 `json:"sample_per_logit"`
	// RequestOverhead is the coordinator's share of a request's latency:
	// half of it before the request reaches a group, half between a
	// group's step and the client seeing its token.
	RequestOverhead float64 `json:"request_overhead"`
}

func (e Efficiency) validate() error {
	for _, f := range []struct {
		name string
		v    float64
	}{{"memory", e.Memory}, {"compute", e.Compute}, {"collective_bandwidth", e.CollectiveBandwidth},
		{"collective_latency", e.CollectiveLatency}, {"transfer", e.Transfer}} {
		if f.v <= 0 || f.v > 10 {
			return fmt.Errorf("efficiency %s = %g: want a positive factor of at most 10", f.name, f.v)
		}
	}
	if e.StepOverhead < 0 || e.LayerOverhead < 0 || e.SamplePerLogit < 0 || e.RequestOverhead < 0 {
		return fmt.Errorf("efficiency: overheads must not be negative")
	}
	return nil
}
