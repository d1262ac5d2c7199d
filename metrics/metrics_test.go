package metrics

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
)

var testWorkerLabels = WorkerLabels{Model: "tiny", Group: "prefill-0", Role: "prefill", Rank: 1, Backend: "cpu/amx"}

func fullGPURead() (GPUSample, gpuFields, error) {
	return GPUSample{UtilizationPercent: 87, MemoryUsedBytes: 40 << 30, PowerWatts: 612.5, SMClockMHz: 1980},
		fieldUtil | fieldMem | fieldPower | fieldClock, nil
}

type family struct {
	name   string
	typ    dto.MetricType
	labels []string // label names of every series, sorted
}

func coordinatorFamilies() []family {
	l := []string{"model_name"}
	return []family{
		{"tandem:num_requests_waiting", dto.MetricType_GAUGE, l},
		{"tandem:num_requests_running", dto.MetricType_GAUGE, l},
		{"tandem:etcd_available", dto.MetricType_GAUGE, l},
		{"tandem:request_queue_time_seconds", dto.MetricType_HISTOGRAM, l},
		{"tandem:time_to_first_token_seconds", dto.MetricType_HISTOGRAM, l},
		{"tandem:inter_token_latency_seconds", dto.MetricType_HISTOGRAM, l},
		{"tandem:time_per_output_token_seconds", dto.MetricType_HISTOGRAM, l},
		{"tandem:e2e_request_latency_seconds", dto.MetricType_HISTOGRAM, l},
		{"tandem:request_prompt_tokens", dto.MetricType_HISTOGRAM, l},
		{"tandem:request_generation_tokens", dto.MetricType_HISTOGRAM, l},
		{"tandem:prompt_tokens_total", dto.MetricType_COUNTER, l},
		{"tandem:generation_tokens_total", dto.MetricType_COUNTER, l},
		{"tandem:request_success_total", dto.MetricType_COUNTER, []string{"finished_reason", "model_name"}},
		{"tandem:request_rejected_total", dto.MetricType_COUNTER, []string{"model_name", "reason"}},
		{"tandem:request_migrations_total", dto.MetricType_COUNTER, []string{"model_name", "reason"}},
		{"tandem:routed_prefix_tokens_total", dto.MetricType_COUNTER, l},
		{"tandem:unauthenticated_requests_total", dto.MetricType_COUNTER, []string{"api", "model_name"}},
	}
}

func workerFamilies() []family {
	l := []string{"group", "model_name", "rank", "role"}
	plus := func(extra string) []string { s := append(slices.Clone(l), extra); slices.Sort(s); return s }
	return []family{
		{"tandem:num_requests_running", dto.MetricType_GAUGE, l},
		{"tandem:num_requests_waiting", dto.MetricType_GAUGE, l},
		{"tandem:kv_cache_usage_perc", dto.MetricType_GAUGE, l},
		{"tandem:kv_cache_free_blocks", dto.MetricType_GAUGE, l},
		{"tandem:etcd_available", dto.MetricType_GAUGE, l},
		{"tandem:iteration_tokens_total", dto.MetricType_HISTOGRAM, l},
		{"tandem:step_compute_seconds", dto.MetricType_HISTOGRAM, l},
		{"tandem:step_sample_seconds", dto.MetricType_HISTOGRAM, l},
		{"tandem:step_tokens_total", dto.MetricType_COUNTER, plus("kind")},
		{"tandem:collective_seconds_total", dto.MetricType_COUNTER, plus("op")},
		{"tandem:collective_bytes_total", dto.MetricType_COUNTER, plus("op")},
		{"tandem:collective_calls_total", dto.MetricType_COUNTER, plus("op")},
		{"tandem:kv_transfer_seconds_total", dto.MetricType_COUNTER, plus("direction")},
		{"tandem:kv_transfer_bytes_total", dto.MetricType_COUNTER, plus("direction")},
		{"tandem:kv_transfers_total", dto.MetricType_COUNTER, plus("direction")},
		{"tandem:kv_transfer_prompt_tokens_total", dto.MetricType_COUNTER, plus("direction")},
		{"tandem:prefix_cache_queries_total", dto.MetricType_COUNTER, l},
		{"tandem:prefix_cache_hits_total", dto.MetricType_COUNTER, l},
		{"tandem:prefix_cache_hit_rate", dto.MetricType_GAUGE, l},
		{"tandem:prefix_cache_blocks", dto.MetricType_GAUGE, l},
		{"tandem:worker_info", dto.MetricType_GAUGE, plus("backend")},
		{"tandem:gpu_utilization_perc", dto.MetricType_GAUGE, plus("gpu")},
		{"tandem:gpu_memory_used_bytes", dto.MetricType_GAUGE, plus("gpu")},
		{"tandem:gpu_power_watts", dto.MetricType_GAUGE, plus("gpu")},
		{"tandem:gpu_sm_clock_mhz", dto.MetricType_GAUGE, plus("gpu")},
	}
}

func newCoordinator(t testing.TB) (*prometheus.Registry, *Coordinator) {
	t.Helper()
	reg := prometheus.NewRegistry()
	return reg, NewCoordinator(reg, "tiny")
}

func newWorker(t testing.TB) (*prometheus.Registry, *Worker) {
	t.Helper()
	reg := prometheus.NewRegistry()
	w := NewWorker(reg, testWorkerLabels)
	if err := reg.Register(newGPUCollector(testWorkerLabels, 3, fullGPURead)); err != nil {
		t.Fatal(err)
	}
	return reg, w
}

func gather(t testing.TB, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

func checkFamilies(t *testing.T, g prometheus.Gatherer, want []family) {
	t.Helper()
	got := gather(t, g)
	for _, f := range want {
		t.Run(f.name, func(t *testing.T) {
			mf, ok := got[f.name]
			if !ok {
				t.Fatalf("%s not gathered", f.name)
			}
			if mf.GetType() != f.typ {
				t.Errorf("type %v, want %v", mf.GetType(), f.typ)
			}
			if mf.GetHelp() == "" {
				t.Error("no help")
			}
			if len(mf.GetMetric()) == 0 {
				t.Fatal("no series")
			}
			for _, m := range mf.GetMetric() {
				var names []string
				for _, lp := range m.GetLabel() {
					names = append(names, lp.GetName())
				}
				if !slices.Equal(names, f.labels) {
					t.Errorf("labels %v, want %v", names, f.labels)
				}
			}
		})
	}
	if len(got) != len(want) {
		var extra []string
		for name := range got {
			if !slices.ContainsFunc(want, func(f family) bool { return f.name == name }) {
				extra = append(extra, name)
			}
		}
		t.Errorf("gathered %d families, want %d; undocumented: %v", len(got), len(want), extra)
	}
}

// TestFamilies checks that every metric exists from construction (before
// any call: a series that appears late breaks rate()), with its type and
// labels, and that nothing else is exported.
func TestFamilies(t *testing.T) {
	t.Run("coordinator", func(t *testing.T) {
		reg, _ := newCoordinator(t)
		checkFamilies(t, reg, coordinatorFamilies())
	})
	t.Run("worker", func(t *testing.T) {
		reg, _ := newWorker(t)
		checkFamilies(t, reg, workerFamilies())
	})
}

func TestLabelValues(t *testing.T) {
	reg, _ := newWorker(t)
	info := gather(t, reg)["tandem:worker_info"]
	if m := info.GetMetric(); len(m) != 1 || m[0].GetGauge().GetValue() != 1 ||
		!slices.ContainsFunc(m[0].GetLabel(), func(lp *dto.LabelPair) bool { return lp.GetName() == "backend" && lp.GetValue() == "cpu/amx" }) {
		t.Errorf("tandem:worker_info = %v, want one series of 1 with backend=cpu/amx", m)
	}
	mf := gather(t, reg)["tandem:gpu_power_watts"]
	got := map[string]string{}
	for _, lp := range mf.GetMetric()[0].GetLabel() {
		got[lp.GetName()] = lp.GetValue()
	}
	want := map[string]string{"model_name": "tiny", "group": "prefill-0", "role": "prefill", "rank": "1", "gpu": "3"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("label %s = %q, want %q", k, got[k], v)
		}
	}
}

// histogram returns the one series of a histogram family.
func histogram(t *testing.T, g prometheus.Gatherer, name string) *dto.Histogram {
	t.Helper()
	mf, ok := gather(t, g)[name]
	if !ok || len(mf.GetMetric()) != 1 {
		t.Fatalf("%s: want one series", name)
	}
	return mf.GetMetric()[0].GetHistogram()
}

// TestBuckets checks the bucket layouts against vLLM's and that an
// observation lands in the first bucket whose upper bound is at least the
// value (Prometheus buckets are cumulative and inclusive).
func TestBuckets(t *testing.T) {
	tests := []struct {
		name    string
		observe func(*Coordinator, *Worker)
		metric  string
		worker  bool
		value   float64
		bounds  []float64
	}{
		{"ttft", func(c *Coordinator, _ *Worker) { c.FirstToken(30 * time.Millisecond) },
			"tandem:time_to_first_token_seconds", false, 0.03, ttftBuckets()},
		{"ttft on a bound", func(c *Coordinator, _ *Worker) { c.FirstToken(250 * time.Millisecond) },
			"tandem:time_to_first_token_seconds", false, 0.25, ttftBuckets()},
		{"itl", func(c *Coordinator, _ *Worker) { c.Token(12 * time.Millisecond) },
			"tandem:inter_token_latency_seconds", false, 0.012, tokenLatencyBuckets()},
		{"tpot", func(c *Coordinator, _ *Worker) {
			c.RequestArrived()
			c.RequestStarted(0)
			c.RequestFinished(3*time.Second, 10, 20, FinishStop, 90*time.Millisecond)
		}, "tandem:time_per_output_token_seconds", false, 0.09, tokenLatencyBuckets()},
		{"e2e", func(c *Coordinator, _ *Worker) {
			c.RequestArrived()
			c.RequestStarted(0)
			c.RequestFinished(3*time.Second, 10, 20, FinishStop, 90*time.Millisecond)
		}, "tandem:e2e_request_latency_seconds", false, 3, requestLatencyBuckets()},
		{"queue", func(c *Coordinator, _ *Worker) { c.RequestArrived(); c.RequestStarted(700 * time.Millisecond) },
			"tandem:request_queue_time_seconds", false, 0.7, requestLatencyBuckets()},
		{"prompt tokens", func(c *Coordinator, _ *Worker) {
			c.RequestArrived()
			c.RequestStarted(0)
			c.RequestFinished(time.Second, 300, 1, FinishLength, 0)
		}, "tandem:request_prompt_tokens", false, 300, requestTokenBuckets()},
		{"iteration tokens", func(_ *Coordinator, w *Worker) { w.Step(100, 7, time.Millisecond, time.Microsecond) },
			"tandem:iteration_tokens_total", true, 107, iterationTokenBuckets()},
		{"step compute", func(_ *Coordinator, w *Worker) { w.Step(0, 8, 15*time.Millisecond, time.Microsecond) },
			"tandem:step_compute_seconds", true, 0.015, stepBuckets()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			creg, c := newCoordinator(t)
			wreg, w := newWorker(t)
			tt.observe(c, w)
			g := creg
			if tt.worker {
				g = wreg
			}
			h := histogram(t, g, tt.metric)
			if h.GetSampleCount() != 1 || h.GetSampleSum() != tt.value {
				t.Fatalf("count %d sum %v, want 1 and %v", h.GetSampleCount(), h.GetSampleSum(), tt.value)
			}
			var bounds []float64
			for _, b := range h.GetBucket() {
				bounds = append(bounds, b.GetUpperBound())
				want := uint64(0)
				if tt.value <= b.GetUpperBound() {
					want = 1
				}
				if b.GetCumulativeCount() != want {
					t.Errorf("bucket le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
				}
			}
			if !slices.Equal(bounds, tt.bounds) {
				t.Errorf("bounds %v, want %v", bounds, tt.bounds)
			}
		})
	}
}

// TestVLLMBuckets pins the layouts copied from vLLM
// (vllm/v1/metrics/loggers.py) so an edit shows up here.
func TestVLLMBuckets(t *testing.T) {
	for _, tt := range []struct {
		name      string
		b         []float64
		n         int
		first, hi float64
	}{
		{"ttft", ttftBuckets(), 22, 0.001, 2560},
		{"token latency", tokenLatencyBuckets(), 19, 0.01, 80},
		{"request latency", requestLatencyBuckets(), 21, 0.3, 7680},
		{"iteration tokens", iterationTokenBuckets(), 13, 1, 16384},
		{"request tokens", requestTokenBuckets(), 19, 1, 1e6},
	} {
		if len(tt.b) != tt.n || tt.b[0] != tt.first || tt.b[len(tt.b)-1] != tt.hi || !slices.IsSorted(tt.b) {
			t.Errorf("%s: %v", tt.name, tt.b)
		}
	}
}

func TestCoordinatorLifecycle(t *testing.T) {
	reg, c := newCoordinator(t)
	c.RequestArrived()
	c.RequestArrived()
	c.RequestArrived()
	c.Rejected(RejectQueueFull)
	c.RequestStarted(time.Millisecond)
	if w, r := testutil.ToFloat64(c.waiting), testutil.ToFloat64(c.running); w != 1 || r != 1 {
		t.Fatalf("waiting %v running %v, want 1 and 1", w, r)
	}
	c.FirstToken(50 * time.Millisecond)
	c.Token(10 * time.Millisecond)
	c.Token(10 * time.Millisecond)
	c.RequestFinished(80*time.Millisecond, 12, 3, FinishLength, 15*time.Millisecond)
	c.RequestStarted(2 * time.Millisecond)
	c.RequestFinished(time.Second, 5, 1, "content_filter", 0) // one token: no TPOT
	c.Migrated(MigrationUnavailable)
	c.Migrated(MigrationUnavailable)
	c.RequestArrived()
	c.RequestStarted(time.Millisecond)
	c.Refused(RejectOverloaded)
	if w, r := testutil.ToFloat64(c.waiting), testutil.ToFloat64(c.running); w != 0 || r != 0 {
		t.Fatalf("waiting %v running %v, want 0 and 0", w, r)
	}
	for _, tt := range []struct {
		metric string
		want   float64
	}{
		{"tandem:prompt_tokens_total", 17},
		{"tandem:generation_tokens_total", 4},
	} {
		if got := testutil.ToFloat64(mustCounter(t, reg, tt.metric)); got != tt.want {
			t.Errorf("%s = %v, want %v", tt.metric, got, tt.want)
		}
	}
	if n := histogram(t, reg, "tandem:time_per_output_token_seconds").GetSampleCount(); n != 1 {
		t.Errorf("TPOT observations %d, want 1", n)
	}
	if n := histogram(t, reg, "tandem:inter_token_latency_seconds").GetSampleCount(); n != 2 {
		t.Errorf("ITL observations %d, want 2", n)
	}
	want := `
# HELP tandem:request_success_total Finished requests by finish reason.
# TYPE tandem:request_success_total counter
tandem:request_success_total{finished_reason="abort",model_name="tiny"} 0
tandem:request_success_total{finished_reason="content_filter",model_name="tiny"} 1
tandem:request_success_total{finished_reason="error",model_name="tiny"} 0
tandem:request_success_total{finished_reason="length",model_name="tiny"} 1
tandem:request_success_total{finished_reason="stop",model_name="tiny"} 0
tandem:request_success_total{finished_reason="timeout",model_name="tiny"} 0
# HELP tandem:request_rejected_total Requests refused before they started, by reason.
# TYPE tandem:request_rejected_total counter
tandem:request_rejected_total{model_name="tiny",reason="canceled"} 0
tandem:request_rejected_total{model_name="tiny",reason="deadline"} 0
tandem:request_rejected_total{model_name="tiny",reason="duplicate"} 0
tandem:request_rejected_total{model_name="tiny",reason="invalid"} 0
tandem:request_rejected_total{model_name="tiny",reason="overloaded"} 1
tandem:request_rejected_total{model_name="tiny",reason="queue_full"} 1
tandem:request_rejected_total{model_name="tiny",reason="unavailable"} 0
# HELP tandem:request_migrations_total Requests moved to other groups after a group failed them, by reason.
# TYPE tandem:request_migrations_total counter
tandem:request_migrations_total{model_name="tiny",reason="aborted"} 0
tandem:request_migrations_total{model_name="tiny",reason="group_left"} 0
tandem:request_migrations_total{model_name="tiny",reason="stream_ended"} 0
tandem:request_migrations_total{model_name="tiny",reason="unavailable"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"tandem:request_success_total", "tandem:request_rejected_total", "tandem:request_migrations_total"); err != nil {
		t.Error(err)
	}
}

// mustCounter wraps one gathered counter series as a Collector for
// testutil.ToFloat64.
func mustCounter(t *testing.T, g prometheus.Gatherer, name string) prometheus.Collector {
	t.Helper()
	mf, ok := gather(t, g)[name]
	if !ok || len(mf.GetMetric()) != 1 {
		t.Fatalf("%s: want one series", name)
	}
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x", Help: "x"})
	c.Add(mf.GetMetric()[0].GetCounter().GetValue())
	return c
}

func TestWorkerValues(t *testing.T) {
	reg, w := newWorker(t)
	w.Requests(3, 5)
	w.KVCache(25, 100)
	w.Step(512, 0, 20*time.Millisecond, time.Millisecond)
	w.Step(0, 3, 5*time.Millisecond, time.Millisecond)
	w.Step(-1, 1, 0, 0) // negatives count as zero, never panic
	w.Collective(OpAllReduce, 1<<20, 2*time.Millisecond)
	w.Collective(OpAllReduce, 1<<20, 2*time.Millisecond)
	w.Collective("alltoall", 8, time.Millisecond)
	w.Collective(OpBroadcast, -5, -time.Second) // ignored amounts, still a call
	w.KVTransfer(DirectionSend, 3<<20, 40*time.Millisecond)
	w.KVTransfer("sideways", 1, time.Second) // ignored
	want := `
# HELP tandem:num_requests_running Requests in the group's running batch (set by rank 0).
# TYPE tandem:num_requests_running gauge
tandem:num_requests_running{group="prefill-0",model_name="tiny",rank="1",role="prefill"} 3
# HELP tandem:num_requests_waiting Requests waiting for the group's scheduler (set by rank 0).
# TYPE tandem:num_requests_waiting gauge
tandem:num_requests_waiting{group="prefill-0",model_name="tiny",rank="1",role="prefill"} 5
# HELP tandem:kv_cache_usage_perc KV-cache usage: used blocks over all blocks; 1 means 100 percent.
# TYPE tandem:kv_cache_usage_perc gauge
tandem:kv_cache_usage_perc{group="prefill-0",model_name="tiny",rank="1",role="prefill"} 0.75
# HELP tandem:kv_cache_free_blocks Free KV-cache blocks.
# TYPE tandem:kv_cache_free_blocks gauge
tandem:kv_cache_free_blocks{group="prefill-0",model_name="tiny",rank="1",role="prefill"} 25
# HELP tandem:step_tokens_total Tokens processed by engine steps, by kind (prefill or decode).
# TYPE tandem:step_tokens_total counter
tandem:step_tokens_total{group="prefill-0",kind="decode",model_name="tiny",rank="1",role="prefill"} 4
tandem:step_tokens_total{group="prefill-0",kind="prefill",model_name="tiny",rank="1",role="prefill"} 512
# HELP tandem:collective_calls_total Collective calls, by op.
# TYPE tandem:collective_calls_total counter
tandem:collective_calls_total{group="prefill-0",model_name="tiny",op="allgather",rank="1",role="prefill"} 0
tandem:collective_calls_total{group="prefill-0",model_name="tiny",op="allreduce",rank="1",role="prefill"} 2
tandem:collective_calls_total{group="prefill-0",model_name="tiny",op="barrier",rank="1",role="prefill"} 0
tandem:collective_calls_total{group="prefill-0",model_name="tiny",op="broadcast",rank="1",role="prefill"} 1
tandem:collective_calls_total{group="prefill-0",model_name="tiny",op="other",rank="1",role="prefill"} 1
tandem:collective_calls_total{group="prefill-0",model_name="tiny",op="recv",rank="1",role="prefill"} 0
tandem:collective_calls_total{group="prefill-0",model_name="tiny",op="send",rank="1",role="prefill"} 0
# HELP tandem:collective_bytes_total Bytes of the caller's buffer passed to collective calls, by op.
# TYPE tandem:collective_bytes_total counter
tandem:collective_bytes_total{group="prefill-0",model_name="tiny",op="allgather",rank="1",role="prefill"} 0
tandem:collective_bytes_total{group="prefill-0",model_name="tiny",op="allreduce",rank="1",role="prefill"} 2.097152e+06
tandem:collective_bytes_total{group="prefill-0",model_name="tiny",op="barrier",rank="1",role="prefill"} 0
tandem:collective_bytes_total{group="prefill-0",model_name="tiny",op="broadcast",rank="1",role="prefill"} 0
tandem:collective_bytes_total{group="prefill-0",model_name="tiny",op="other",rank="1",role="prefill"} 8
tandem:collective_bytes_total{group="prefill-0",model_name="tiny",op="recv",rank="1",role="prefill"} 0
tandem:collective_bytes_total{group="prefill-0",model_name="tiny",op="send",rank="1",role="prefill"} 0
# HELP tandem:kv_transfer_bytes_total KV-cache bytes moved between groups, by direction.
# TYPE tandem:kv_transfer_bytes_total counter
tandem:kv_transfer_bytes_total{direction="recv",group="prefill-0",model_name="tiny",rank="1",role="prefill"} 0
tandem:kv_transfer_bytes_total{direction="send",group="prefill-0",model_name="tiny",rank="1",role="prefill"} 3.145728e+06
# HELP tandem:kv_transfer_seconds_total Time spent moving KV cache between groups, by direction.
# TYPE tandem:kv_transfer_seconds_total counter
tandem:kv_transfer_seconds_total{direction="recv",group="prefill-0",model_name="tiny",rank="1",role="prefill"} 0
tandem:kv_transfer_seconds_total{direction="send",group="prefill-0",model_name="tiny",rank="1",role="prefill"} 0.04
# HELP tandem:kv_transfers_total KV-cache transfers (one request's share of this rank), by direction.
# TYPE tandem:kv_transfers_total counter
tandem:kv_transfers_total{direction="recv",group="prefill-0",model_name="tiny",rank="1",role="prefill"} 0
tandem:kv_transfers_total{direction="send",group="prefill-0",model_name="tiny",rank="1",role="prefill"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"tandem:num_requests_running", "tandem:num_requests_waiting", "tandem:kv_cache_usage_perc",
		"tandem:kv_cache_free_blocks", "tandem:step_tokens_total", "tandem:collective_calls_total",
		"tandem:collective_bytes_total", "tandem:kv_transfer_bytes_total", "tandem:kv_transfer_seconds_total",
		"tandem:kv_transfers_total"); err != nil {
		t.Error(err)
	}
	if got := testutil.ToFloat64(w.coll[opAllReduce].seconds); got != 0.004 {
		t.Errorf("allreduce seconds = %v, want 0.004", got)
	}
}

func TestKVCacheEmptyPool(t *testing.T) {
	_, w := newWorker(t)
	w.KVCache(0, 0)
	if got := testutil.ToFloat64(w.kvUsage); got != 0 {
		t.Errorf("usage of an empty pool = %v, want 0", got)
	}
}

func TestHandler(t *testing.T) {
	reg, c := newCoordinator(t)
	c.RequestArrived()
	srv := httptest.NewServer(Handler(reg))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("content type %q, want the text format", ct)
	}
	for _, f := range coordinatorFamilies() {
		typ := strings.ToLower(f.typ.String())
		if !strings.Contains(string(body), "# TYPE "+f.name+" "+typ+"\n") {
			t.Errorf("no %q TYPE line for %s", typ, f.name)
		}
	}
	if !strings.Contains(string(body), `tandem:num_requests_waiting{model_name="tiny"} 1`+"\n") {
		t.Errorf("waiting gauge not served:\n%s", body)
	}
}

// TestHandlerSurvivesFailingCollector: one collector's error must not hide
// the other metrics.
func TestHandlerSurvivesFailingCollector(t *testing.T) {
	reg, _ := newCoordinator(t)
	reg.MustRegister(failingCollector{})
	rec := httptest.NewRecorder()
	Handler(reg).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "tandem:num_requests_running") {
		t.Fatalf("status %d, body:\n%s", rec.Code, rec.Body)
	}
}

type failingCollector struct{}

func (failingCollector) desc() *prometheus.Desc {
	return prometheus.NewDesc("test_failing", "Always fails.", nil, nil)
}
func (f failingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc() }
func (f failingCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(f.desc(), errors.New("broken"))
}

// lintExceptions are the promlint problems Tandem accepts, each for
// compatibility with vLLM's names (see docs/metrics.md).
func lintExceptions(p promlint.Problem) bool {
	switch {
	case p.Text == "metric names should not contain ':'":
		return true // the "tandem:" prefix mirrors vLLM's "vllm:"
	case p.Metric == "tandem:iteration_tokens_total" && p.Text == `non-counter metrics should not have "_total" suffix`:
		return true // vLLM's name for this histogram
	}
	return false
}

func TestLint(t *testing.T) {
	for _, tt := range []struct {
		name string
		reg  func(testing.TB) *prometheus.Registry
	}{
		{"coordinator", func(t testing.TB) *prometheus.Registry { r, _ := newCoordinator(t); return r }},
		{"worker", func(t testing.TB) *prometheus.Registry { r, _ := newWorker(t); return r }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			problems, err := testutil.GatherAndLint(tt.reg(t))
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range problems {
				if !lintExceptions(p) {
					t.Errorf("%s: %s", p.Metric, p.Text)
				}
			}
		})
	}
}

func TestNewRegistry(t *testing.T) {
	reg := NewRegistry()
	NewCoordinator(reg, "tiny")
	got := gather(t, reg)
	for _, name := range []string{"go_goroutines", "tandem:num_requests_running"} {
		if _, ok := got[name]; !ok {
			t.Errorf("%s missing", name)
		}
	}
}

func TestDoubleRegistrationPanics(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewWorker(reg, testWorkerLabels)
	defer func() {
		if recover() == nil {
			t.Error("second NewWorker on one registry did not panic")
		}
	}()
	NewWorker(reg, testWorkerLabels)
}

// TestHotPathAllocs holds the per-token and per-step calls to zero
// allocations.
func TestHotPathAllocs(t *testing.T) {
	_, c := newCoordinator(t)
	_, w := newWorker(t)
	for _, tt := range []struct {
		name string
		f    func()
	}{
		{"Coordinator.Token", func() { c.Token(12 * time.Millisecond) }},
		{"Coordinator.FirstToken", func() { c.FirstToken(80 * time.Millisecond) }},
		{"Coordinator lifecycle", func() {
			c.RequestArrived()
			c.RequestStarted(time.Millisecond)
			c.RequestFinished(time.Second, 100, 20, FinishStop, 40*time.Millisecond)
			c.RequestArrived()
			c.Rejected(RejectQueueFull)
		}},
		{"Worker.Step", func() { w.Step(128, 16, 20*time.Millisecond, 300*time.Microsecond) }},
		{"Worker.Collective", func() { w.Collective(OpAllReduce, 1<<16, 50*time.Microsecond) }},
		{"Worker.Requests", func() { w.Requests(16, 2) }},
		{"Worker.KVCache", func() { w.KVCache(700, 1024) }},
		{"Worker.KVTransfer", func() { w.KVTransfer(DirectionRecv, 1<<24, 30*time.Millisecond) }},
	} {
		if n := testing.AllocsPerRun(1000, tt.f); n != 0 {
			t.Errorf("%s: %v allocs per call, want 0", tt.name, n)
		}
	}
}

func BenchmarkCoordinatorToken(b *testing.B) {
	_, c := newCoordinator(b)
	b.ReportAllocs()
	for b.Loop() {
		c.Token(12 * time.Millisecond)
	}
}

func BenchmarkWorkerStep(b *testing.B) {
	_, w := newWorker(b)
	b.ReportAllocs()
	for b.Loop() {
		w.Step(128, 16, 20*time.Millisecond, 300*time.Microsecond)
	}
}

// BenchmarkWorkerStepWithCollectives is a step of a 16-layer model at
// TP > 1: two allreduces per layer and the logits' allgather.
func BenchmarkWorkerStepWithCollectives(b *testing.B) {
	_, w := newWorker(b)
	b.ReportAllocs()
	for b.Loop() {
		w.Step(0, 32, 20*time.Millisecond, 300*time.Microsecond)
		for range 32 {
			w.Collective(OpAllReduce, 1<<16, 50*time.Microsecond)
		}
		w.Collective(OpAllGather, 1<<20, 200*time.Microsecond)
	}
}

// TestDocumented keeps docs/metrics.md in step with the code: every
// exported name must appear in it.
func TestDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range append(coordinatorFamilies(), workerFamilies()...) {
		if !strings.Contains(string(doc), "`"+f.name+"`") {
			t.Errorf("%s is not in docs/metrics.md", f.name)
		}
	}
}
