package planner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/tandemllm/tandem/costmodel"
	"github.com/tandemllm/tandem/simulator"
)

// Options say what to plan for. Zero fields take the documented defaults.
type Options struct {
	// Cost prices the model's steps on the hardware (required).
	Cost *costmodel.Model
	// GPUs is the most devices a deployment may use (on a CPU profile:
	// ranks); Nodes the nodes they sit in (default: as few as hold them).
	GPUs, Nodes int
	// Modes to consider (default both unified and disaggregated).
	Modes []string
	// TPs restricts the TP degrees considered (default every degree the
	// model splits over, up to GPUs).
	TPs      []int
	Engine   simulator.EngineOptions
	Workload simulator.Workload
	SLO      simulator.SLO
	// KVCacheBytes is each rank's KV budget (default: the hardware's).
	KVCacheBytes float64
	// Progress, if set, is called after each deployment is simulated.
	Progress func(done, total int)
}

// Candidate is one deployment and how it fared.
type Candidate struct {
	Rank       int                  `json:"rank"`
	Deployment simulator.Deployment `json:"deployment"`
	Result     *simulator.Result    `json:"-"`
	// GoodputPerGPU and OutputPerGPU are the ranking's figures.
	GoodputPerGPU float64 `json:"goodput_per_gpu"`
	OutputPerGPU  float64 `json:"output_throughput_per_gpu"`
	// Skipped says why the deployment was not simulated (it does not fit).
	Skipped string `json:"skipped,omitempty"`
}

// ErrNoDeployment is returned when no deployment fits the GPUs given.
var ErrNoDeployment = errors.New("no deployment fits")

// Deployments lists the deployments of at most opts.GPUs devices: every
// unified pool, and every prefill and decode pool pair, of TP degrees
// the model splits over. A group larger than a node spans whole nodes.
func Deployments(opts Options) []simulator.Deployment {
	tps := opts.TPs
	if len(tps) == 0 {
		for tp := 1; tp <= opts.GPUs; tp++ {
			tps = append(tps, tp)
		}
	}
	perNode := opts.Cost.HW.GPUsPerNode
	var ok []int
	for _, tp := range tps {
		if _, err := opts.Cost.Shape.Plan(tp); err != nil || tp > opts.GPUs {
			continue
		}
		if !opts.Cost.HW.Shared && tp > perNode && tp%perNode != 0 {
			continue // a multi-node group spans whole nodes
		}
		ok = append(ok, tp)
	}
	modes := opts.Modes
	if len(modes) == 0 {
		modes = []string{simulator.ModeUnified, simulator.ModeDisaggregated}
	}
	var out []simulator.Deployment
	n := opts.GPUs
	for _, mode := range modes {
		for _, a := range ok {
			if mode == simulator.ModeUnified {
				for g := 1; g*a <= n; g++ {
					out = append(out, simulator.Deployment{Mode: mode, Unified: simulator.Pool{Groups: g, TP: a}})
				}
				continue
			}
			for _, b := range ok {
				for np := 1; np*a+b <= n; np++ {
					for nd := 1; np*a+nd*b <= n; nd++ {
						out = append(out, simulator.Deployment{Mode: mode, Prefill: simulator.Pool{Groups: np, TP: a}, Decode: simulator.Pool{Groups: nd, TP: b}})
					}
				}
			}
		}
	}
	return out
}

// Plan simulates every deployment and ranks them by goodput per GPU,
// then output throughput per GPU; deployments that do not fit come last,
// with the reason.
func Plan(ctx context.Context, opts Options) ([]Candidate, error) {
	if opts.Cost == nil || opts.GPUs < 1 {
		return nil, fmt.Errorf("planner: need a cost model and at least one GPU")
	}
	ds := Deployments(opts)
	if len(ds) == 0 {
		return nil, fmt.Errorf("%w: %s splits over no TP degree of at most %d", ErrNoDeployment, opts.Cost.Shape.Name, opts.GPUs)
	}
	out := make([]Candidate, len(ds))
	for i, d := range ds {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c := Candidate{Deployment: d}
		res, err := simulator.Run(simulator.Options{Cost: opts.Cost, Deployment: d, Engine: opts.Engine,
			Workload: opts.Workload, SLO: opts.SLO, KVCacheBytes: opts.KVCacheBytes})
		switch {
		case errors.Is(err, costmodel.ErrDoesNotFit):
			c.Skipped = err.Error()
		case err != nil:
			return nil, fmt.Errorf("%s: %w", d, err)
		default:
			c.Result = res
			c.GoodputPerGPU = res.PerGPU(res.Goodput)
			c.OutputPerGPU = res.PerGPU(res.OutputThroughput)
		}
		out[i] = c
		if opts.Progress != nil {
			opts.Progress(i+1, len(ds))
		}
	}
	slices.SortStableFunc(out, func(a, b Candidate) int {
		if (a.Result == nil) != (b.Result == nil) {
			if a.Result == nil {
				return 1
			}
			return -1
		}
		return cmp.Or(cmp.Compare(b.GoodputPerGPU, a.GoodputPerGPU), cmp.Compare(b.OutputPerGPU, a.OutputPerGPU))
	})
	for i := range out {
		out[i].Rank = i + 1
	}
	if out[0].Result == nil {
		return out, fmt.Errorf("%w: %s", ErrNoDeployment, out[0].Skipped)
	}
	return out, nil
}
