package planner

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"

	"github.com/tandemllm/tandem/costmodel"
	"github.com/tandemllm/tandem/simulator"
)

// WriteTable writes the ranking: the top candidates (all when top ≤ 0)
// with their latency percentiles, throughput and goodput per GPU.
func WriteTable(w io.Writer, cands []Candidate, top int) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "RANK\tDEPLOYMENT\tGPUS\tTTFT P50 ms\tTTFT P99 ms\tTPOT P50 ms\tTPOT P99 ms\tITL P99 ms\tOUT TOK/S/GPU\tGOODPUT REQ/S\tGOODPUT/GPU\tSLO MET\t")
	for i, c := range cands {
		if top > 0 && i >= top {
			break
		}
		if c.Result == nil {
			fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t\t\t\t\t\t\t\t\t\n", c.Rank, c.Deployment, c.Deployment.GPUs(), "does not fit")
			continue
		}
		r := c.Result
		met := 100 * float64(r.Good) / float64(max(1, r.Completed+r.Failed))
		fmt.Fprintf(tw, "%d\t%s\t%d\t%.1f\t%.1f\t%.2f\t%.2f\t%.2f\t%.1f\t%.2f\t%.3f\t%.0f%%\t\n",
			c.Rank, c.Deployment, r.GPUs, ms(r.TTFT.Median), ms(r.TTFT.Percentile(99)), ms(r.TPOT.Median), ms(r.TPOT.Percentile(99)),
			ms(r.ITL.Percentile(99)), c.OutputPerGPU, r.Goodput, c.GoodputPerGPU, met)
	}
	return tw.Flush()
}

func ms(s float64) float64 { return s * 1e3 }

// HelmValues writes a deployment as values for deploy/helm/tandem: the
// mode and, for each role used, its groups, tp, device, the worker's
// batch and KV-cache settings the plan assumed (kvCacheDtype other than
// auto, enablePrefixCaching: false for --no-prefix-caching), and GPUs per
// pod. A group larger
// than a node spans whole nodes as a LeaderWorkerSet.
func HelmValues(w io.Writer, d simulator.Deployment, m *costmodel.Model, eng simulator.EngineOptions, kvCacheBytes float64, kvCacheDType string) error {
	device := "cuda"
	if m.HW.Kind == costmodel.KindCPU {
		device = "cpu"
	}
	maxBatch := eng.MaxBatchTokens
	if maxBatch <= 0 {
		maxBatch = 512
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# tandem plan: %s of %s on %s\n", d, m.Shape.Name, m.HW.Name)
	fmt.Fprintf(&b, "mode: %s\n", d.Mode)
	type role struct {
		name string
		p    simulator.Pool
	}
	roles := []role{{"unified", d.Unified}}
	if d.Mode == simulator.ModeDisaggregated {
		roles = []role{{"prefill", d.Prefill}, {"decode", d.Decode}}
	}
	for _, r := range roles {
		kv := kvCacheBytes
		if kv <= 0 {
			var err error
			if kv, err = m.KVCacheBytesPerRank(r.p.TP); err != nil {
				return err
			}
		}
		g := m.GroupOf(r.p.TP)
		fmt.Fprintf(&b, "%s:\n  groups: %d\n  tp: %d\n  device: %s\n", r.name, r.p.Groups, r.p.TP, device)
		if g.Nodes > 1 {
			fmt.Fprintf(&b, "  multiNode: true\n  nodesPerGroup: %d\n", g.Nodes)
		}
		fmt.Fprintf(&b, "  maxBatchTokens: %d\n  kvCacheMB: %d\n", maxBatch, int64(math.Floor(kv/(1<<20))))
		if kvCacheDType != "" && !strings.EqualFold(kvCacheDType, "auto") {
			fmt.Fprintf(&b, "  kvCacheDtype: %s\n", strings.ToLower(kvCacheDType))
		}
		if eng.DisablePrefixCaching {
			fmt.Fprintf(&b, "  enablePrefixCaching: false\n")
		}
		if device == "cuda" {
			fmt.Fprintf(&b, "  resources:\n    limits:\n      nvidia.com/gpu: %d\n", r.p.TP/g.Nodes)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
