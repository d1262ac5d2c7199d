package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
)

// The Helm values `tandem plan` prints for its winner install as they
// are: they pass the chart's schema and linter, and the release they
// render holds to the binary like every ci/ values file.
func TestChartTakesPlanValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"disaggregated GPUs spanning nodes", []string{"--preset", "Llama-3.1-70B", "--hardware", "h100-sxm", "--gpus", "32", "--nodes", "4",
			"--mode", "disaggregated", "--tp", "8,16", "--input-len", "2000", "--output-len", "200", "--max-concurrency", "32", "--num-prompts", "64"}},
		{"unified GPUs", []string{"--preset", "Llama-3.1-8B", "--hardware", "h100-sxm", "--gpus", "8", "--mode", "unified",
			"--input-len", "1000", "--output-len", "100", "--max-concurrency", "64", "--num-prompts", "128"}},
		{"CPU", []string{"--preset", "llama-160m", "--hardware", "cpu", "--gpus", "4", "--input-len", "128", "--output-len", "16",
			"--max-concurrency", "4", "--num-prompts", "16"}},
		{"CPU with a bf16 KV cache, no prefix cache", []string{"--no-prefix-caching", "--preset", "llama-160m", "--hardware", "cpu", "--gpus", "2", "--input-len", "128", "--output-len", "16",
			"--max-concurrency", "4", "--num-prompts", "16", "--kv-cache-dtype", "bf16"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runTandem(t, append([]string{"plan", "--json"}, tc.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			var j struct {
				HelmValues string `json:"helm_values"`
			}
			if err := json.Unmarshal([]byte(out), &j); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(t.TempDir(), "plan-values.yaml")
			if err := os.WriteFile(file, []byte(j.HelmValues), 0o644); err != nil {
				t.Fatal(err)
			}
			res := lint.RunAll(chartDir, readValues(t, file), chartNamespace)
			for _, m := range res.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("lint: %s\nvalues:\n%s", m, j.HelmValues)
				}
			}
			checkRelease(t, renderChart(t, file))
		})
	}
}
