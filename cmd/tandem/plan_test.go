package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var planBase = []string{"plan", "--input-len", "256", "--output-len", "32", "--num-prompts", "40", "--max-concurrency", "8"}

func planArgs(extra ...string) []string { return append(append([]string{}, planBase...), extra...) }

func TestPlanFlagErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"model_type": "llama"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown hardware", planArgs("--preset", "llama-160m", "--hardware", "h100", "--gpus", "2"), `--hardware: unknown hardware profile "h100" (known: a100-sxm, h100-sxm, h200, cpu)`},
		{"no hardware", planArgs("--preset", "llama-160m", "--gpus", "2"), "--hardware is required"},
		{"unknown preset", planArgs("--preset", "llama-7b", "--hardware", "h100-sxm", "--gpus", "2"), `--preset llama-7b: unknown model "llama-7b" (known: `},
		{"missing model dir", planArgs("--model", filepath.Join(dir, "none"), "--hardware", "h100-sxm", "--gpus", "2"), "--model " + filepath.Join(dir, "none")},
		{"bad config", planArgs("--model", dir, "--hardware", "h100-sxm", "--gpus", "2"), "--model " + dir + ": " + filepath.Join(dir, "config.json")},
		{"both models", planArgs("--model", dir, "--preset", "tiny", "--hardware", "cpu", "--gpus", "1"), "one of --model DIR or --preset NAME"},
		{"unknown link", planArgs("--preset", "llama-160m", "--hardware", "h100-sxm", "--gpus", "2", "--link", "ib-800g"), `--link: unknown link profile "ib-800g"`},
		{"no gpus", planArgs("--preset", "llama-160m", "--hardware", "h100-sxm"), "--gpus 0"},
		{"nodes not dividing", planArgs("--preset", "llama-160m", "--hardware", "h100-sxm", "--gpus", "8", "--nodes", "3"), "--nodes 3"},
		{"nodes too few", planArgs("--preset", "llama-160m", "--hardware", "h100-sxm", "--gpus", "16", "--nodes", "1"), "--nodes 1: 16 GPUs per node"},
		{"cpu nodes", planArgs("--preset", "llama-160m", "--hardware", "cpu", "--gpus", "2", "--nodes", "2"), "--nodes 2"},
		{"bad goodput key", planArgs("--preset", "llama-160m", "--hardware", "cpu", "--gpus", "1", "--goodput", "ttfb:5"), `--goodput "ttfb:5": unknown key "ttfb"`},
		{"bad goodput value", planArgs("--preset", "llama-160m", "--hardware", "cpu", "--gpus", "1", "--goodput", "ttft:-5"), `--goodput "ttft:-5"`},
		{"stray argument", planArgs("--preset", "llama-160m", "--hardware", "cpu", "--gpus", "1", "tpot:5"), `unexpected argument "tpot:5"`},
		{"zero rate", planArgs("--preset", "llama-160m", "--hardware", "cpu", "--gpus", "1", "--request-rate", "0"), "--request-rate 0"},
		{"bad mode", planArgs("--preset", "llama-160m", "--hardware", "cpu", "--gpus", "1", "--mode", "colocated"), `--mode "colocated"`},
		{"no input len", []string{"plan", "--preset", "tiny", "--hardware", "cpu", "--gpus", "1", "--output-len", "4"}, "--input-len 0"},
		{"missing calibration", planArgs("--preset", "llama-160m", "--hardware", "cpu", "--gpus", "1", "--calibration", filepath.Join(dir, "cal.json")), "--calibration: open "},
		{"nothing fits", planArgs("--preset", "llama-3.1-70b", "--hardware", "h100-sxm", "--gpus", "1"), "no deployment fits"},
		{"bad KV cache dtype", planArgs("--preset", "llama-160m", "--hardware", "cpu", "--gpus", "1", "--kv-cache-dtype", "fp8"), `--kv-cache-dtype: KV cache dtype "fp8": want auto, fp32, bf16 or fp16`},
		{"negative prefix", planArgs("--preset", "llama-160m", "--hardware", "cpu", "--gpus", "1", "--prefix-len", "-4"), "--prefix-len -4"},
		{"too many prefixes", planArgs("--preset", "llama-160m", "--hardware", "cpu", "--gpus", "1", "--prefix-len", "64", "--num-prefixes", "41"), "--num-prefixes 41: want 1 to --num-prompts (40)"},
		{"negative threads", planArgs("--preset", "llama-160m", "--hardware", "cpu", "--gpus", "1", "--threads", "-1"), "--threads not negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runTandem(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestPlanRanksAndWritesHelmValues(t *testing.T) {
	out, err := runTandem(t, planArgs("--preset", "Llama-3.2-1B", "--hardware", "h100-sxm", "--gpus", "4",
		"--goodput", "ttft:200", "tpot:20", "--top", "0")...)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"llama-3.2-1b on up to 4 × h100-sxm", "SLO ttft ≤ 200 ms, tpot ≤ 20 ms", "GOODPUT/GPU",
		"unified 4×TP1", "prefill 1×TP2 + decode 1×TP2", "Winner: ", "mode: ", "device: cuda", "nvidia.com/gpu: "} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestPlanJSON(t *testing.T) {
	out, err := runTandem(t, planArgs("--preset", "llama-160m", "--hardware", "cpu", "--gpus", "2", "--json", "--goodput", "ttft:2000,tpot:400")...)
	if err != nil {
		t.Fatal(err)
	}
	var j struct {
		Model       string
		GPUs        int                `json:"gpus"`
		SLO         map[string]float64 `json:"goodput_slo_ms"`
		Deployments []struct {
			Rank       int
			GPUs       int `json:"gpus"`
			Deployment struct{ Mode string }
			Goodput    float64            `json:"goodput_per_gpu"`
			Metrics    map[string]float64 `json:"metrics"`
		}
		Winner     struct{ Mode string }
		HelmValues string `json:"helm_values"`
	}
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	// On 2 ranks: unified 1×TP1, 2×TP1, 1×TP2, and prefill 1×TP1 + decode 1×TP1.
	if j.Model != "llama-160m" || j.GPUs != 2 || len(j.Deployments) != 4 || j.SLO["ttft"] != 2000 || j.SLO["tpot"] != 400 {
		t.Fatalf("model %q, gpus %d, %d deployments, SLO %v", j.Model, j.GPUs, len(j.Deployments), j.SLO)
	}
	for i, d := range j.Deployments {
		if d.Rank != i+1 || d.Metrics["completed"] != 40 || d.Metrics["median_ttft_ms"] <= 0 || d.Metrics["p99_tpot_ms"] <= 0 {
			t.Errorf("deployment %d: rank %d, metrics %v", i, d.Rank, d.Metrics)
		}
		if i > 0 && d.Goodput > j.Deployments[i-1].Goodput {
			t.Errorf("rank %d has more goodput per GPU (%g) than rank %d", d.Rank, d.Goodput, i)
		}
	}
	if j.Winner.Mode != j.Deployments[0].Deployment.Mode || !strings.Contains(j.HelmValues, "device: cpu") {
		t.Errorf("winner %v, helm values %q", j.Winner, j.HelmValues)
	}
	// A shared prefix: every deployment takes its whole blocks from the
	// cache but for each group's first prompt of it.
	out, err = runTandem(t, planArgs("--preset", "llama-160m", "--hardware", "cpu", "--gpus", "2", "--json", "--prefix-len", "100")...)
	if err != nil {
		t.Fatal(err)
	}
	j.Deployments = nil
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatal(err)
	}
	for _, d := range j.Deployments {
		if hits := d.Metrics["prefix_cache_hits"]; hits < 38*96 || hits > 39*96 {
			t.Errorf("deployment %d: %g prompt tokens from the prefix cache, want 38 or 39 × 96", d.Rank, hits)
		}
	}
}

func TestPlanCalibrateAndValidate(t *testing.T) {
	const run = "../../calibration/testdata/compare-llama-160m-tp1-2.json"
	cal := filepath.Join(t.TempDir(), "cal.json")
	out, err := runTandem(t, "plan", "calibrate", "--from", run, "--out", cal, "--sweeps", "2")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"fitted on 4 cases", "compute_ms_per_token", "median_ttft_ms", `"memory":`, "wrote " + cal} {
		if !strings.Contains(out, want) {
			t.Errorf("calibrate output lacks %q:\n%s", want, out)
		}
	}
	out, err = runTandem(t, "plan", "validate", "--from", run, "--calibration", cal, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Rows []struct {
			Case, Metric        string
			Predicted, Measured float64
			RelError            float64 `json:"rel_error"`
		}
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range v.Rows {
		seen[r.Metric] = true
		if r.Measured > 1 && r.RelError != (r.Predicted-r.Measured)/r.Measured {
			t.Errorf("%s %s: relative error %g of %g against %g", r.Case, r.Metric, r.RelError, r.Predicted, r.Measured)
		}
	}
	for _, k := range []string{"median_ttft_ms", "median_tpot_ms", "p99_ttft_ms", "output_throughput", "allreduce_ms_per_token"} {
		if !seen[k] {
			t.Errorf("validate reports no %s", k)
		}
	}
	// A background load measured while the run ran slows the shared CPU
	// down: every latency predicted grows.
	out, err = runTandem(t, "plan", "validate", "--from", run, "--calibration", cal, "--json", "--background-load", filepath.Base(run)+"=4")
	if err != nil {
		t.Fatal(err)
	}
	var busy struct {
		Rows []struct {
			Case, Metric string
			Predicted    float64
		}
	}
	if err := json.Unmarshal([]byte(out), &busy); err != nil {
		t.Fatal(err)
	}
	for i, r := range busy.Rows {
		if r.Metric == "median_ttft_ms" && r.Predicted <= v.Rows[i].Predicted {
			t.Errorf("%s: TTFT %g ms with 4 background threads, %g ms without", r.Case, r.Predicted, v.Rows[i].Predicted)
		}
	}
	// The plan itself takes the calibration.
	out, err = runTandem(t, planArgs("--preset", "llama-160m", "--hardware", "cpu", "--gpus", "2", "--calibration", cal)...)
	if err != nil || !strings.Contains(out, "efficiency: calibrated ("+cal+")") {
		t.Errorf("plan --calibration: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"plan", "calibrate"}, "--from is required"},
		{[]string{"plan", "calibrate", "--from", t.TempDir()}, "no tandem bench compare report"},
		{[]string{"plan", "calibrate", "--from", run, "--hardware", "tpu"}, `--hardware: unknown hardware profile "tpu"`},
		{[]string{"plan", "validate", "--from", run, "--calibration", run}, "--calibration: "},
		{[]string{"plan", "validate", "--from", run, "--background-load", "-1"}, `--background-load "-1": want 0 or more`},
		{[]string{"plan", "calibrate", "--from", run, "--background-load", "NaN"}, `--background-load "NaN": want 0 or more`},
		{[]string{"plan", "validate", "--from", run, "--background-load", "other.json=1"}, "--background-load other.json: no report of that name"},
		{planArgs("--preset", "llama-160m", "--hardware", "h100-sxm", "--gpus", "2", "--calibration", cal), "was fitted on cpu, not --hardware h100-sxm"},
	} {
		if _, err := runTandem(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}
