package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tandemllm/tandem/bench"
	"github.com/tandemllm/tandem/bench/local"
	"github.com/tandemllm/tandem/bench/local/localtest"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// startCluster runs `tandem up` (unified TP-2 on tiny) as a user would
// and stops it at the end of the test, checking that no process of it is
// left.
func startCluster(t *testing.T) *local.Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	exe := localtest.Binary(t)
	c, err := local.Start(t.Context(), local.Options{Executable: exe,
		Args: []string{"--preset", "tiny", "--mode", "unified", "--tp", "2", "--threads", "1", "--kv-cache-mb", "32"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Stop()
		if left := localtest.Leftovers(t, exe); len(left) > 0 {
			t.Errorf("processes left after the cluster stopped: %v", left)
		}
	})
	return c
}

func baseConfig(addr string) Config {
	c := Config{Workload: DefaultWorkload(), Addr: addr, DisableProgress: true}
	c.NumPrompts, c.RandomInputLen, c.RandomOutputLen, c.Seed = 12, 24, 6, 3
	c.MetricPercentiles = "50,90,95,99,99.9"
	return c
}

func TestAgainstCluster(t *testing.T) {
	c := startCluster(t)
	t.Run("samples", func(t *testing.T) {
		cfg := baseConfig(c.GRPC)
		cfg.MaxConcurrency = "1,3"
		var out, errs bytes.Buffer
		rs, err := Run(t.Context(), cfg, &out, &errs)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != 2 {
			t.Fatalf("%d results for a sweep of 2 points", len(rs))
		}
		for _, r := range rs {
			if r.Completed != cfg.NumPrompts || r.Failed != 0 || len(r.TTFTs) != cfg.NumPrompts {
				t.Fatalf("%s: %d completed, %d failed, %d samples; want %d sent, all completed", r.Load, r.Completed, r.Failed, len(r.TTFTs), cfg.NumPrompts)
			}
			seen := map[string]bool{}
			for i := range r.TTFTs {
				if !(r.TTFTs[i] > 0 && r.TTFTs[i] <= r.Latencies[i]) {
					t.Errorf("%s request %d: TTFT %v, E2E %v; want 0 < TTFT <= E2E", r.Load, i, r.TTFTs[i], r.Latencies[i])
				}
				if r.InputLens[i] != cfg.RandomInputLen || r.OutputLens[i] != cfg.RandomOutputLen || len(r.ITLs[i]) != cfg.RandomOutputLen-1 {
					t.Errorf("%s request %d: %d prompt tokens, %d output tokens, %d ITLs; want %d, %d, %d",
						r.Load, i, r.InputLens[i], r.OutputLens[i], len(r.ITLs[i]), cfg.RandomInputLen, cfg.RandomOutputLen, cfg.RandomOutputLen-1)
				}
				seen[r.RequestIDs[i]] = true
			}
			if len(seen) != cfg.NumPrompts {
				t.Errorf("%s: %d distinct request ids for %d requests", r.Load, len(seen), cfg.NumPrompts)
			}
			if r.MaxConcurrentRequests > r.Load.MaxConcurrency {
				t.Errorf("%s: %d requests in flight at once", r.Load, r.MaxConcurrentRequests)
			}
		}
		for _, want := range []string{"Serving Benchmark Result", "Mean TTFT (ms):", "P99.9 ITL (ms):", "concurrency"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("report lacks %q:\n%s", want, out.String())
			}
		}
	})
	t.Run("over HTTP, samples join traces", func(t *testing.T) {
		testHTTPTraces(t, c)
	})
	t.Run("saved result against numpy", func(t *testing.T) {
		testNumpy(t, c)
	})
	t.Run("bad input sends nothing", func(t *testing.T) {
		testBadInput(t, c)
	})
}

// testHTTPTraces runs the bench against the cluster's OpenAI API: the
// coordinator files each request under the X-Request-Id the bench sends,
// so every sample's request_id finds its trace.
func testHTTPTraces(t *testing.T, c *local.Cluster) {
	cfg := baseConfig("")
	cfg.BaseURL, cfg.NumPrompts, cfg.MaxConcurrency = "http://"+c.HTTP, 4, "2"
	rs, err := Run(t.Context(), cfg, &bytes.Buffer{}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(c.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	traces := tandemv1.NewTracesClient(conn)
	r := rs[0]
	if r.Completed != cfg.NumPrompts || r.Backend != "openai" {
		t.Fatalf("%d of %d completed, backend %s", r.Completed, cfg.NumPrompts, r.Backend)
	}
	for i, id := range r.RequestIDs {
		if !strings.HasPrefix(id, "bench-") {
			t.Errorf("request %d: request_id %q, not the bench's", i, id)
			continue
		}
		tr, err := traces.GetTrace(t.Context(), &tandemv1.GetTraceRequest{RequestId: id})
		if err != nil {
			t.Errorf("request %d: trace of %s: %v", i, id, err)
			continue
		}
		if got := len(tr.GetTrace().GetTokens()); got != cfg.RandomOutputLen {
			t.Errorf("request %d: trace of %s has %d tokens, want %d", i, id, got, cfg.RandomOutputLen)
		}
	}
}

// testNumpy saves a result with a goodput SLO that part of the requests
// meet, and recomputes its statistics in Python with numpy from the saved
// per-request arrays; goodput is recounted here from the same arrays.
func testNumpy(t *testing.T, c *local.Cluster) {
	python, err := numpyPython()
	if err != nil {
		if os.Getenv("TANDEM_REQUIRE_NUMPY") != "" {
			t.Fatalf("python3 with numpy is needed (.ci/run installs python3-numpy): %v", err)
		}
		t.Skipf("python3 with numpy not found: %v", err)
	}
	cfg := baseConfig(c.GRPC)
	cfg.NumPrompts, cfg.MaxConcurrency = 16, "4"
	probe, err := Run(t.Context(), cfg, &bytes.Buffer{}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	// SLOs at the medians: some requests meet both, some do not.
	ttftSLO := probe[0].Stats[bench.TTFT].Median
	tpotSLO := probe[0].Stats[bench.TPOT].Median
	cfg.Goodput = []string{"ttft:" + fmtMs(ttftSLO), "tpot:" + fmtMs(tpotSLO)}
	cfg.SaveResult, cfg.ResultDir, cfg.ResultFilename = true, t.TempDir(), "run.json"
	rs, err := Run(t.Context(), cfg, &bytes.Buffer{}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(cfg.ResultDir, "run.json")
	out, err := exec.Command(python, "testdata/numpy_check.py", path).CombinedOutput()
	if err != nil {
		t.Fatalf("numpy disagrees with the saved result: %v\n%s", err, out)
	}
	var saved struct {
		Goodput  float64   `json:"request_goodput"`
		Duration float64   `json:"duration"`
		TTFTs    []float64 `json:"ttfts"`
		Lat      []float64 `json:"latencies"`
		Out      []int     `json:"output_lens"`
	}
	data, _ := os.ReadFile(path)
	if err := json.Unmarshal(data, &saved); err != nil {
		t.Fatal(err)
	}
	slo := rs[0].Goodput
	good := 0
	for i := range saved.TTFTs {
		tpot := (saved.Lat[i] - saved.TTFTs[i]) / float64(saved.Out[i]-1)
		if saved.TTFTs[i]*1000 <= slo[bench.TTFT] && tpot*1000 <= slo[bench.TPOT] {
			good++
		}
	}
	if got := saved.Goodput * saved.Duration; math.Abs(got-float64(good)) > 1e-6 {
		t.Fatalf("request_goodput × duration = %v, but %d requests meet ttft <= %v ms and tpot <= %v ms", got, good, slo[bench.TTFT], slo[bench.TPOT])
	}
	t.Logf("%d of %d requests met the SLOs", good, len(saved.TTFTs))
}

func fmtMs(v float64) string { return bench.PyFloat(math.Round(v*1000) / 1000) }

// testBadInput: every bad flag fails naming it, before any request
// reaches the cluster.
func testBadInput(t *testing.T, c *local.Cluster) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.jsonl")
	if err := os.WriteFile(bad, []byte("{\"prompt\": \"a\"}\n{\"prompt\": 3}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"zero rate", func(c *Config) { c.RequestRate = "0" }, "--request-rate"},
		{"negative rate in a sweep", func(c *Config) { c.RequestRate = "2,-1" }, "--request-rate"},
		{"unknown goodput key", func(c *Config) { c.Goodput = []string{"ttft:10", "latency:5"} }, "--goodput"},
		{"percentile 100", func(c *Config) { c.MetricPercentiles = "50,100" }, "--metric-percentiles"},
		{"percentile 0", func(c *Config) { c.MetricPercentiles = "0" }, "--metric-percentiles"},
		{"zero concurrency", func(c *Config) { c.MaxConcurrency = "0" }, "--max-concurrency"},
		{"unreachable", func(c *Config) { c.Addr = "127.0.0.1:1" }, "--addr 127.0.0.1:1"},
		{"missing dataset", func(c *Config) { c.DatasetName, c.DatasetPath = "jsonl", filepath.Join(dir, "none.jsonl") }, "--dataset-path"},
		{"malformed dataset", func(c *Config) { c.DatasetName, c.DatasetPath = "jsonl", bad }, "line 2"},
		{"unknown tokenizer", func(c *Config) { c.Tokenizer = "no-such-model" }, "--tokenizer"},
	}
	before := localtest.Requests(t, c.GRPC)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig(c.GRPC)
			tt.edit(&cfg)
			_, err := Run(t.Context(), cfg, &bytes.Buffer{}, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one naming %q", err, tt.want)
			}
		})
	}
	if after := localtest.Requests(t, c.GRPC); after != before {
		t.Fatalf("bad input sent %d requests to the cluster", after-before)
	}
}

// TestCancel: a run interrupted (Ctrl-C) stops sending at once, saves
// its partial result marked "interrupted" (the requests never sent
// failed with NOT_SENT), returns the context's error, and leaves no
// goroutine of its own running and (startCluster checks) no process.
func TestCancel(t *testing.T) {
	c := startCluster(t)
	before := localtest.Requests(t, c.GRPC)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	cfg := baseConfig(c.GRPC)
	cfg.NumPrompts, cfg.RandomOutputLen, cfg.RequestRate, cfg.DisableProgress = 200, 64, "20", false
	cfg.SaveResult, cfg.ResultDir, cfg.ResultFilename = true, t.TempDir(), "partial.json"
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var errs syncWriter
	errs.onWrite = func(s string) {
		if strings.Contains(s, "requests") && !strings.Contains(s, " 0/") {
			cancel()
		}
	}
	rs, err := Run(ctx, cfg, &bytes.Buffer{}, &errs)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "partial.json") {
		t.Fatalf("interrupted run: %v, want context.Canceled naming the saved result", err)
	}
	r := readJSON(t, filepath.Join(cfg.ResultDir, "partial.json"))
	notSent := int(rs[0].ErrorsByCode[bench.NotSent])
	sent := cfg.NumPrompts - notSent
	if r["interrupted"] != true || r["num_prompts"] != 200.0 || r["completed"].(float64) < 1 || notSent < 100 {
		t.Fatalf("saved interrupted %v, num_prompts %v, completed %v, %d not sent; want a partial result of a run stopped early",
			r["interrupted"], r["num_prompts"], r["completed"], notSent)
	}
	// Every request the coordinator saw was one the bench counts as
	// sent; with no goroutine of the run left (VerifyNone), none can
	// follow.
	if got := localtest.Requests(t, c.GRPC) - before; got > sent {
		t.Fatalf("the coordinator saw %d requests, the bench sent %d", got, sent)
	}
	for i, code := range rs[0].ErrorCodes {
		if code == bench.NotSent && !strings.HasPrefix(rs[0].RequestIDs[i], "bench-") {
			t.Fatalf("request %d: not sent, id %q", i, rs[0].RequestIDs[i])
		}
	}
}

// numpyPython finds a Python that imports numpy: $TANDEM_PYTHON, then
// python3 on PATH, then Debian's /usr/bin/python3. The last matters where
// PATH leads to a pyenv or venv Python without numpy while the system's
// python3-numpy package is installed (as on CI machines).
func numpyPython() (string, error) {
	var tried []string
	for _, name := range []string{os.Getenv("TANDEM_PYTHON"), "python3", "/usr/bin/python3"} {
		if name == "" {
			continue
		}
		path, err := exec.LookPath(name)
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		if err := exec.Command(path, "-c", "import numpy").Run(); err != nil {
			tried = append(tried, fmt.Sprintf("%s: import numpy: %v", path, err))
			continue
		}
		return path, nil
	}
	return "", errors.New(strings.Join(tried, "; "))
}
