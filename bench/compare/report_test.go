package compare

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandemllm/tandem/bench"
	"github.com/tandemllm/tandem/model"
)

// side is a configuration with TTFTs (seconds) by round at one load
// point.
func side(name string, rounds [][]float64) *Side {
	s := &Side{Configuration: Configuration{Name: name}}
	var smp []*Sample
	for _, r := range rounds {
		smp = append(smp, &Sample{Result: &bench.Result{Samples: map[string][]float64{bench.TTFT: r}, OutputThroughput: 1}})
	}
	s.Samples = [][]*Sample{smp}
	return s
}

// ttfts draws rounds of n TTFTs around 100 ms, plus shift.
func ttfts(rng *rand.Rand, rounds, n int, shift float64) [][]float64 {
	out := make([][]float64, rounds)
	for r := range out {
		for range n {
			out[r] = append(out[r], 0.1+0.01*rng.NormFloat64()+shift)
		}
	}
	return out
}

// TestPercentileVerdict: a P99 difference, however clear, reads "not
// enough samples" with fewer than stats.PercentileSamples(99) requests
// a side, and gets its verdict with more; the mean's verdict needs no
// more than the rounds.
func TestPercentileVerdict(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tt := range []struct {
		n        int
		p99, avg string
	}{
		{21, "not enough samples (P99 needs 500 a side, has 63)", "b higher"},
		{200, "b higher", "b higher"},
	} {
		a, b := side("a", ttfts(rng, 3, tt.n, 0)), side("b", ttfts(rng, 3, tt.n, 0.05))
		got := map[string]Difference{}
		for _, d := range differences(a, b, 0, 3, DefaultConfidence) {
			got[d.Metric] = d
		}
		if d := got["p99_ttft_ms"]; d.Verdict != tt.p99 || d.Samples != 3*tt.n || !(d.Lo > 0) {
			t.Errorf("%d a round: P99 %+v, want verdict %q", tt.n, d, tt.p99)
		}
		if d := got["mean_ttft_ms"]; d.Verdict != tt.avg {
			t.Errorf("%d a round: mean %+v, want verdict %q", tt.n, d, tt.avg)
		}
	}
}

// TestComparisons: differences from the first configuration, from
// --baseline, or between every pair with --pairwise.
func TestComparisons(t *testing.T) {
	sides := []*Side{side("a", nil), side("b", nil), side("c", nil)}
	for _, tt := range []struct {
		c    Config
		want string
	}{
		{Config{}, "b-a c-a"},
		{Config{Baseline: "b"}, "a-b c-b"},
		{Config{Pairwise: true}, "b-a c-a c-b"},
	} {
		var got []string
		for _, p := range comparisons(tt.c, sides) {
			got = append(got, p[1].Name+"-"+p[0].Name)
		}
		if strings.Join(got, " ") != tt.want {
			t.Errorf("%+v: %v, want %s", tt.c, got, tt.want)
		}
	}
	for _, c := range []Config{{Baseline: "d", TPs: "1,2"}, {Baseline: "unified-tp1", Pairwise: true, TPs: "1,2"}} {
		if _, err := c.Configurations(); err == nil || !strings.Contains(err.Error(), "--baseline") {
			t.Errorf("%+v: %v, want an error naming --baseline", c, err)
		}
	}
}

// TestCacheDType: the KV cache dtype a local cluster runs with, from
// its tandem up flags and its weights.
func TestCacheDType(t *testing.T) {
	f32, bf16, f16 := &model.Config{TorchDType: "float32"}, &model.Config{TorchDType: "bfloat16"}, &model.Config{TorchDType: "float16"}
	for _, tt := range []struct {
		args []string
		m    *model.Config
		want string
	}{
		{nil, f32, "fp32"},
		{nil, bf16, "bf16"},
		{nil, f16, "fp16"},
		{[]string{"--kv-cache-dtype", "half"}, f32, "fp16"},
		{[]string{"--kv-cache-dtype", "fp32"}, f16, "fp32"},
		{[]string{"--kv-cache-dtype", "bf16"}, f32, "bf16"},
		{[]string{"--kv-cache-dtype=fp32"}, bf16, "fp32"},
		{[]string{"--kv-cache-dtype", "bf16", "--kv-cache-dtype", "auto"}, f32, "fp32"},
		{[]string{"--device", "cuda"}, f32, "bf16"},
		{[]string{"--device", "auto"}, f32, UnknownDType},
		{nil, &model.Config{}, UnknownDType},
	} {
		if got := cacheDType(tt.args, tt.m); got != tt.want {
			t.Errorf("%v, weights %s: %s, want %s", tt.args, tt.m.TorchDType, got, tt.want)
		}
	}
	if b := fmt.Sprint(KVElementBytes("fp32"), KVElementBytes("bf16"), KVElementBytes("fp16"), KVElementBytes(UnknownDType)); b != "4 2 2 NaN" {
		t.Errorf("element bytes %s", b)
	}
}

// TestReadOldReport: a report saved before the workload took vLLM's
// key names (and before configurations named their KV cache dtype) is
// read and saved again with snake_case keys, the dtype resolved, null
// figures read back as no figure; its charts are drawn.
func TestReadOldReport(t *testing.T) {
	dir := t.TempDir()
	c := Config{ResultDir: dir, ResultFilename: "new.json", Plot: filepath.Join(dir, "plots")}
	rep, err := Resave(c, "testdata/old-report.json", &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Workload.NumPrompts != 32 || rep.Workload.MaxConcurrency != "1,4,16" || rep.Workload.Seed != 1 {
		t.Errorf("workload %+v", rep.Workload)
	}
	for _, cf := range rep.Configurations {
		if cf.KVCacheDType != "fp32" {
			t.Errorf("%s: KV cache dtype %q, want fp32 (llama-160m's float32 weights)", cf.Name, cf.KVCacheDType)
		}
	}
	if kv := rep.Points[0].Configs[0].Cost.KVBytes; !math.IsNaN(float64(kv)) {
		t.Errorf("unified KV bytes %v, want none", kv)
	}
	data, err := os.ReadFile(filepath.Join(dir, "new.json"))
	if err != nil {
		t.Fatal(err)
	}
	var js struct {
		Workload       map[string]any   `json:"workload"`
		Configurations []map[string]any `json:"configurations"`
	}
	if err := json.Unmarshal(data, &js); err != nil {
		t.Fatal(err)
	}
	for k := range js.Workload {
		if k != strings.ToLower(k) {
			t.Errorf("workload key %q", k)
		}
	}
	if js.Workload["num_prompts"] != 32.0 || js.Configurations[0]["kv_cache_dtype"] != "fp32" {
		t.Errorf("saved %s", data)
	}
	for _, f := range []string{"throughput_vs_p99.svg", "cost_split.png"} {
		if _, err := os.Stat(filepath.Join(c.Plot, f)); err != nil {
			t.Error(err)
		}
	}
}
