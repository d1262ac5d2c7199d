package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/tandemllm/tandem/bench/dataset"
)

func TestArrivals(t *testing.T) {
	for _, b := range []float64{1, 0.25, 4, math.Inf(1)} {
		a := Arrivals(200, 10, b, 1)
		if got := a[len(a)-1]; (got - 20*time.Second).Abs() > time.Microsecond {
			t.Errorf("burstiness %v: last arrival %v, want 20s (n/rate)", b, got)
		}
		for i := 1; i < len(a); i++ {
			if a[i] < a[i-1] {
				t.Fatalf("burstiness %v: arrival %d before %d", b, i, i-1)
			}
		}
	}
	// Burstier arrivals have more variable gaps: the coefficient of
	// variation of gamma gaps is 1/sqrt(burstiness).
	cv := func(b float64) float64 {
		a := Arrivals(4000, 10, b, 2)
		gaps := make([]float64, len(a))
		prev := time.Duration(0)
		var mean float64
		for i, x := range a {
			gaps[i] = (x - prev).Seconds()
			prev = x
			mean += gaps[i]
		}
		mean /= float64(len(gaps))
		var v float64
		for _, g := range gaps {
			v += (g - mean) * (g - mean)
		}
		return math.Sqrt(v/float64(len(gaps))) / mean
	}
	for _, tt := range []struct{ b, want float64 }{{1, 1}, {0.25, 2}, {4, 0.5}} {
		if got := cv(tt.b); math.Abs(got-tt.want) > 0.12*tt.want {
			t.Errorf("burstiness %v: gap CV %.3f, want about %.2f", tt.b, got, tt.want)
		}
	}
	for _, d := range Arrivals(5, math.Inf(1), 1, 1) {
		if d != 0 {
			t.Fatal("an infinite rate must send everything at once")
		}
	}
}

func TestPyFloat(t *testing.T) {
	for f, want := range map[float64]string{math.Inf(1): "inf", 4: "4.0", 0.5: "0.5", 12.25: "12.25", 100: "100.0"} {
		if got := PyFloat(f); got != want {
			t.Errorf("PyFloat(%v) = %q, want %q", f, got, want)
		}
	}
	for p, want := range map[float64]string{99: "99", 99.9: "99.9", 50: "50", 12.5: "12.5"} {
		if got := PercentileKey(p); got != want {
			t.Errorf("PercentileKey(%v) = %q, want %q", p, got, want)
		}
	}
}

// TestSummarize checks vLLM's definitions on a run built by hand: TPOT
// excludes the first token and skips one-token requests, ITLs pool,
// failures stay out of the statistics, goodput counts requests meeting
// every SLO (TPOT 0 for one-token requests).
func TestSummarize(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
	run := &Run{
		Options: Options{Workload: []dataset.Request{{PromptLen: 5}, {PromptLen: 6}, {PromptLen: 7}, {PromptLen: 8}},
			Load: Load{RequestRate: math.Inf(1), Burstiness: 1, MaxConcurrency: 2}},
		Began: t0, Duration: 2 * time.Second, QueueTimes: make([]time.Duration, 4),
		Outputs: []Output{
			{Success: true, Start: t0, PromptLen: 5, OutputTokens: 3, TTFT: ms(100), ITL: []time.Duration{ms(10), ms(30)}, Latency: ms(140), RequestID: "a"},
			{Success: true, Start: t0.Add(ms(50)), PromptLen: 6, OutputTokens: 1, TTFT: ms(300), Latency: ms(300), RequestID: "b"},
			{Success: false, Start: t0, Code: "UNAVAILABLE", Error: "no group", RequestID: "c"},
			{Success: true, Start: t0.Add(ms(1200)), PromptLen: 8, OutputTokens: 2, TTFT: ms(50), ITL: []time.Duration{ms(200)}, Latency: ms(250), RequestID: "d"},
		},
	}
	r := Summarize(run, Settings{Percentiles: []float64{50, 99}, PercentileMetrics: Metrics,
		Goodput: map[string]float64{TTFT: 200, TPOT: 100}, Backend: "tandem", ModelID: "m"})
	if r.Completed != 3 || r.Failed != 1 || r.ErrorsByCode["UNAVAILABLE"] != 1 || r.TotalInput != 19 || r.TotalOutput != 6 {
		t.Fatalf("counts: %+v", r)
	}
	// TPOTs: (140−100)/2 = 20 ms; (250−50)/1 = 200 ms; the one-token
	// request has none.
	tpot := r.Stats[TPOT]
	if math.Abs(tpot.Mean-110) > 1e-9 || len(r.Samples[TPOT]) != 2 {
		t.Fatalf("TPOT %+v from %v, want mean 110 ms of two", tpot, r.Samples[TPOT])
	}
	if itl := r.Stats[ITL]; math.Abs(itl.Mean-80) > 1e-9 || math.Abs(itl.Median-30) > 1e-9 {
		t.Fatalf("ITL %+v, want mean 80, median 30", itl)
	}
	// Good: a (TTFT 100, TPOT 20) and b (TTFT 300 fails); d (TPOT 200
	// fails): one good request in 2 s.
	if r.RequestGoodput == nil || *r.RequestGoodput != 0.5 {
		t.Fatalf("goodput %v, want 0.5 req/s", r.RequestGoodput)
	}
	if r.RequestThroughput != 1.5 || r.OutputThroughput != 3 {
		t.Fatalf("throughputs %v %v", r.RequestThroughput, r.OutputThroughput)
	}
	// Second 0 holds a's three tokens and b's one; d's two fall in second 1.
	if r.MaxConcurrentRequests != 2 || r.MaxOutputTokensPerS != 4 {
		t.Fatalf("peaks: %d requests, %v tok/s; want 2 and 4", r.MaxConcurrentRequests, r.MaxOutputTokensPerS)
	}
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var keys map[string]any
	if err := json.Unmarshal(data, &keys); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"completed", "request_throughput", "request_goodput", "output_throughput", "mean_ttft_ms",
		"median_ttft_ms", "std_ttft_ms", "p99_ttft_ms", "p50_tpot_ms", "mean_itl_ms", "p99_e2el_ms", "ttfts", "itls",
		"input_lens", "output_lens", "errors", "request_ids", "duration", "max_concurrency"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("result JSON lacks %q", k)
		}
	}
	if keys["request_rate"] != "inf" || keys["max_concurrency"] != 2.0 {
		t.Errorf("request_rate %v, max_concurrency %v", keys["request_rate"], keys["max_concurrency"])
	}
	if got := r.FileName(); got != "tandem-infqps-concurrency2-m-"+t0.Format("20060102-150405")+".json" {
		t.Errorf("file name %q", got)
	}
}

// gate is a Target whose requests from the index open on end only
// when their context ends; the ones before succeed at once. started
// receives each request's id as it is sent.
type gate struct {
	open    int
	started chan string
}

func (g *gate) Model(context.Context) (string, error) { return "m", nil }

func (g *gate) Send(ctx context.Context, r Request) Output {
	g.started <- r.ID
	var i int
	fmt.Sscanf(r.ID[strings.LastIndexByte(r.ID, '-')+1:], "%d", &i)
	if i < g.open {
		return Output{Success: true, RequestID: r.ID, Start: time.Now(), OutputTokens: 1}
	}
	<-ctx.Done()
	return Output{RequestID: r.ID, Start: time.Now(), Code: "CANCELLED", Error: ctx.Err().Error()}
}

// TestExecuteInterrupted: a run cancelled midway stops sending, returns
// what it measured with its error, and marks the requests it never sent.
func TestExecuteInterrupted(t *testing.T) {
	g := &gate{open: 2, started: make(chan string, 10)}
	ctx, cancel := context.WithCancel(t.Context())
	w := make([]dataset.Request, 10)
	done := make(chan struct{})
	var run *Run
	var err error
	go func() {
		defer close(done)
		run, err = Execute(ctx, g, Options{Workload: w, Load: Load{RequestRate: math.Inf(1), MaxConcurrency: 1}, IDPrefix: "x-"})
	}()
	for range 3 {
		<-g.started // 0 and 1 done, 2 waiting on the context
	}
	cancel()
	<-done
	if !errors.Is(err, context.Canceled) || run == nil {
		t.Fatalf("run %v, error %v; want the partial run and context.Canceled", run, err)
	}
	if len(g.started) != 0 {
		t.Fatalf("%d more requests sent after the cancel", len(g.started))
	}
	r := Summarize(run, Settings{Percentiles: []float64{50}, PercentileMetrics: Metrics})
	if r.Completed != 2 || r.ErrorsByCode["CANCELLED"] != 1 || r.ErrorsByCode[NotSent] != 7 || r.RequestIDs[9] != "x-9" {
		t.Fatalf("completed %d, by code %v, ids %v", r.Completed, r.ErrorsByCode, r.RequestIDs)
	}
}
