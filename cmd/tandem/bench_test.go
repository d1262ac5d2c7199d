package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBenchCommand runs `tandem bench` as a user types it against a
// running cluster: vLLM-style --goodput pairs after one flag, a sweep,
// saved results.
func TestBenchCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	tc := startCluster(t, "tiny", []groupSpec{{name: "unified-0", role: "unified", tp: 1}})
	dir := t.TempDir()
	var out, errs bytes.Buffer
	cmd := newRootCmd()
	cmd.SetOut(&out)
	cmd.SetErr(&errs)
	cmd.SetArgs([]string{"bench", "--addr", tc.coord.grpcAddr, "--num-prompts", "6", "--random-input-len", "16",
		"--random-output-len", "4", "--max-concurrency", "1,2", "--save-result", "--result-dir", dir,
		"--result-filename", "r.json", "--goodput", "ttft:60000", "tpot:60000", "--metadata", "tp=1", "run=a",
		"--header", "x-team=infra", "--goodput", "e2el:60000", "--request-id-prefix", "job-"})
	if err := cmd.ExecuteContext(t.Context()); err != nil {
		t.Fatalf("tandem bench: %v\n%s", err, errs.String())
	}
	for _, name := range []string{"r-infqps-concurrency1.json", "r-infqps-concurrency2.json"} {
		r := readResult(t, filepath.Join(dir, name))
		if r["completed"] != 6.0 || r["request_goodput"] != r["request_throughput"] || r["backend"] != "tandem" ||
			r["tp"] != "1" || r["run"] != "a" || len(r["goodput_slo_ms"].(map[string]any)) != 3 {
			t.Fatalf("%s: completed %v, goodput %v vs throughput %v, metadata %v %v, SLOs %v", name, r["completed"],
				r["request_goodput"], r["request_throughput"], r["tp"], r["run"], r["goodput_slo_ms"])
		}
		if id := r["request_ids"].([]any)[0].(string); !strings.HasPrefix(id, "job-") {
			t.Fatalf("%s: request id %q, want --request-id-prefix job-", name, id)
		}
	}
	if !strings.Contains(out.String(), "Request goodput (req/s):") {
		t.Fatalf("report:\n%s", out.String())
	}
	cmd = newRootCmd()
	cmd.SetOut(&out)
	cmd.SetErr(&errs)
	cmd.SetArgs([]string{"bench", "--addr", tc.coord.grpcAddr, "stray"})
	if err := cmd.ExecuteContext(t.Context()); err == nil || !strings.Contains(err.Error(), "stray") {
		t.Fatalf("a stray argument: %v", err)
	}
}

// TestBenchCompareCommand runs `tandem bench compare --tp 1,2` as typed:
// two local clusters, each `tandem up` run from this binary, started and
// stopped in turn.
func TestBenchCompareCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts clusters")
	}
	dir := t.TempDir()
	var out, errs bytes.Buffer
	cmd := newRootCmd()
	cmd.SetOut(&out)
	cmd.SetErr(&errs)
	cmd.SetArgs([]string{"bench", "compare", "--tp", "1,2", "--num-prompts", "4", "--random-input-len", "16",
		"--random-output-len", "4", "--max-concurrency", "2", "--result-dir", dir, "--result-filename", "c.json", "--disable-tqdm"})
	if err := cmd.ExecuteContext(t.Context()); err != nil {
		t.Fatalf("tandem bench compare: %v\n%s", err, errs.String())
	}
	if !strings.Contains(out.String(), "unified-tp2") || !strings.Contains(out.String(), "allreduce B/tok") {
		t.Fatalf("table:\n%s", out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "c.json")); err != nil {
		t.Fatal(err)
	}
	if kids := childProcesses(t); len(kids) > 0 {
		t.Fatalf("processes left behind: %v", kids)
	}
}

// TestBenchPrefixRepetition runs `tandem bench --dataset-name
// prefix_repetition` with vLLM's flags: every prompt after the first of
// its prefix finds the prefix in the group's cache.
func TestBenchPrefixRepetition(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	tc := startCluster(t, "tiny", []groupSpec{{name: "unified-0", role: "unified", tp: 1}})
	dir := t.TempDir()
	var out, errs bytes.Buffer
	cmd := newRootCmd()
	cmd.SetOut(&out)
	cmd.SetErr(&errs)
	cmd.SetArgs([]string{"bench", "--addr", tc.coord.grpcAddr, "--dataset-name", "prefix_repetition", "--num-prompts", "6",
		"--prefix-repetition-prefix-len", "64", "--prefix-repetition-suffix-len", "8", "--prefix-repetition-num-prefixes", "2",
		"--prefix-repetition-output-len", "2", "--max-concurrency", "1", "--save-result", "--result-dir", dir, "--result-filename", "p.json"})
	if err := cmd.ExecuteContext(t.Context()); err != nil {
		t.Fatalf("tandem bench: %v\n%s", err, errs.String())
	}
	r := readResult(t, filepath.Join(dir, "p.json"))
	if r["completed"] != 6.0 || r["dataset_name"] != "prefix_repetition" || r["total_input_tokens"] != 6.0*72 {
		t.Fatalf("completed %v, dataset %v, input tokens %v", r["completed"], r["dataset_name"], r["total_input_tokens"])
	}
	// Two prompts compute their prefix; the four others find its 4 blocks.
	if hits := tc.workerStats(t, "unified-0").GetPrefixCacheHits(); hits != 4*64 {
		t.Fatalf("%d prompt tokens from the prefix cache, want 256", hits)
	}
}

// readResult reads a saved result JSON.
func readResult(t *testing.T, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r map[string]any
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestSpreadPairs: values after --goodput, --metadata and --header go to
// the flag they follow, as argparse's nargs give them, and nothing else
// moves.
func TestSpreadPairs(t *testing.T) {
	flags := []string{"--goodput", "--metadata", "--header"}
	tests := []struct{ in, want string }{
		{"--goodput ttft:5 tpot:6 --addr x", "--goodput ttft:5 --goodput tpot:6 --addr x"},
		{"--header a=1 --metadata b=2 c=3 --goodput e2el:9", "--header a=1 --metadata b=2 --metadata c=3 --goodput e2el:9"},
		{"--metadata=a=1 b=2", "--metadata=a=1 --metadata b=2"},
		{"--addr x --goodput", "--addr x --goodput"},
		{"--goodput -- ttft:5", "--goodput -- ttft:5"},
		{"stray --num-prompts 3", "stray --num-prompts 3"},
	}
	for _, tt := range tests {
		if got := strings.Join(spreadPairs(strings.Fields(tt.in), flags...), " "); got != tt.want {
			t.Errorf("%q: got %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestBenchFlagErrors: the command refuses what its parser cannot place,
// before reaching any target.
func TestBenchFlagErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "--addr", "127.0.0.1:1", "--goodput"}, "--goodput"},
		{[]string{"bench", "--addr", "127.0.0.1:1", "stray"}, "stray"},
		{[]string{"bench", "--addr", "127.0.0.1:1", "--top-k", "-5"}, "--top-k -5"},
		{[]string{"bench", "--base-url", "http://127.0.0.1:1", "--backend", "sglang"}, "--backend"},
		{[]string{"bench", "--addr", "127.0.0.1:1", "--port", "8001"}, "--host/--port"},
		{[]string{"bench", "--addr", "127.0.0.1:1", "--dataset-name", "jsonl", "--dataset-path", "x", "--output-len", "-1"}, "--output-len -1"},
		{[]string{"bench", "--host", "127.0.0.1", "--port", "1"}, "--base-url http://127.0.0.1:1: unreachable"},
	} {
		cmd := newRootCmd()
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		cmd.SetArgs(tt.args)
		if err := cmd.ExecuteContext(t.Context()); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v, want an error naming %q", tt.args, err, tt.want)
		}
	}
	var out bytes.Buffer
	cmd := newRootCmd()
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"bench", "--help"})
	if err := cmd.ExecuteContext(t.Context()); err != nil || !strings.Contains(out.String(), "--request-id-prefix") {
		t.Fatalf("bench --help: %v\n%s", err, out.String())
	}
}
