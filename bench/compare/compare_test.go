package compare

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemllm/tandem/bench/dataset"
	"github.com/tandemllm/tandem/bench/local"
	"github.com/tandemllm/tandem/bench/local/localtest"
	"github.com/tandemllm/tandem/bench/serve"
	"github.com/tandemllm/tandem/model/preset"
)

func smallConfig(t *testing.T) Config {
	t.Helper()
	if testing.Short() {
		t.Skip("starts clusters")
	}
	c := Config{Workload: serve.DefaultWorkload(), Executable: localtest.Binary(t), DisableProgress: true,
		ResultDir: t.TempDir(), ResultFilename: "report.json"}
	c.NumPrompts, c.RandomInputLen, c.RandomOutputLen, c.MaxConcurrency, c.Seed = 6, 32, 6, "2", 1
	t.Cleanup(func() {
		if left := localtest.Leftovers(t, c.Executable); len(left) > 0 {
			t.Errorf("processes left: %v", left)
		}
	})
	return c
}

// TestTP2AgainstTP8 compares TP-2 and TP-8 on tiny, unified and
// disaggregated: the allreduce bytes per token and the KV bytes per
// prompt token measured from the traces equal their analytic values,
// computed here from the preset's shape, and TP-8's allreduce bytes are
// above TP-2's.
func TestTP2AgainstTP8(t *testing.T) {
	c := smallConfig(t)
	c.TPs, c.Modes, c.Plot = "2,8", "unified,disaggregated", filepath.Join(c.ResultDir, "plots")
	var out, errs bytes.Buffer
	rep, err := Run(t.Context(), c, &out, &errs)
	if err != nil {
		t.Fatalf("%v\n%s", err, errs.String())
	}
	p, _ := preset.Get("tiny")
	m, _ := p.Config()
	allreduce := func(tp int) float64 { return float64(tp * 2 * m.Layers * m.Hidden * 4) }
	kv := float64(m.Layers * m.KVHeads * m.HeadDim * 2 * 4) // tiny's weights are float32: an fp32 cache
	for _, cf := range rep.Configurations {
		if cf.KVCacheDType != "fp32" {
			t.Errorf("%s: KV cache dtype %q, want fp32", cf.Name, cf.KVCacheDType)
		}
	}
	want := map[string]struct {
		tp   int
		disa bool
	}{"unified-tp2": {2, false}, "unified-tp8": {8, false}, "disagg-tp2": {2, true}, "disagg-tp8": {8, true}}
	pt := rep.Points[0]
	if len(pt.Configs) != 4 {
		t.Fatalf("%d configurations", len(pt.Configs))
	}
	for _, cp := range pt.Configs {
		w := want[cp.Name]
		cs := cp.Cost
		if cs.Traced != c.NumPrompts || cs.Incomplete != 0 {
			t.Fatalf("%s: %d of %d requests traced, %d incomplete", cp.Name, cs.Traced, c.NumPrompts, cs.Incomplete)
		}
		if math.Abs(float64(cs.AllreduceBytes)-allreduce(w.tp)) > 1e-6 || float64(cs.AnalyticAllreduce) != allreduce(w.tp) {
			t.Errorf("%s: allreduce %v B/token measured, %v analytic; want %v", cp.Name, cs.AllreduceBytes, cs.AnalyticAllreduce, allreduce(w.tp))
		}
		if w.disa && (math.Abs(float64(cs.KVBytes)-kv) > 1e-6 || float64(cs.AnalyticKV) != kv) {
			t.Errorf("%s: KV %v B/prompt token measured, %v analytic; want %v", cp.Name, cs.KVBytes, cs.AnalyticKV, kv)
		}
		if !w.disa && !math.IsNaN(float64(cs.KVBytes)) {
			t.Errorf("%s: KV %v B/prompt token in unified serving", cp.Name, cs.KVBytes)
		}
		if cs.Compute <= 0 || (w.tp > 1 && cs.Allreduce <= 0) {
			t.Errorf("%s: compute %v, allreduce %v ms/token", cp.Name, cs.Compute, cs.Allreduce)
		}
	}
	if pt.Configs[1].Cost.AllreduceBytes <= pt.Configs[0].Cost.AllreduceBytes {
		t.Errorf("TP-8 allreduce bytes %v not above TP-2's %v", pt.Configs[1].Cost.AllreduceBytes, pt.Configs[0].Cost.AllreduceBytes)
	}
	for _, d := range pt.Differences {
		if d.Metric == "allreduce_bytes_per_token" && strings.HasSuffix(d.Config, "tp8") && d.Verdict != d.Config+" higher" {
			t.Errorf("%s allreduce bytes: %+v", d.Config, d)
		}
	}
	data, err := os.ReadFile(filepath.Join(c.ResultDir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var js map[string]any
	if err := json.Unmarshal(data, &js); err != nil {
		t.Fatalf("report JSON: %v", err)
	}
	if !strings.Contains(out.String(), "allreduce B/tok") || !strings.Contains(out.String(), "disagg-tp8") {
		t.Fatalf("table:\n%s", out.String())
	}
	for _, f := range []string{"latency_cdf_infqps-concurrency2.png", "itl_by_position_infqps-concurrency2.svg", "throughput_vs_p99.png", "cost_split.svg"} {
		if _, err := os.Stat(filepath.Join(c.Plot, f)); err != nil {
			t.Error(err)
		}
	}
}

// tinyCluster is one running deployment, unified TP-2 on tiny, stopped
// when the test ends.
func tinyCluster(t *testing.T, exe string) *local.Cluster {
	t.Helper()
	cl, err := local.Start(t.Context(), local.Options{Executable: exe,
		Args: []string{"--preset", "tiny", "--mode", "unified", "--tp", "2", "--threads", "1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Stop)
	return cl
}

// TestSelfComparison: one deployment compared with itself, in
// interleaved rounds after warm-ups, gives no verdict on any figure,
// each difference with an interval (TestDetectsDelay shows that the same
// comparison finds a real difference). At the default 95% a family
// names a false winner by design about one run in fifty (see "How sure a
// verdict is" in docs/benchmarking.md); at 99.9% a failure here is a
// bias (the prefix cache, the order of blocks), not chance.
func TestSelfComparison(t *testing.T) {
	c := smallConfig(t)
	cl := tinyCluster(t, c.Executable)
	c.Targets = []string{"a=" + cl.GRPC, "b=" + cl.GRPC}
	c.Rounds, c.NumPrompts, c.Baseline, c.Confidence = 3, 12, "b", 0.999
	var out bytes.Buffer
	rep, err := Run(t.Context(), c, &out, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.ConfidenceLevel != c.Confidence {
		t.Errorf("family_confidence_level %v, want --confidence %v", rep.ConfidenceLevel, c.Confidence)
	}
	p := rep.Points[0]
	if p.Warmups != 4 {
		t.Errorf("%d warm-ups at concurrency 2, want 4", p.Warmups)
	}
	n := 0
	for _, d := range p.Differences {
		n++
		if d.Baseline != "b" || d.Config != "a" {
			t.Errorf("%s: %s − %s, want a − b (--baseline b)", d.Metric, d.Config, d.Baseline)
		}
		if strings.HasPrefix(d.Metric, "p99_") && strings.HasPrefix(d.Verdict, NotEnoughSamples) {
			continue // 36 requests a side
		}
		if d.Verdict != NotDistinguishable || d.Method == "" || !(d.Lo <= d.Diff && d.Diff <= d.Hi) {
			t.Errorf("%s: %+v, a configuration against itself", d.Metric, d)
		}
		if (1-float64(d.Level))*float64(len(p.Differences)) > (1-c.Confidence)*(1+1e-9) {
			t.Errorf("%s: ci_level %v, too low for a family of %d at %v", d.Metric, d.Level, len(p.Differences), c.Confidence)
		}
	}
	if n < 10 {
		t.Fatalf("%d differences reported:\n%s", n, out.String())
	}
	for _, cp := range p.Configs {
		if cp.Cost.Traced != c.Rounds*c.NumPrompts {
			t.Errorf("%s: %d of %d requests traced", cp.Name, cp.Cost.Traced, c.Rounds*c.NumPrompts)
		}
	}
}

// TestDetectsDelay compares a cluster's OpenAI API with the same API
// behind a proxy that holds every request 500 ms before passing it on,
// both as --target NAME=URL: the comparison calls the delayed side's TTFT
// and E2E higher by about the delay, at the size of TestSelfComparison
// and one round more. Only the side given --trace-addr gets the cost
// split.
func TestDetectsDelay(t *testing.T) {
	c := smallConfig(t)
	cl := tinyCluster(t, c.Executable)
	const delay = 500 * time.Millisecond
	proxy := delayProxy(t, "http://"+cl.HTTP, delay)
	c.Targets = []string{"direct=http://" + cl.HTTP, "delayed=" + proxy}
	c.TraceAddrs = []string{"delayed=" + cl.GRPC}
	c.Rounds, c.NumPrompts = 4, 12
	var out bytes.Buffer
	rep, err := Run(t.Context(), c, &out, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	p := rep.Points[0]
	found := 0
	for _, d := range p.Differences {
		if d.Metric != "mean_ttft_ms" && d.Metric != "mean_e2el_ms" {
			continue
		}
		found++
		ms := float64(delay.Milliseconds())
		if d.Verdict != "delayed higher" || float64(d.Diff) < ms/2 || float64(d.Diff) > 3*ms {
			t.Errorf("%s: %+v; want delayed higher by about %v", d.Metric, d, delay)
		}
	}
	if found != 2 {
		t.Fatalf("differences %+v\n%s", p.Differences, out.String())
	}
	direct, delayed := p.Configs[0], p.Configs[1]
	if direct.res.Failed != 0 {
		t.Errorf("direct: %d requests failed: %v", direct.res.Failed, direct.res.ErrorsByCode)
	}
	// On a loaded machine the test's own proxy now and then cuts a stream
	// (its upstream read ends on a closed connection; the direct side,
	// the same cluster without it, loses none): every request that
	// completed must have its trace.
	if direct.traced || direct.Cost.Traced != 0 || !delayed.traced || delayed.Cost.Traced != delayed.res.Completed ||
		delayed.Cost.Missing != 0 || delayed.res.Completed < c.Rounds*c.NumPrompts*3/4 {
		t.Errorf("traced: direct %v (%d), delayed %v (%d of %d completed, %d missing; %d failed: %v)", direct.traced, direct.Cost.Traced,
			delayed.traced, delayed.Cost.Traced, delayed.res.Completed, delayed.Cost.Missing, delayed.res.Failed, delayed.res.ErrorsByCode)
	}
}

// delayProxy serves target's API through a reverse proxy that holds
// each request to /v1/completions for delay before passing it on.
func delayProxy(t *testing.T, target string, delay time.Duration) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1 // stream events as they come
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/completions" {
			timer := time.NewTimer(delay)
			select {
			case <-timer.C:
			case <-r.Context().Done():
				timer.Stop()
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	return ts.URL
}

// TestSchedule: each round runs the configurations on half the prompts
// in order, then on the other half in reverse order; a single prompt is
// not halved, and its rounds alternate the order.
func TestSchedule(t *testing.T) {
	str := func(bs []block) string {
		var out []string
		for _, b := range bs {
			out = append(out, fmt.Sprintf("%c%d.%d/%d", 'A'+b.side, b.round, b.half, b.halves))
		}
		return strings.Join(out, " ")
	}
	for _, tt := range []struct {
		sides, rounds, prompts int
		want                   string
	}{
		{2, 2, 12, "A0.0/2 B0.0/2 B0.1/2 A0.1/2 A1.0/2 B1.0/2 B1.1/2 A1.1/2"},
		{3, 1, 5, "A0.0/2 B0.0/2 C0.0/2 C0.1/2 B0.1/2 A0.1/2"},
		{2, 3, 1, "A0.0/1 B0.0/1 B1.0/1 A1.0/1 A2.0/1 B2.0/1"},
	} {
		if got := str(schedule(tt.sides, tt.rounds, tt.prompts)); got != tt.want {
			t.Errorf("schedule(%d, %d, %d) = %s, want %s", tt.sides, tt.rounds, tt.prompts, got, tt.want)
		}
	}
	reqs := make([]dataset.Request, 5)
	for i := range reqs {
		reqs[i].PromptLen = i
	}
	if a, b := prompts(reqs, 0, 2), prompts(reqs, 1, 2); len(a) != 2 || len(b) != 3 || a[0].PromptLen != 0 || b[0].PromptLen != 2 {
		t.Errorf("halves of 5: %v and %v", a, b)
	}
}

// TestBadInput: each mistake is reported, naming the flag or file,
// before any cluster starts or any request is sent.
func TestBadInput(t *testing.T) {
	c := smallConfig(t)
	cl, err := local.Start(t.Context(), local.Options{Executable: c.Executable,
		Args: []string{"--preset", "tiny", "--mode", "unified", "--tp", "1", "--threads", "1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Stop()
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"TP that does not split tiny", func(c *Config) { c.TPs = "2,3" }, "TP 3"},
		{"unknown mode", func(c *Config) { c.TPs, c.Modes = "2", "unified,colocated" }, "--modes"},
		{"one configuration", func(c *Config) { c.TPs = "2" }, "two or more"},
		{"zero rounds", func(c *Config) { c.TPs, c.Rounds = "2,4", -1 }, "--rounds"},
		{"confidence of 1", func(c *Config) { c.TPs, c.Confidence = "2,4", 1 }, "--confidence 1"},
		{"negative confidence", func(c *Config) { c.TPs, c.Confidence = "2,4", -0.5 }, "--confidence -0.5"},
		{"NaN confidence", func(c *Config) { c.TPs, c.Confidence = "2,4", math.NaN() }, "--confidence NaN"},
		{"bad target", func(c *Config) { c.Targets = []string{"x=" + cl.GRPC, "nameless"} }, "--target"},
		{"unreachable target", func(c *Config) { c.Targets = []string{"x=" + cl.GRPC, "y=127.0.0.1:1"} }, "--target y"},
		{"unreachable URL target", func(c *Config) { c.Targets = []string{"x=" + cl.GRPC, "y=http://127.0.0.1:1"} }, "--target y"},
		{"URL scheme", func(c *Config) { c.Targets = []string{"x=" + cl.GRPC, "y=ftp://" + cl.HTTP} }, "--target y"},
		{"trace address of a gRPC target", func(c *Config) {
			c.Targets, c.TraceAddrs = []string{"x=" + cl.GRPC, "y=" + cl.GRPC}, []string{"y=" + cl.GRPC}
		}, "--trace-addr y"},
		{"unreachable trace address", func(c *Config) {
			c.Targets, c.TraceAddrs = []string{"x=" + cl.GRPC, "y=http://" + cl.HTTP}, []string{"y=127.0.0.1:1"}
		}, "--trace-addr y"},
		{"endpoint without a URL target", func(c *Config) { c.TPs, c.Endpoint = "2,4", "/v1/chat/completions" }, "--endpoint"},
		{"config key", func(c *Config) { c.TPs, c.ConfigFiles = "2", []string{"testdata/bad-key.yaml"} }, "testdata/bad-key.yaml"},
		{"missing config", func(c *Config) { c.TPs, c.ConfigFiles = "2", []string{"testdata/none.yaml"} }, "--config"},
		{"TLS without --ca-cert", func(c *Config) { c.TPs, c.ConfigFiles = "2", []string{"testdata/tls.yaml"} }, "--ca-cert"},
		{"missing --ca-cert", func(c *Config) { c.TPs, c.CACert = "2,4", "testdata/none.crt" }, "--ca-cert"},
		{"zero rate", func(c *Config) { c.TPs, c.RequestRate = "2,4", "0" }, "--request-rate"},
		{"bad percentile", func(c *Config) { c.TPs, c.MetricPercentiles = "2,4", "101" }, "--metric-percentiles"},
		{"bad goodput", func(c *Config) { c.TPs, c.Goodput = "2,4", []string{"itl:5"} }, "--goodput"},
		{"negative groups in a config", func(c *Config) {
			c.TPs, c.ConfigFiles = "2", []string{writeConfig(t, "name: x\nmode: unified\ngroups: -1\n")}
		}, "groups"},
		{"unknown tandem up flag in a config's args", func(c *Config) {
			c.TPs, c.ConfigFiles = "2", []string{writeConfig(t, "name: x\nmode: unified\nargs: [--no-such-flag]\n")}
		}, "no-such-flag"},
		{"bad KV cache dtype in a config's args", func(c *Config) {
			c.TPs, c.ConfigFiles = "2", []string{writeConfig(t, "name: x\nmode: unified\nargs: [--kv-cache-dtype, fp8]\n")}
		}, "kv-cache-dtype"},
		{"bad --kv-cache-dtype", func(c *Config) { c.TPs, c.KVCacheDType = "2,4", "fp8" }, "--kv-cache-dtype"},
		{"unknown link", func(c *Config) { c.TPs, c.Link = "2,4", "eth-1t" }, "--link"},
		{"target port", func(c *Config) { c.TPs, c.Targets = "2", []string{"y=127.0.0.1:99999"} }, "--target y"},
		{"target without a port", func(c *Config) { c.TPs, c.Targets = "2", []string{"y=localhost"} }, "--target y"},
		{"unknown baseline", func(c *Config) { c.TPs, c.Baseline = "2,4", "tp3" }, "--baseline"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := c
			cfg.DisableProgress = false
			tt.edit(&cfg)
			var errs bytes.Buffer
			_, err := Run(t.Context(), cfg, &bytes.Buffer{}, &errs)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one naming %q", err, tt.want)
			}
			if strings.Contains(errs.String(), "round 1/") {
				t.Fatalf("a block began before the error:\n%s", errs.String())
			}
		})
	}
	// The cluster saw no request.
	if n := localtest.Requests(t, cl.GRPC); n != 0 {
		t.Fatalf("bad input sent %d requests", n)
	}
}

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cluster.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestKVCacheDType compares disaggregated TP-1 clusters with an fp32
// and a bf16 KV cache (--config kv-cache-dtype): each configuration
// names its cache dtype, and its KV bytes per prompt token, measured and
// analytic, are layers × KV heads × head dim × 2 × that dtype's bytes.
func TestKVCacheDType(t *testing.T) {
	c := smallConfig(t)
	c.TPs, c.Modes, c.NumPrompts = "1", "disaggregated", 4
	c.ConfigFiles = []string{writeConfig(t, "name: disagg-tp1-bf16\nprefill-tp: 1\ndecode-tp: 1\nkv-cache-dtype: bf16\n")}
	var out bytes.Buffer
	rep, err := Run(t.Context(), c, &out, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := preset.Get("tiny")
	m, _ := p.Config()
	want := map[string]struct {
		dtype string
		bytes float64
	}{"disagg-tp1": {"fp32", 4}, "disagg-tp1-bf16": {"bf16", 2}}
	for _, cf := range rep.Configurations {
		if cf.KVCacheDType != want[cf.Name].dtype {
			t.Errorf("%s: KV cache dtype %q, want %s", cf.Name, cf.KVCacheDType, want[cf.Name].dtype)
		}
	}
	for _, cp := range rep.Points[0].Configs {
		kv := float64(m.Layers*m.KVHeads*m.HeadDim*2) * want[cp.Name].bytes
		if cp.Cost.Traced != c.NumPrompts || float64(cp.Cost.KVBytes) != kv || float64(cp.Cost.AnalyticKV) != kv {
			t.Errorf("%s: KV %v B/prompt token measured, %v analytic; want %v", cp.Name, cp.Cost.KVBytes, cp.Cost.AnalyticKV, kv)
		}
	}
	if !strings.Contains(out.String(), "KV cache dtype") || !strings.Contains(out.String(), "bf16") {
		t.Errorf("table without the cache dtypes:\n%s", out.String())
	}
}

// TestStopOnEveryPath: an interrupted comparison and one whose second
// cluster cannot start both stop every process they started.
func TestStopOnEveryPath(t *testing.T) {
	c := smallConfig(t)
	c.ConfigFiles = []string{"testdata/unified-tp2.yaml"}
	t.Run("failed start", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.yaml")
		if err := os.WriteFile(bad, []byte("name: broken\nmode: unified\ntp: 1\nargs: [\"--ready-timeout\", \"1ms\"]\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := c
		cfg.ConfigFiles = append(cfg.ConfigFiles, bad)
		_, err := Run(t.Context(), cfg, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "broken") {
			t.Fatalf("error %v, want the broken configuration named", err)
		}
		if left := localtest.Leftovers(t, c.Executable); len(left) > 0 {
			t.Fatalf("processes left after a failed start: %v", left)
		}
	})
	t.Run("interrupted", func(t *testing.T) {
		cfg := c
		cfg.TPs, cfg.NumPrompts, cfg.RequestRate, cfg.DisableProgress = "1", 400, "10", false
		ctx, cancel := context.WithCancel(t.Context())
		w := &cancelWriter{cancel: cancel, after: "requests"}
		_, err := Run(ctx, cfg, &bytes.Buffer{}, w)
		if err == nil || ctx.Err() == nil {
			t.Fatalf("interrupted comparison: %v", err)
		}
		if left := localtest.Leftovers(t, c.Executable); len(left) > 0 {
			t.Fatalf("processes left after an interrupt: %v", left)
		}
	})
}
