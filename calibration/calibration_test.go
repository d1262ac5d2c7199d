package calibration

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tandemllm/tandem/costmodel"
	"github.com/tandemllm/tandem/simulator"
)

const fixture = "testdata/compare-llama-160m-tp1-2.json"

func cpu(t *testing.T) costmodel.Hardware {
	t.Helper()
	hw, err := costmodel.HardwareByName("cpu")
	if err != nil {
		t.Fatal(err)
	}
	return hw
}

// A real `tandem bench compare` report (llama-160m, TP 1 and 2, unified
// and disaggregated, 4 requests of 128 → 16 tokens at concurrency 2)
// becomes four cases with the deployments its tandem up arguments name.
func TestLoadCases(t *testing.T) {
	cases, err := LoadCases(fixture)
	if err != nil {
		t.Fatal(err)
	}
	want := []simulator.Deployment{
		{Mode: simulator.ModeUnified, Unified: simulator.Pool{Groups: 1, TP: 1}},
		{Mode: simulator.ModeUnified, Unified: simulator.Pool{Groups: 1, TP: 2}},
		{Mode: simulator.ModeDisaggregated, Prefill: simulator.Pool{Groups: 1, TP: 1}, Decode: simulator.Pool{Groups: 1, TP: 1}},
		{Mode: simulator.ModeDisaggregated, Prefill: simulator.Pool{Groups: 1, TP: 2}, Decode: simulator.Pool{Groups: 1, TP: 2}},
	}
	if len(cases) != len(want) {
		t.Fatalf("%d cases, want %d", len(cases), len(want))
	}
	for i, c := range cases {
		if c.Deployment != want[i] || c.Model != "llama-160m" || c.Workload.MaxConcurrency != 2 || len(c.Workload.Requests) != 4 {
			t.Errorf("case %s: %+v, model %s, concurrency %d, %d requests", c.Name, c.Deployment, c.Model, c.Workload.MaxConcurrency, len(c.Workload.Requests))
		}
		if r := c.Workload.Requests[0]; r.Input != 128 || r.Output != 16 {
			t.Errorf("case %s: first request %+v, want 128 → 16", c.Name, r)
		}
		for _, k := range []string{"median_ttft_ms", "median_tpot_ms", "compute_ms_per_token"} {
			if c.Measured[k] <= 0 {
				t.Errorf("case %s: measured %s = %g", c.Name, k, c.Measured[k])
			}
		}
	}
	// A directory is read whole; other JSON files in it are skipped.
	dir := t.TempDir()
	b, _ := os.ReadFile(fixture)
	os.WriteFile(filepath.Join(dir, "a.json"), b, 0o644)
	os.WriteFile(filepath.Join(dir, "calibration-cpu.json"), []byte(`{"hardware": "cpu"}`), 0o644)
	if cs, err := LoadCases(dir); err != nil || len(cs) != 4 {
		t.Errorf("directory: %d cases, %v", len(cs), err)
	}
	if _, err := LoadCases(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no tandem bench compare report") {
		t.Errorf("empty directory: %v", err)
	}
}

// fixtureCases loads the cases of the fixture report after edit has
// changed its JSON.
func fixtureCases(t *testing.T, edit func(rep map[string]any)) []Case {
	t.Helper()
	b, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatal(err)
	}
	var rep map[string]any
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	edit(rep)
	file := filepath.Join(t.TempDir(), "report.json")
	if b, err = json.Marshal(rep); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cases, err := LoadCases(file)
	if err != nil {
		t.Fatal(err)
	}
	return cases
}

// A prefix_repetition run replays with its prompts' prefixes: dealt
// round-robin over the dataset's prefixes, new ones each round.
func TestLoadCasesWithPrefixes(t *testing.T) {
	cases := fixtureCases(t, func(rep map[string]any) {
		w := rep["workload"].(map[string]any)
		w["dataset_name"], w["prefix_repetition_prefix_len"], w["prefix_repetition_num_prefixes"] = "prefix_repetition", 100, 2
		rep["rounds"] = 2
	})
	for _, c := range cases {
		var got []int
		for _, r := range c.Workload.Requests {
			if r.PrefixLen != 100 {
				t.Errorf("case %s: request %+v, want a 100-token prefix", c.Name, r)
			}
			got = append(got, r.Prefix)
		}
		if !slices.Equal(got, []int{1, 2, 3, 4}) {
			t.Errorf("case %s: prefixes %v, want 1, 2 in the first round and 3, 4 in the second", c.Name, got)
		}
	}
}

// A compare result merges its rounds' (and their halves') runs; the
// request IDs name each run, and each becomes a block of its own.
func TestRunBlocks(t *testing.T) {
	for _, c := range []struct {
		name string
		ids  []string
		n    int
		want []int
	}{
		{"halves", []string{"b-x-r0h0-p0-0", "b-x-r0h0-p0-1", "b-x-r0h1-p0-0", "b-x-r0h1-p0-1", "b-x-r1h0-p0-0"}, 5, []int{0, 0, 1, 1, 2}},
		{"rounds", []string{"b-x-r0-p0-9", "b-x-r0-p0-10", "b-x-r1-p0-0"}, 3, []int{0, 0, 1}},
		{"one run", []string{"x-0", "x-1", "x-2"}, 3, []int{0, 0, 0}},
		{"no IDs", nil, 2, []int{0, 0}},
	} {
		if got := runBlocks(c.ids, c.n); !slices.Equal(got, c.want) {
			t.Errorf("%s: blocks %v, want %v", c.name, got, c.want)
		}
	}
	cases := fixtureCases(t, func(rep map[string]any) {
		for _, p := range rep["points"].([]any) {
			for _, cp := range p.(map[string]any)["configurations"].([]any) {
				res := cp.(map[string]any)["result"].(map[string]any)
				res["request_ids"] = []string{"b-r0h0-p0-0", "b-r0h0-p0-1", "b-r0h1-p0-0", "b-r0h1-p0-1"}
			}
		}
	})
	for _, c := range cases {
		var got []int
		for _, r := range c.Workload.Requests {
			got = append(got, r.Block)
		}
		if !slices.Equal(got, []int{0, 0, 1, 1}) {
			t.Errorf("case %s: blocks %v, want 0, 0, 1, 1", c.Name, got)
		}
	}
}

// Compare restarts a configuration's cluster before each of its blocks
// but where its A B B A schedule runs it twice in a row; the replay reads
// which from the request IDs and the configuration's place.
func TestFreshBlocks(t *testing.T) {
	ids := func(runs ...string) []string {
		var out []string
		for _, r := range runs {
			out = append(out, "b-x-"+r+"-0", "b-x-"+r+"-1")
		}
		return out
	}
	halves := ids("r0h0-p0", "r0h1-p0", "r1h0-p0", "r1h1-p0")
	for _, c := range []struct {
		name        string
		ids         []string
		side, sides int
		want        []bool
	}{
		{"first of 4", halves, 0, 4, []bool{true, true, false, true}},
		{"second of 4", halves, 1, 4, []bool{true, true, true, true}},
		{"last of 4", halves, 3, 4, []bool{true, false, true, false}},
		{"first of 2", halves, 0, 2, []bool{true, true, false, true}},
		{"last of 2", halves, 1, 2, []bool{true, false, true, false}},
		{"alone", halves, 0, 1, []bool{true, false, false, false}},
		{"one prompt a round, first of 2", ids("r0h0-p0", "r1h0-p0", "r2h0-p0"), 0, 2, []bool{true, true, false}},
		{"one prompt a round, last of 2", ids("r0h0-p0", "r1h0-p0", "r2h0-p0"), 1, 2, []bool{true, false, true}},
		{"second load point", ids("r0h0-p1", "r0h1-p1"), 1, 4, []bool{false, false}},
		{"older IDs, 2 configurations", ids("r0-p0", "r1-p0"), 0, 2, []bool{true, true}},
		{"older IDs, alone", ids("r0-p0", "r1-p0"), 0, 1, []bool{false, false}},
	} {
		got := freshBlocks(c.ids, runBlocks(c.ids, len(c.ids)), c.side, c.sides)
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: fresh %v, want %v", c.name, got, c.want)
		}
	}

	// Read from a report: the first request of each block says it.
	cases := fixtureCases(t, func(rep map[string]any) {
		for _, p := range rep["points"].([]any) {
			for _, cp := range p.(map[string]any)["configurations"].([]any) {
				name := cp.(map[string]any)["name"].(string)
				var ids []string
				for _, r := range []string{"r0h0", "r0h1", "r1h0", "r1h1"} {
					ids = append(ids, "b-"+name+"-"+r+"-p0-0")
				}
				cp.(map[string]any)["result"].(map[string]any)["request_ids"] = ids
			}
		}
	})
	want := map[string][]bool{ // the fixture's order: unified-tp1, unified-tp2, disagg-tp1, disagg-tp2
		"unified-tp1": {true, true, false, true}, "unified-tp2": {true, true, true, true},
		"disagg-tp1": {true, true, true, true}, "disagg-tp2": {true, false, true, false},
	}
	for _, c := range cases {
		var got []bool
		for _, r := range c.Workload.Requests {
			got = append(got, r.Restart)
		}
		name, _, _ := strings.Cut(c.Name, " @ ")
		if !slices.Equal(got, want[name]) {
			t.Errorf("case %s: restarts %v, want %v", c.Name, got, want[name])
		}
	}
	if len(cases) != len(want) {
		t.Errorf("%d cases, want %d", len(cases), len(want))
	}
}

func TestDeploymentOf(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    simulator.Deployment
		link    string
		threads int
		kv      string
		err     string
	}{
		{[]string{"--mode", "unified", "--tp", "4", "--groups", "2"}, simulator.Deployment{Mode: "unified", Unified: simulator.Pool{Groups: 2, TP: 4}}, "", 0, "", ""},
		{[]string{"--prefill-tp=1", "--decode-tp", "4", "--decode-groups", "2", "--link", "eth-25g"},
			simulator.Deployment{Mode: "disaggregated", Prefill: simulator.Pool{Groups: 1, TP: 1}, Decode: simulator.Pool{Groups: 2, TP: 4}}, "eth-25g", 0, "", ""},
		{[]string{}, simulator.Deployment{Mode: "disaggregated", Prefill: simulator.Pool{Groups: 1, TP: 2}, Decode: simulator.Pool{Groups: 1, TP: 2}}, "", 0, "", ""},
		{[]string{"--mode", "unified", "--tp", "1", "--threads", "2", "--kv-cache-dtype", "bf16", "--no-prefix-caching"},
			simulator.Deployment{Mode: "unified", Unified: simulator.Pool{Groups: 1, TP: 1}}, "", 2, "bf16", ""},
		{[]string{"--mode", "colocated"}, simulator.Deployment{}, "", 0, "", `--mode "colocated"`},
		{[]string{"--tp", "0"}, simulator.Deployment{}, "", 0, "", "--tp"},
		{[]string{"--threads", "x"}, simulator.Deployment{}, "", 0, "", "--threads"},
		{[]string{"--kv-cache-dtype", "fp8"}, simulator.Deployment{}, "", 0, "", `--kv-cache-dtype: KV cache dtype "fp8"`},
	} {
		up, err := deploymentOf(tc.args)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: error %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || up.d != tc.want || up.link != tc.link || up.eng.Threads != tc.threads || up.kvDType != tc.kv ||
			up.eng.DisablePrefixCaching != slices.Contains(tc.args, "--no-prefix-caching") {
			t.Errorf("%v: %+v %v, want %+v %q threads %d kv %q", tc.args, up, err, tc.want, tc.link, tc.threads, tc.kv)
		}
	}
}

// synthetic cases: "measured" figures are the simulator's own under
// known factors, so a fit from the priors must find them again.
func synthetic(t *testing.T, truth costmodel.Efficiency) []Case {
	t.Helper()
	var cases []Case
	for _, d := range []simulator.Deployment{
		{Mode: simulator.ModeUnified, Unified: simulator.Pool{Groups: 1, TP: 1}},
		{Mode: simulator.ModeUnified, Unified: simulator.Pool{Groups: 1, TP: 2}},
		{Mode: simulator.ModeDisaggregated, Prefill: simulator.Pool{Groups: 1, TP: 1}, Decode: simulator.Pool{Groups: 1, TP: 2}},
	} {
		for _, in := range []int{64, 384} {
			reqs := make([]simulator.Request, 8)
			for i := range reqs {
				reqs[i] = simulator.Request{Input: in + 7*i, Output: 12}
			}
			cases = append(cases, Case{Name: d.String(), Model: "llama-160m", Link: "eth-25g", Deployment: d,
				Workload: simulator.Workload{Requests: reqs, MaxConcurrency: 3}})
		}
	}
	r, err := newReplay(cases, cpu(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := range cases {
		if cases[i].Measured, err = r.predict(i, truth); err != nil {
			t.Fatal(err)
		}
	}
	return cases
}

func TestFitRecoversKnownFactors(t *testing.T) {
	hw := cpu(t)
	truth := hw.Efficiency
	truth.Memory, truth.Compute, truth.StepOverhead = 0.45, 0.3, 4e-3
	truth.CollectiveLatency, truth.CollectiveSkew, truth.SamplePerLogit, truth.RequestOverhead = 30, 0.4, 5e-9, 2e-3
	cases := synthetic(t, truth)
	cal, err := Fit(context.Background(), cases, hw, FitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range cal.Fit {
		if f.P90Rel > 0.03 {
			t.Errorf("%s: %.1f%% of error left at P90 on data the model made itself", f.Component, 100*f.P90Rel)
		}
	}
	got := cal.Efficiency
	for _, p := range []struct {
		name       string
		got, truth float64
	}{{"memory", got.Memory, truth.Memory}, {"compute", got.Compute, truth.Compute}, {"sample_per_logit", got.SamplePerLogit, truth.SamplePerLogit}} {
		if math.Abs(p.got/p.truth-1) > 0.1 {
			t.Errorf("%s fitted to %.4g, truth %.4g", p.name, p.got, p.truth)
		}
	}
	// The priors are worse than the fit on the same data.
	_, priorErr, err := Validate(cases, hw, hw.Efficiency)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range priorErr {
		if f.Component == "median_tpot_ms" && f.MedianRel < 0.1 {
			t.Errorf("the priors predict TPOT within %.1f%%: the synthetic truth is too close to them to test the fit", 100*f.MedianRel)
		}
	}
}

// A background load measured while the runs ran is kept, not searched:
// the other factors are fitted around it.
func TestFitKeepsAGivenBackgroundLoad(t *testing.T) {
	hw := cpu(t)
	truth := hw.Efficiency
	truth.Memory, truth.Compute, truth.BackgroundLoad = 0.45, 0.3, 1.5
	cases := synthetic(t, truth)
	bg := 1.5
	cal, err := Fit(context.Background(), cases, hw, FitOptions{Sweeps: 3, BackgroundLoad: &bg})
	if err != nil {
		t.Fatal(err)
	}
	if got := cal.Efficiency; got.BackgroundLoad != 1.5 || math.Abs(got.Compute/truth.Compute-1) > 0.1 {
		t.Errorf("background load %g (given 1.5), compute %.4g (truth %.4g)", got.BackgroundLoad, got.Compute, truth.Compute)
	}
}

func TestValidateRelativeErrors(t *testing.T) {
	hw := cpu(t)
	cases := synthetic(t, hw.Efficiency)[:2]
	for i := range cases {
		for k, v := range cases[i].Measured {
			cases[i].Measured[k] = v * 1.25 // measured a quarter above the prediction
		}
	}
	rows, sum, err := Validate(cases, hw, hw.Efficiency)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		t.Fatal("no rows")
	}
	for _, r := range rows {
		if math.IsNaN(r.RelError) {
			continue
		}
		if math.Abs(r.RelError+0.2) > 1e-9 {
			t.Errorf("%s %s: relative error %g, want −0.2", r.Case, r.Metric, r.RelError)
		}
	}
	for _, f := range sum {
		if math.Abs(f.MedianRel-0.2) > 1e-9 {
			t.Errorf("%s: median error %g, want 0.2", f.Component, f.MedianRel)
		}
	}
}

// The fixture's own fit: the search only ever lowers the loss.
func TestFitOnARealRunLowersTheLoss(t *testing.T) {
	cases, err := LoadCases(fixture)
	if err != nil {
		t.Fatal(err)
	}
	hw := cpu(t)
	r, err := newReplay(cases, hw)
	if err != nil {
		t.Fatal(err)
	}
	before, err := r.objective(hw.Efficiency)
	if err != nil {
		t.Fatal(err)
	}
	var losses []float64
	cal, err := Fit(context.Background(), cases, hw, FitOptions{Sweeps: 2, Progress: func(_ int, l float64) { losses = append(losses, l) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(losses) != 2 || losses[0] > before || losses[1] > losses[0] {
		t.Errorf("loss %g before, then %v: want it never to rise", before, losses)
	}
	if cal.Hardware != "cpu" || len(cal.Fit) < 6 {
		t.Errorf("calibration for %q with %d fit errors", cal.Hardware, len(cal.Fit))
	}
	path := filepath.Join(t.TempDir(), "cal.json")
	if err := cal.Save(path); err != nil {
		t.Fatal(err)
	}
	back, err := costmodel.LoadCalibration(path)
	if err != nil || back.Efficiency != cal.Efficiency {
		t.Errorf("saved and loaded: %+v, %v", back, err)
	}
}
