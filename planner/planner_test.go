package planner

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/tandemllm/tandem/costmodel"
	"github.com/tandemllm/tandem/simulator"
)

func cost(t *testing.T, model, hw, link string) *costmodel.Model {
	t.Helper()
	c, name, err := LoadModel("", model)
	if err != nil {
		t.Fatal(err)
	}
	h, err := costmodel.HardwareByName(hw)
	if err != nil {
		t.Fatal(err)
	}
	l, err := costmodel.LinkByName(link)
	if err != nil {
		t.Fatal(err)
	}
	s, err := costmodel.NewShape(name, c, h.Kind, costmodel.DTypes{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := costmodel.New(s, h, l, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLoadModel(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		layers, hidden, vocab int
	}{
		{"Llama-3.1-8B", 32, 4096, 128256},
		{"llama-3.2-1b", 16, 2048, 128256},
		{"LLAMA-3.1-70B", 80, 8192, 128256},
		{"llama-160m", 12, 1024, 50257},
	} {
		c, _, err := LoadModel("", tc.name)
		if err != nil {
			t.Fatal(err)
		}
		if c.Layers != tc.layers || c.Hidden != tc.hidden || c.VocabSize != tc.vocab {
			t.Errorf("%s: %d layers, hidden %d, vocab %d", tc.name, c.Layers, c.Hidden, c.VocabSize)
		}
	}
	// Published parameter counts: 8.03B and 1.24B.
	for name, want := range map[string]float64{"Llama-3.1-8B": 8.03e9, "Llama-3.2-1B": 1.24e9, "Llama-3.1-70B": 70.6e9} {
		c, _, _ := LoadModel("", name)
		if got := float64(c.Params()); got < want*0.99 || got > want*1.01 {
			t.Errorf("%s has %.4g parameters, want %.4g", name, got, want)
		}
	}
	_, _, err := LoadModel("", "llama-7b")
	if !errors.Is(err, ErrUnknownModel) || !strings.Contains(err.Error(), "Llama-3.1-8B") && !strings.Contains(err.Error(), "llama-3.1-8b") {
		t.Errorf("unknown name: %v, want ErrUnknownModel listing the shapes", err)
	}
}

// Deployments on 8 GPUs: every unified pool g×t ≤ 8 and every prefill
// and decode pool pair that fits, for the TP degrees the model splits over.
func TestDeploymentsFitTheGPUs(t *testing.T) {
	m := cost(t, "Llama-3.1-8B", "h100-sxm", "ib-400g")
	ds := Deployments(Options{Cost: m, GPUs: 8, TPs: []int{1, 2, 3, 4, 8}})
	unified, disagg := 0, 0
	for _, d := range ds {
		if d.GPUs() > 8 {
			t.Errorf("%s uses %d GPUs", d, d.GPUs())
		}
		for _, p := range []simulator.Pool{d.Unified, d.Prefill, d.Decode} {
			if p.TP == 3 {
				t.Errorf("%s: TP 3 does not split 32 heads", d)
			}
		}
		if d.Mode == simulator.ModeUnified {
			unified++
		} else {
			disagg++
		}
	}
	// Unified: TP1 ×1..8, TP2 ×1..4, TP4 ×1..2, TP8 ×1 = 15.
	// Disaggregated (np·p + nd·d ≤ 8): (1,1) 28, (1,2) 12, (2,1) 12,
	// (1,4) 4, (4,1) 4, (2,2) 6, (2,4) 2, (4,2) 2, (4,4) 1 = 71.
	if unified != 15 || disagg != 71 {
		t.Errorf("%d unified and %d disaggregated deployments, want 15 and 71", unified, disagg)
	}
	// Two 8-GPU nodes: a TP-16 group spans both; TP 12 would not fill whole nodes.
	ds = Deployments(Options{Cost: m, GPUs: 16, TPs: []int{16}, Modes: []string{simulator.ModeUnified}})
	if len(ds) != 1 || ds[0].Unified.TP != 16 {
		t.Errorf("16 GPUs, TP 16: %v", ds)
	}
}

func TestPlanRanksByGoodputPerGPU(t *testing.T) {
	m := cost(t, "Llama-3.2-1B", "h100-sxm", "ib-400g")
	var calls int
	cands, err := Plan(context.Background(), Options{Cost: m, GPUs: 4, TPs: []int{1, 2, 4},
		Workload: simulator.Workload{NumPrompts: 60, InputLen: 512, OutputLen: 64, RequestRate: 30, Seed: 1},
		SLO:      simulator.SLO{TTFT: 0.2, TPOT: 0.02},
		Progress: func(done, total int) { calls++ }})
	if err != nil {
		t.Fatal(err)
	}
	if calls != len(cands) {
		t.Errorf("progress called %d times for %d deployments", calls, len(cands))
	}
	for i, c := range cands {
		if c.Rank != i+1 || c.Result == nil {
			t.Fatalf("candidate %d: rank %d, result %v (%s)", i, c.Rank, c.Result, c.Skipped)
		}
		if i > 0 && c.GoodputPerGPU > cands[i-1].GoodputPerGPU {
			t.Errorf("rank %d (%s) beats rank %d on goodput per GPU", c.Rank, c.Deployment, c.Rank-1)
		}
		if want := c.Result.Goodput / float64(c.Deployment.GPUs()); c.GoodputPerGPU != want {
			t.Errorf("%s: goodput per GPU %g, want %g", c.Deployment, c.GoodputPerGPU, want)
		}
	}
}

func TestHelmValues(t *testing.T) {
	m := cost(t, "Llama-3.1-70B", "h100-sxm", "ib-400g")
	var b strings.Builder
	d := simulator.Deployment{Mode: simulator.ModeDisaggregated, Prefill: simulator.Pool{Groups: 2, TP: 4}, Decode: simulator.Pool{Groups: 1, TP: 16}}
	if err := HelmValues(&b, d, m, simulator.EngineOptions{}, 0, "auto"); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"mode: disaggregated\n", "prefill:\n  groups: 2\n  tp: 4\n  device: cuda\n",
		"decode:\n  groups: 1\n  tp: 16\n  device: cuda\n  multiNode: true\n  nodesPerGroup: 2\n", "nvidia.com/gpu: 8\n", "nvidia.com/gpu: 4\n", "maxBatchTokens: 512\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("values lack %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "unified:") || strings.Contains(out, "kvCacheDtype") || strings.Contains(out, "enablePrefixCaching") {
		t.Errorf("disaggregated values carry a unified block:\n%s", out)
	}
	cpu := cost(t, "llama-160m", "cpu", "loopback")
	b.Reset()
	if err := HelmValues(&b, simulator.Deployment{Mode: simulator.ModeUnified, Unified: simulator.Pool{Groups: 1, TP: 2}}, cpu, simulator.EngineOptions{DisablePrefixCaching: true}, 0, "BF16"); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); !strings.Contains(out, "device: cpu\n") || !strings.Contains(out, "kvCacheMB: 512\n") || strings.Contains(out, "nvidia.com/gpu") ||
		!strings.Contains(out, "  kvCacheDtype: bf16\n") || !strings.Contains(out, "  enablePrefixCaching: false\n") {
		t.Errorf("cpu values:\n%s", out)
	}
}
