package simulator

import (
	"errors"
	"math"
	"slices"
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

// onShared is a step's time when its ranks compute at rate of the
// shared device's speed.
func onShared(c costmodel.StepCost, rate float64) float64 {
	return c.Compute()/rate + c.Sampling + c.Communication() + c.Overhead
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
			Workload: Workload{Requests: []Request{{Input: in, Output: out}}}})
		if err != nil {
			t.Fatal(err)
		}
		// On the 2-core CPU, tandem up gives a TP-1 rank both cores and
		// TP-2 and TP-4 ranks one each: every rank then gets 1/tp of the
		// machine, so the group computes no faster than one rank would.
		shared := m.HW.Shared
		dur := func(c costmodel.StepCost) float64 {
			if shared {
				return onShared(c, 1/float64(tc.tp))
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
		Workload: Workload{Requests: []Request{{Input: in, Output: out}}}})
	if err != nil {
		t.Fatal(err)
	}
	hop := m.Eff.RequestOverhead / 2
	// Three ranks on 2 cores: tandem up gives each one thread, so the
	// prefill rank computes alone at half the machine's speed, and each
	// decode rank, its two threads filling the cores, at half as well.
	pre := onShared(step(t, m, 1, costmodel.Rows{Pos: 0, Rows: in, Sample: true}), 0.5)
	closeTo(t, "TTFT", res.TTFT.Mean, hop+pre+hop)
	xfer, err := m.KVTransfer(1, 2, in, false)
	if err != nil {
		t.Fatal(err)
	}
	end := hop + pre
	ready := max(end+2*hop, end+m.VisibleTransfer(xfer, pre)) + m.KVLoad(1, 2, in) + hop
	d1 := onShared(step(t, m, 2, costmodel.Rows{Pos: in, Rows: 1, Sample: true}), 0.5)
	d2 := onShared(step(t, m, 2, costmodel.Rows{Pos: in + 1, Rows: 1, Sample: true}), 0.5)
	closeTo(t, "E2E", res.E2EL.Mean, ready+d1+d2+hop)
	if res.Parts.KVTransfer <= 0 {
		t.Errorf("KV transfer part %g, want positive", res.Parts.KVTransfer)
	}
}

// On one 2-core machine TP cannot speed compute up: a TP-n group's
// ranks share the same cores. On GPUs, where each rank owns a device, it
// does.
func TestTPOnSharedCores(t *testing.T) {
	ttft := func(m *costmodel.Model, tp int) float64 {
		res, err := Run(Options{Cost: m, Deployment: Deployment{Mode: ModeUnified, Unified: Pool{1, tp}},
			Workload: Workload{Requests: []Request{{Input: 2048, Output: 2}}}})
		if err != nil {
			t.Fatal(err)
		}
		return res.TTFT.Mean
	}
	cpu, gpu := costModel(t, "llama-160m", "cpu", "loopback"), costModel(t, "llama-1b", "h100-sxm", "ib-400g")
	for _, tp := range []int{2, 4} {
		if a, b := ttft(cpu, tp/2), ttft(cpu, tp); b < a {
			t.Errorf("cpu: TP %d's TTFT %.4g s is below TP %d's %.4g s on the same 2 cores", tp, b, tp/2, a)
		}
		if a, b := ttft(gpu, tp/2), ttft(gpu, tp); b >= a {
			t.Errorf("h100: TP %d's TTFT %.4g s is not below TP %d's %.4g s", tp, b, tp/2, a)
		}
	}
}

// A disaggregated prefill competes with the decode beside it only when
// their threads outnumber the cores: with tandem up's one thread per
// rank on 2 cores each computes at half speed whether or not the other
// is busy; given both cores each, they slow each other down.
func TestPrefillCompetesWithDecode(t *testing.T) {
	m := costModel(t, "llama-160m", "cpu", "loopback")
	// A's 64-token prompt is one step; B's 512 are eight chunks of 64,
	// computed while A decodes its 40 tokens.
	reqs := []Request{{Input: 64, Output: 40}, {Input: 512, Output: 1}}
	d := Deployment{Mode: ModeDisaggregated, Prefill: Pool{1, 1}, Decode: Pool{1, 1}}
	run := func(threads int) *Result {
		res, err := Run(Options{Cost: m, Deployment: d, Engine: EngineOptions{MaxBatchTokens: 64, Threads: threads},
			Workload: Workload{Requests: reqs}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	hop := m.Eff.RequestOverhead / 2
	prefillB := func(rate float64) float64 { // hop, A's step, B's chunks, hop
		sum := 2*hop + onShared(step(t, m, 1, costmodel.Rows{Pos: 0, Rows: 64, Sample: true}), rate)
		for pos := 0; pos < 512; pos += 64 {
			sum += onShared(step(t, m, 1, costmodel.Rows{Pos: pos, Rows: 64, Sample: pos+64 == 512}), rate)
		}
		return sum
	}
	one := run(0) // tandem up's default: 2 ranks, 1 thread each
	closeTo(t, "B's TTFT, one thread per rank", one.TTFT.Percentile(100), prefillB(0.5))
	two := run(2) // both cores each: full speed alone, half beside the decode
	if got := two.TTFT.Percentile(100); got <= prefillB(1)*1.05 || got >= prefillB(0.5) {
		t.Errorf("B's TTFT with 2 threads per rank %.4g s, want above %.4g s (alone) and below %.4g s (always shared)",
			got, prefillB(1), prefillB(0.5))
	}
	if two.ITL.Percentile(100) <= two.ITL.Percentile(0)*1.2 {
		t.Errorf("A's decode steps beside B's prefill (ITL max %.4g s) are no slower than alone (min %.4g s)",
			two.ITL.Percentile(100), two.ITL.Percentile(0))
	}
}

// Prompts sharing a prefix skip its whole blocks where a prefill or
// unified group caches it (--no-prefix-caching: never), and the
// coordinator's routing sends a prefix back to the group holding it.
func TestPrefixCacheHits(t *testing.T) {
	m := costModel(t, "llama-160m", "cpu", "loopback")
	// 200 tokens of prefix are 12 whole blocks: every prompt but the
	// first of each of the 2 prefixes takes 192 tokens from the cache.
	w := Workload{NumPrompts: 12, InputLen: 32, OutputLen: 4, PrefixLen: 200, NumPrefixes: 2, MaxConcurrency: 1, Seed: 5}
	for _, d := range []Deployment{
		{Mode: ModeUnified, Unified: Pool{2, 1}},
		{Mode: ModeDisaggregated, Prefill: Pool{2, 1}, Decode: Pool{1, 1}},
	} {
		on, err := Run(Options{Cost: m, Deployment: d, Workload: w})
		if err != nil {
			t.Fatal(err)
		}
		off, err := Run(Options{Cost: m, Deployment: d, Workload: w, Engine: EngineOptions{DisablePrefixCaching: true}})
		if err != nil {
			t.Fatal(err)
		}
		if on.PrefixCacheHits != 10*192 || off.PrefixCacheHits != 0 {
			t.Errorf("%s: %d and %d prompt tokens from the cache with and without it, want %d and 0", d, on.PrefixCacheHits, off.PrefixCacheHits, 10*192)
		}
		if on.InputTokens != 12*232 || on.TTFT.Median > 0.5*off.TTFT.Median {
			t.Errorf("%s: %d prompt tokens; median TTFT %.4g s with the cache, %.4g s without", d, on.InputTokens, on.TTFT.Median, off.TTFT.Median)
		}
	}
}

// A block on a deployment started afresh (Restart) finds an empty
// prefix cache; one on a deployment kept running finds what the blocks
// before it cached. Each block sends each of 2 prefixes once, so hits
// come only from the block before, and a restarted block replays as
// the first one did.
func TestRestartEmptiesThePrefixCache(t *testing.T) {
	m := costModel(t, "llama-160m", "cpu", "loopback")
	block := func(b int, restart bool) []Request {
		// 200 tokens of prefix are 12 whole blocks of 16: 192 hit.
		return []Request{{Input: 232, Output: 4, Prefix: 1, PrefixLen: 200, Block: b, Restart: restart},
			{Input: 232, Output: 4, Prefix: 2, PrefixLen: 200, Block: b}}
	}
	for _, tc := range []struct {
		name     string
		d        Deployment
		restart  bool
		noCache  bool
		wantHits int
	}{
		{"unified, kept", Deployment{Mode: ModeUnified, Unified: Pool{1, 1}}, false, false, 2 * 192},
		{"unified, restarted", Deployment{Mode: ModeUnified, Unified: Pool{1, 1}}, true, false, 0},
		{"unified 2 groups, kept", Deployment{Mode: ModeUnified, Unified: Pool{2, 1}}, false, false, 2 * 192},
		{"unified 2 groups, restarted", Deployment{Mode: ModeUnified, Unified: Pool{2, 1}}, true, false, 0},
		{"disaggregated, kept", Deployment{Mode: ModeDisaggregated, Prefill: Pool{1, 1}, Decode: Pool{1, 1}}, false, false, 2 * 192},
		{"disaggregated, restarted", Deployment{Mode: ModeDisaggregated, Prefill: Pool{1, 1}, Decode: Pool{1, 1}}, true, false, 0},
		{"unified, kept, no prefix caching", Deployment{Mode: ModeUnified, Unified: Pool{1, 1}}, false, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := Options{Cost: m, Deployment: tc.d, Engine: EngineOptions{DisablePrefixCaching: tc.noCache}}
			opts.Workload = Workload{MaxConcurrency: 1, Requests: append(block(0, false), block(1, tc.restart)...)}
			two, err := Run(opts)
			if err != nil {
				t.Fatal(err)
			}
			if two.PrefixCacheHits != tc.wantHits {
				t.Errorf("%d prompt tokens from the cache, want %d", two.PrefixCacheHits, tc.wantHits)
			}
			opts.Workload.Requests = block(0, false)
			one, err := Run(opts)
			if err != nil {
				t.Fatal(err)
			}
			twice := slices.Sorted(slices.Values(append(slices.Clone(one.TTFT.Samples), one.TTFT.Samples...)))
			same := slices.EqualFunc(two.TTFT.Samples, twice, func(a, b float64) bool { return math.Abs(a-b) < 1e-9 })
			if same != (tc.wantHits == 0) {
				t.Errorf("TTFTs %v against one block's twice %v: equal %v, want %v (the second block hits: %v)",
					two.TTFT.Samples, twice, same, tc.wantHits == 0, tc.wantHits != 0)
			}
		})
	}
	bad := append(block(0, false), Request{Input: 232, Output: 4, Restart: true})
	if _, err := Run(Options{Cost: m, Deployment: Deployment{Mode: ModeUnified, Unified: Pool{1, 1}}, Workload: Workload{Requests: bad}}); !errors.Is(err, ErrInvalidWorkload) {
		t.Errorf("a restart in the middle of a block: %v, want ErrInvalidWorkload", err)
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
		reqs[i] = Request{Input: 128, Output: 8}
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

// A merged benchmark result is several runs one after another: each
// block starts on an idle deployment with its own concurrency bound and
// arrival clock, so two blocks of the same requests give every latency
// twice and take twice as long, while one block of them all keeps the
// deployment busy from one request to the next and lets only the first
// ones find it idle.
func TestBlocksRunOneAfterAnother(t *testing.T) {
	m := costModel(t, "llama-160m", "cpu", "loopback")
	d := Deployment{Mode: ModeUnified, Unified: Pool{1, 1}}
	for _, w := range []Workload{{MaxConcurrency: 2}, {RequestRate: 3, Seed: 5}} {
		one := make([]Request, 6)
		for i := range one {
			one[i] = Request{Input: 256, Output: 12 + 8*(i%2)}
		}
		alone, err := Run(Options{Cost: m, Deployment: d, Workload: withRequests(w, one)})
		if err != nil {
			t.Fatal(err)
		}
		two := append(slices.Clone(one), one...)
		for i := range one {
			two[len(one)+i].Block = 1
		}
		blocks, err := Run(Options{Cost: m, Deployment: d, Workload: withRequests(w, two)})
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range []struct {
			name       string
			got, alone Dist
		}{{"TTFT", blocks.TTFT, alone.TTFT}, {"ITL", blocks.ITL, alone.ITL}, {"E2EL", blocks.E2EL, alone.E2EL}} {
			twice := slices.Sorted(slices.Values(append(slices.Clone(x.alone.Samples), x.alone.Samples...)))
			if !slices.EqualFunc(x.got.Samples, twice, func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }) {
				t.Errorf("%+v: two blocks' %s %v, want one block's twice %v", w, x.name, x.got.Samples, twice)
			}
		}
		closeTo(t, "two blocks' duration", blocks.Duration, 2*alone.Duration)
		merged, err := Run(Options{Cost: m, Deployment: d, Workload: withRequests(w, append(slices.Clone(one), one...))})
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(merged.TTFT.Mean/blocks.TTFT.Mean-1) < 0.01 {
			t.Errorf("%+v: one block of 12 has the mean TTFT of two blocks of 6 (%.3g s): the blocks are not replayed", w, merged.TTFT.Mean)
		}
	}
	bad := []Request{{Input: 8, Output: 8, Block: 1}, {Input: 8, Output: 8}}
	if _, err := Run(Options{Cost: m, Deployment: d, Workload: Workload{Requests: bad}}); !errors.Is(err, ErrInvalidWorkload) {
		t.Errorf("blocks 1, 0: %v, want ErrInvalidWorkload", err)
	}
}

func withRequests(w Workload, reqs []Request) Workload {
	w.Requests = reqs
	return w
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
	reqs := []Request{{Input: 64, Output: 4}, {Input: 64, Output: 4}, {Input: 64, Output: 4}, {Input: 64, Output: 4}}
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
		{"bad mode", Options{Cost: m, Deployment: Deployment{Mode: "colocated"}, Workload: Workload{Requests: []Request{{Input: 1, Output: 1}}}}, ErrInvalidDeployment},
		{"no groups", Options{Cost: m, Deployment: Deployment{Mode: ModeUnified}, Workload: Workload{Requests: []Request{{Input: 1, Output: 1}}}}, ErrInvalidDeployment},
		{"TP 3", Options{Cost: m, Deployment: Deployment{Mode: ModeUnified, Unified: Pool{1, 3}}, Workload: Workload{Requests: []Request{{Input: 1, Output: 1}}}}, ErrInvalidDeployment},
		{"empty workload", Options{Cost: m, Deployment: Deployment{Mode: ModeUnified, Unified: Pool{1, 1}}}, ErrInvalidWorkload},
		{"negative rate", Options{Cost: m, Deployment: Deployment{Mode: ModeUnified, Unified: Pool{1, 1}},
			Workload: Workload{Requests: []Request{{Input: 1, Output: 1}}, RequestRate: -1}}, ErrInvalidWorkload},
	} {
		if _, err := Run(tc.opts); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// A model too big for the device does not fit.
	big := costModel(t, "llama-1b", "h100-sxm", "ib-400g")
	big.HW.MemoryBytes = 1e9
	if _, err := Run(Options{Cost: big, Deployment: Deployment{Mode: ModeUnified, Unified: Pool{1, 1}},
		Workload: Workload{Requests: []Request{{Input: 1, Output: 1}}}}); !errors.Is(err, costmodel.ErrDoesNotFit) {
		t.Errorf("llama-1b on a 1 GB device: %v, want ErrDoesNotFit", err)
	}
}
