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
	// TileCompute is Compute for the products on a CPU's matrix unit
	// (see Hardware.TilePeakFLOPS); 0 prices them as FP32 products.
	TileCompute float64 `json:"tile_compute,omitempty"`
	// CollectiveBandwidth scales the link bandwidth collectives reach.
	CollectiveBandwidth float64 `json:"collective_bandwidth"`
	// CollectiveLatency scales every collective's latency term.
	CollectiveLatency float64 `json:"collective_latency"`
	// CollectiveSkew is, on a shared device, the share of a rank's
	// stretched compute it spends waiting in collectives for ranks the
	// scheduler ran later: it moves time from compute to allreduce in the
	// per-token split (TP n waits skew·(n−1)/n) without changing the total.
	CollectiveSkew float64 `json:"collective_skew"`
	// BackgroundLoad is, on a shared device, the runnable threads of
	// other work competing for its cores: while our busy ranks run B
	// threads, a rank of T threads computes at T·min(1, C/(B +
	// BackgroundLoad))/C of the C-core device's speed (fair scheduling;
	// see SharedRate). Zero: the machine to ourselves.
	BackgroundLoad float64 `json:"background_load"`
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
		if !(f.v > 0) || f.v > 1e4 {
			return fmt.Errorf("efficiency %s = %g: want a positive factor of at most 10000", f.name, f.v)
		}
	}
	if e.TileCompute < 0 || e.TileCompute > 1e4 {
		return fmt.Errorf("efficiency tile_compute = %g: want 0 (none) or a positive factor of at most 10000", e.TileCompute)
	}
	if e.BackgroundLoad < 0 || e.BackgroundLoad > 1e4 {
		return fmt.Errorf("efficiency background_load = %g: want 0 to 10000 threads", e.BackgroundLoad)
	}
	if e.CollectiveSkew < 0 || e.CollectiveSkew >= 1 {
		return fmt.Errorf("efficiency collective_skew = %g: want 0 <= skew < 1", e.CollectiveSkew)
	}
	if e.StepOverhead < 0 || e.LayerOverhead < 0 || e.SamplePerLogit < 0 || e.RequestOverhead < 0 {
		return fmt.Errorf("efficiency: overheads must not be negative")
	}
	return nil
}

// WithEfficiency is a copy of m priced with e instead (e is validated).
func (m *Model) WithEfficiency(e Efficiency) (*Model, error) {
	if err := e.validate(); err != nil {
		return nil, err
	}
	c := *m
	c.Eff = e
	c.coll.eff = e
	c.shares = map[int]rankShare{}
	return &c, nil
}
