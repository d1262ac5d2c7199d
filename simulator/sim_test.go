package simulator

import (
	"errors"
	"math"
	"testing"

	"github.com/tandemllm/tandem/bench"
	"github.com/tandemllm/tandem/costmodel"
	"github.com/tandemllm/tandem/model/preset"
)

func costModel(t *testing.T, presetName, hw, link string) *costmodel.Model {
	t.Helper()
	p, err := preset.Get(presetName)
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Config()
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
	s, err := costmodel.NewShape(presetName, c, h.Kind, costmodel.DTypes{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := costmodel.New(s, h, l, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func step(t *testing.T, m *costmodel.Model, tp int, rows ...costmodel.Rows) costmodel.StepCost {
	t.Helper()
	c, err := m.Step(m.GroupOf(tp), rows)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// onShared is a step's time when its tp ranks share one device.
func onShared(c costmodel.StepCost, tp int) float64 {
	return float64(tp)*c.Compute() + c.Sampling + c.Communication() + c.Overhead
}

func closeTo(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-9*math.Abs(want)+1e-12 {
		t.Errorf("%s = %.9g s, want %.9g", what, got, want)
	}
}

// At a tiny load (one request) the simulator's latencies are the single
// request's steps added up: TTFT is the coordinator's hops around the
// prompt's chunks, every later token one decode step.
func TestOneRequestIsTheSingleRequestFormula(t *testing.T) {
	for _, tc := range []struct {
		hw, link string
		tp       int
	}{{"cpu", "loopback", 1}, {"cpu", "eth-25g", 2}, {"h100-sxm", "ib-400g", 4}} {
		m := costModel(t, "llama-160m", tc.hw, tc.link)
		const in, out = 700, 4 // 700 = chunks of 512 and 188
		res, err := Run(Options{Cost: m, Deployment: Deployment{Mode: ModeUnified, Unified: Pool{1, tc.tp}},
			Workload: Workload{Requests: []Request{{in, out}}}})
		if err != nil {
			t.Fatal(err)
		}
		shared := m.HW.Shared
		dur := func(c costmodel.StepCost) float64 {
			if shared {
				return onShared(c, tc.tp)
			}
			return c.Total()
		}
		hop := m.Eff.RequestOverhead / 2
		ttft := hop + dur(step(t, m, tc.tp, costmodel.Rows{Pos: 0, Rows: 512})) +
			dur(step(t, m, tc.tp, costmodel.Rows{Pos: 512, Rows: 188, Sample: true})) + hop
		closeTo(t, tc.hw+" TTFT", res.TTFT.Mean, ttft)
		e2e := ttft
		for k := range out - 1 {
			itl := dur(step(t, m, tc.tp, costmodel.Rows{Pos: in + k, Rows: 1, Sample: true}))
			closeTo(t, tc.hw+" ITL", res.ITL.Samples[k], itl) // one request: samples in order of size = of position
			e2e += itl
		}
		closeTo(t, tc.hw+" E2E", res.E2EL.Mean, e2e)
		closeTo(t, tc.hw+" TPOT", res.TPOT.Mean, (e2e-ttft)/(out-1))
	}
}

// Disaggregated: the first token comes from the prefill group; the
// second waits for the decode call and for the KV still in flight after
// the prefill's last step, then for the decode ranks to load it.
func TestOneRequestDisaggregated(t *testing.T) {
	m := costModel(t, "llama-160m", "cpu", "eth-25g")
	const in, out = 300, 3
	res, err := Run(Options{Cost: m, Deployment: Deployment{Mode: ModeDisaggregated, Prefill: Pool{1, 1}, Decode: Pool{1, 2}},
		Workload: Workload{Requests: []Request{{in, out}}}})
	if err != nil {
		t.Fatal(err)
	}
	hop := m.Eff.RequestOverhead / 2
	pre := onShared(step(t, m, 1, costmodel.Rows{Pos: 0, Rows: in, Sample: true}), 1)
	closeTo(t, "TTFT", res.TTFT.Mean, hop+pre+hop)
	xfer, err := m.KVTransfer(1, 2, in, false)
	if err != nil {
		t.Fatal(err)
	}
	end := hop + pre
	ready := max(end+2*hop, end+m.VisibleTransfer(xfer, pre)) + m.KVLoad(1, 2, in) + hop
	d1 := onShared(step(t, m, 2, costmodel.Rows{Pos: in, Rows: 1, Sample: true}), 2)
	d2 := onShared(step(t, m, 2, costmodel.Rows{Pos: in + 1, Rows: 1, Sample: true}), 2)
	closeTo(t, "E2E", res.E2EL.Mean, ready+d1+d2+hop)
	if res.Parts.KVTransfer <= 0 {
		t.Errorf("KV transfer part %g, want positive", res.Parts.KVTransfer)
	}
}

func TestDeterministicForASeed(t *testing.T) {
	m := costModel(t, "llama-160m", "h100-sxm", "ib-400g")
	run := func(seed uint64) *Result {
		res, err := Run(Options{Cost: m, Deployment: Deployment{Mode: ModeDisaggregated, Prefill: Pool{2, 1}, Decode: Pool{1, 2}},
			Workload: Workload{NumPrompts: 200, InputLen: 256, OutputLen: 32, RangeRatio: 0.5, RequestRate: 400, Seed: seed}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	a, b, c := run(1), run(1), run(2)
	if a.TTFT.Mean != b.TTFT.Mean || a.ITL.Percentile(99) != b.ITL.Percentile(99) || a.Duration != b.Duration {
		t.Errorf("two runs with seed 1 differ: TTFT %g vs %g", a.TTFT.Mean, b.TTFT.Mean)
	}
	if a.Duration == c.Duration {
		t.Error("seeds 1 and 2 gave the same run")
	}
	if a.Completed != 200 || a.Failed != 0 {
		t.Errorf("%d completed, %d failed, want 200 and 0", a.Completed, a.Failed)
	}
}

// Load makes queues: at a rate beyond the deployment's throughput TTFT
// grows far above the idle TTFT, and a fixed concurrency of 1 keeps
// every request alone.
func TestQueueingAndConcurrency(t *testing.T) {
	m := costModel(t, "llama-160m", "cpu", "loopback")
	d := Deployment{Mode: ModeUnified, Unified: Pool{1, 1}}
	reqs := make([]Request, 6)
	for i := range reqs {
		reqs[i] = Request{128, 8}
	}
	alone, err := Run(Options{Cost: m, Deployment: d, Workload: Workload{Requests: reqs[:1]}})
	if err != nil {
		t.Fatal(err)
	}
	one, err := Run(Options{Cost: m, Deployment: d, Workload: Workload{Requests: reqs, MaxConcurrency: 1}})
	if err != nil {
		t.Fatal(err)
	}
	closeTo(t, "TTFT at concurrency 1", one.TTFT.Percentile(100), alone.TTFT.Mean)
	burst, err := Run(Options{Cost: m, Deployment: d, Workload: Workload{Requests: reqs}})
	if err != nil {
		t.Fatal(err)
	}
	if burst.TTFT.Percentile(100) < 3*alone.TTFT.Mean {
		t.Errorf("6 requests at once: worst TTFT %.3g s, want well above one alone (%.3g s)", burst.TTFT.Percentile(100), alone.TTFT.Mean)
	}
	if burst.Duration >= one.Duration {
		t.Errorf("batching 6 requests took %.3g s, not less than one at a time (%.3g s)", burst.Duration, one.Duration)
	}
}

// A KV cache too small for every sequence at once preempts and still
// finishes every request.
func TestPreemptionFinishesEverything(t *testing.T) {
	m := costModel(t, "llama-160m", "cpu", "loopback")
	per, _ := m.Shape.KVBytesPerTokenPerRank(1)
	res, err := Run(Options{Cost: m, Deployment: Deployment{Mode: ModeUnified, Unified: Pool{1, 1}},
		KVCacheBytes: float64(per * 16 * 16), // 16 blocks of 16 tokens: two prompts fit, not their outputs
		Workload:     Workload{NumPrompts: 8, InputLen: 100, OutputLen: 60, Seed: 3}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Preemptions == 0 || res.Completed != 8 {
		t.Errorf("%d preemptions, %d completed; want some preemptions and all 8 done", res.Preemptions, res.Completed)
	}
}

// Arrivals are the bench's for the same seed: Poisson at the mean rate,
// gamma-bursty when asked.
func TestPoissonArrivals(t *testing.T) {
	w := Workload{NumPrompts: 4000, InputLen: 10, OutputLen: 10, RequestRate: 50, Seed: 7}
	_, at, err := w.requests()
	if err != nil {
		t.Fatal(err)
	}
	if mean := at[len(at)-1] / float64(len(at)); math.Abs(mean-0.02) > 1e-9 {
		t.Errorf("mean gap %.6g s at 50 req/s, want 0.02 (the bench scales the last arrival to n/rate)", mean)
	}
	for i, d := range bench.Arrivals(len(at), 50, 1, 7) {
		if at[i] != d.Seconds() {
			t.Fatalf("arrival %d at %g s, the bench sends it at %g s", i, at[i], d.Seconds())
		}
	}
	gaps := func(at []float64) (cv float64) {
		var sum, ss float64
		n := float64(len(at) - 1)
		for i := 1; i < len(at); i++ {
			sum += at[i] - at[i-1]
		}
		m := sum / n
		for i := 1; i < len(at); i++ {
			ss += (at[i] - at[i-1] - m) * (at[i] - at[i-1] - m)
		}
		return math.Sqrt(ss/n) / m
	}
	if cv := gaps(at); math.Abs(cv-1) > 0.1 {
		t.Errorf("Poisson gaps have a coefficient of variation %.3g, want 1", cv)
	}
	w.Burstiness = 0.25
	_, bursty, err := w.requests()
	if err != nil {
		t.Fatal(err)
	}
	if cv := gaps(bursty); math.Abs(cv-2) > 0.2 { // gamma shape k: cv = 1/√k
		t.Errorf("burstiness 0.25 gives a coefficient of variation %.3g, want 2", cv)
	}
}

// numpy.percentile([1, 2, 3, 4], p) with linear interpolation.
func TestPercentileIsNumpys(t *testing.T) {
	d := newDist([]float64{4, 1, 3, 2})
	for p, want := range map[float64]float64{0: 1, 50: 2.5, 90: 3.7, 99: 3.97, 100: 4} {
		if got := d.Percentile(p); math.Abs(got-want) > 1e-12 {
			t.Errorf("p%g = %g, want %g", p, got, want)
		}
	}
	if d.Mean != 2.5 || math.Abs(d.Std-math.Sqrt(1.25)) > 1e-12 {
		t.Errorf("mean %g std %g, want 2.5 and %g", d.Mean, d.Std, math.Sqrt(1.25))
	}
}

func TestGoodputCountsRequestsMeetingEverySLO(t *testing.T) {
	m := costModel(t, "llama-160m", "cpu", "loopback")
	reqs := []Request{{64, 4}, {64, 4}, {64, 4}, {64, 4}}
	opts := Options{Cost: m, Deployment: Deployment{Mode: ModeUnified, Unified: Pool{1, 1}}, Workload: Workload{Requests: reqs}}
	all, err := Run(opts)
	if err != nil {
		t.Fatal(err)
	}
	// A TTFT bound between the best and the worst TTFT keeps some.
	opts.SLO = SLO{TTFT: (all.TTFT.Percentile(0) + all.TTFT.Percentile(100)) / 2}
	res, err := Run(opts)
	if err != nil {
		t.Fatal(err)
	}
	var want int
	for _, x := range res.TTFT.Samples {
		if x <= opts.SLO.TTFT {
			want++
		}
	}
	if res.Good != want || want == 0 || want == 4 {
		t.Errorf("%d good requests, want %d (of 4, strictly between)", res.Good, want)
	}
	closeTo(t, "goodput", res.Goodput, float64(want)/res.Duration)
}

func TestBadInput(t *testing.T) {
	m := costModel(t, "llama-160m", "cpu", "loopback")
	for _, tc := range []struct {
		name string
		opts Options
		want error
	}{
		{"bad mode", Options{Cost: m, Deployment: Deployment{Mode: "colocated"}, Workload: Workload{Requests: []Request{{1, 1}}}}, ErrInvalidDeployment},
		{"no groups", Options{Cost: m, Deployment: Deployment{Mode: ModeUnified}, Workload: Workload{Requests: []Request{{1, 1}}}}, ErrInvalidDeployment},
		{"TP 3", Options{Cost: m, Deployment: Deployment{Mode: ModeUnified, Unified: Pool{1, 3}}, Workload: Workload{Requests: []Request{{1, 1}}}}, ErrInvalidDeployment},
		{"empty workload", Options{Cost: m, Deployment: Deployment{Mode: ModeUnified, Unified: Pool{1, 1}}}, ErrInvalidWorkload},
		{"negative rate", Options{Cost: m, Deployment: Deployment{Mode: ModeUnified, Unified: Pool{1, 1}},
			Workload: Workload{Requests: []Request{{1, 1}}, RequestRate: -1}}, ErrInvalidWorkload},
	} {
		if _, err := Run(tc.opts); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// A model too big for the device does not fit.
	big := costModel(t, "llama-1b", "h100-sxm", "ib-400g")
	big.HW.MemoryBytes = 1e9
	if _, err := Run(Options{Cost: big, Deployment: Deployment{Mode: ModeUnified, Unified: Pool{1, 1}},
		Workload: Workload{Requests: []Request{{1, 1}}}}); !errors.Is(err, costmodel.ErrDoesNotFit) {
		t.Errorf("llama-1b on a 1 GB device: %v, want ErrDoesNotFit", err)
	}
}
