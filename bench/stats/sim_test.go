package stats

import (
	"math"
	"math/rand/v2"
	"testing"
)

// machine is a simulated shared machine: the latency of a request is
// its own work, lognormal around base, plus the machine's state when it
// runs, which is time-correlated: a slow drift (AR(1) from request to
// request) and bursts of load from other tenants that slow a contiguous
// stretch of requests, often a whole block of one configuration; and
// rare lone outliers.
type machine struct {
	base, spread     float64 // request work: base·exp(spread·N(0,1))
	driftSD, driftAR float64 // drift: AR(1) with this stationary sd
	burstP, burstLen float64 // a burst starts with probability burstP per request, lasts burstLen on average
	burstMax         float64 // a burst adds U(0.2, 1)·burstMax
	outlierP, outAdd float64
}

// noisy is the machine of the failed self-comparison: requests of about
// 6 ms whose blocks now and then run 10–50 ms slower for a while.
var noisy = machine{base: 6, spread: 0.3, driftSD: 2, driftAR: 0.98, burstP: 0.02, burstLen: 10, burstMax: 50, outlierP: 0.01, outAdd: 60}

// simulate runs rounds of an ABBA schedule (a's first half, b's first
// half, b's second half, a's second half) of n requests a side, each
// request's value its latency plus shift for b, and returns each side's
// values by round.
func (m machine) simulate(rng *rand.Rand, rounds, n int, shift float64) (a, b Rounds) {
	drift, burst, left := m.driftSD*rng.NormFloat64(), 0.0, 0
	next := func() float64 {
		drift = m.driftAR*drift + math.Sqrt(1-m.driftAR*m.driftAR)*m.driftSD*rng.NormFloat64()
		if left == 0 && rng.Float64() < m.burstP {
			left = 1 + int(rng.ExpFloat64()*m.burstLen)
			burst = m.burstMax * (0.2 + 0.8*rng.Float64())
		}
		v := m.base*math.Exp(m.spread*rng.NormFloat64()) + math.Max(drift, -m.base/2)
		if left > 0 {
			left--
			v += burst
		}
		if rng.Float64() < m.outlierP {
			v += m.outAdd
		}
		return v
	}
	block := func(k int, add float64) []float64 {
		out := make([]float64, k)
		for i := range out {
			out[i] = next() + add
		}
		return out
	}
	h := n / 2
	for range rounds {
		a1 := block(h, 0)
		b1 := block(h, shift)
		b2 := block(n-h, shift)
		a2 := block(n-h, 0)
		a, b = append(a, append(a1, a2...)), append(b, append(b1, b2...))
	}
	return a, b
}

// family is what compare reports of one latency metric (mean, P99) and
// of a run-level figure (requests per ms of latency, one a round), at
// the Bonferroni level compare uses for a family of three.
type family struct{ paired bool }

// verdict says whether any member of the family excluded zero, and
// whether the mean's interval did, for one simulated comparison.
func (f family) verdict(a, b Rounds, seed uint64) (winner, mean bool) {
	rate := func(r Rounds) Rounds {
		out := make(Rounds, len(r))
		for i, vs := range r {
			out[i] = []float64{float64(len(vs)) / (Mean(vs) * float64(len(vs)))}
		}
		return out
	}
	o := Bootstrap{Resamples: 500, Level: 1 - 0.05/3, Seed: seed}
	members := []struct {
		a, b Rounds
		stat func([]float64) float64
	}{{a, b, Mean}, {a, b, func(xs []float64) float64 { return Percentile(xs, 99) }}, {rate(a), rate(b), Mean}}
	for k, m := range members {
		var iv Interval
		var err error
		if f.paired {
			iv, err = o.Paired(m.a, m.b, m.stat)
		} else {
			iv, err = o.Diff(m.a, m.b, m.stat)
		}
		if err != nil {
			panic(err)
		}
		if iv.Distinguishable() {
			winner = true
			mean = mean || k == 0
		}
	}
	return winner, mean
}

// rate is the share of trials whose family gave a verdict, and whose
// mean did.
func (f family) rate(m machine, trials, rounds, n int, shift float64, seed uint64) (anyRate, meanRate float64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	var anyN, meanN int
	for i := range trials {
		a, b := m.simulate(rng, rounds, n, shift)
		x, y := f.verdict(a, b, uint64(i+1))
		if x {
			anyN++
		}
		if y {
			meanN++
		}
	}
	return float64(anyN) / float64(trials), float64(meanN) / float64(trials)
}

// TestSelfComparisonFalsePositives simulates self-comparisons on a
// noisy shared machine (drift, bursts of load over whole blocks,
// outliers) and counts how often a family of three differences names a
// winner: at most 5% with Paired at the rounds compare allows, while
// the request-level bootstrap alone, which the same simulation also
// runs, names one far more often (it is what TestSelfComparison caught).
// It then checks that Paired still finds a real difference.
func TestSelfComparisonFalsePositives(t *testing.T) {
	trials := 1000
	if testing.Short() {
		trials = 200
	}
	for _, tt := range []struct{ rounds, n int }{{3, 12}, {6, 16}} {
		fp, _ := family{paired: true}.rate(noisy, trials, tt.rounds, tt.n, 0, uint64(tt.rounds))
		t.Logf("%d rounds × %d requests a side: a winner in %.1f%% of %d self-comparisons", tt.rounds, tt.n, 100*fp, trials)
		if fp > 0.05 {
			t.Errorf("%d rounds × %d requests: %.1f%% of self-comparisons named a winner, want at most 5%%", tt.rounds, tt.n, 100*fp)
		}
	}
	old, _ := family{}.rate(noisy, trials/4, 3, 12, 0, 3)
	t.Logf("3 rounds × 12 requests, the request-level bootstrap alone: a winner in %.1f%% of %d self-comparisons", 100*old, trials/4)
	if old < 0.10 {
		t.Errorf("the request-level bootstrap alone named a winner in only %.1f%%: the simulated machine is not noisy enough to test anything", 100*old)
	}
	// A real difference of 20 ms on requests of about 6 ms is found most
	// of the time over 6 rounds, despite the bursts.
	_, power := family{paired: true}.rate(noisy, trials/4, 6, 16, 20, 77)
	t.Logf("6 rounds × 16 requests, b 20 ms slower: the mean's difference found in %.1f%%", 100*power)
	if power < 0.8 {
		t.Errorf("a 20 ms difference over 6 rounds of 16 requests found in %.1f%% of comparisons, want 80%% or more", 100*power)
	}
}

func TestPaired(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	a := Rounds{normal(rng, 50, 10), normal(rng, 50, 10)}
	if _, err := (Bootstrap{}).Paired(a, a, Mean); err != ErrFewRounds {
		t.Fatalf("two rounds: %v, want ErrFewRounds", err)
	}
	// A round with one side empty does not count.
	a3 := append(a, nil)
	if _, err := (Bootstrap{}).Paired(a3, append(a, normal(rng, 5, 10)), Mean); err != ErrFewRounds {
		t.Fatalf("two full rounds and one half-empty: %v, want ErrFewRounds", err)
	}
	// Rounds that agree on a shift of 1 give a verdict with it inside.
	var x, y Rounds
	for range 5 {
		x, y = append(x, normal(rng, 50, 10)), append(y, normal(rng, 50, 11))
	}
	iv, err := Bootstrap{}.Paired(x, y, Mean)
	if err != nil {
		t.Fatal(err)
	}
	if !iv.Distinguishable() || iv.Lo > 1 || iv.Hi < 1 || iv.Lo > iv.Diff || iv.Diff > iv.Hi {
		t.Fatalf("a shift of 1 in every round: %+v", iv)
	}
	// Three rounds whose block effects happen to agree in sign (b's
	// blocks 2, 0.5 and 1.2 slower): the request-level bootstrap, which
	// sees 100 requests a round, calls b slower; the paired interval,
	// which sees three rounds, does not.
	var p, q Rounds
	for _, shift := range []float64{2, 0.5, 1.2} {
		p, q = append(p, normal(rng, 100, 30)), append(q, normal(rng, 100, 30+shift))
	}
	boot, _ := Bootstrap{}.Diff(p, q, Mean)
	iv, err = Bootstrap{}.Paired(p, q, Mean)
	if err != nil {
		t.Fatal(err)
	}
	if !boot.Distinguishable() || iv.Distinguishable() || iv.Lo > boot.Lo || iv.Hi < boot.Hi {
		t.Fatalf("block effects of one sign in three rounds: bootstrap %+v, paired %+v; want only the bootstrap to give a verdict, within the paired interval", boot, iv)
	}
}
