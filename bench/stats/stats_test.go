package stats

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The expected values are numpy's: np.percentile(xs, p) (linear),
// np.median, np.mean, np.std (ddof 0).
func TestPercentile(t *testing.T) {
	tests := []struct {
		xs   []float64
		p    float64
		want float64
	}{
		{[]float64{1, 2, 3, 4}, 90, 3.7},
		{[]float64{15, 20, 35, 40, 50}, 40, 29},
		{[]float64{4, 3, 2, 1}, 50, 2.5},
		{[]float64{7}, 99, 7},
		{[]float64{1, 10}, 0, 1},
		{[]float64{1, 10}, 100, 10},
		{[]float64{1, 10}, 99.9, 9.991},
		{nil, 50, 0},
	}
	for _, tt := range tests {
		if got := Percentile(tt.xs, tt.p); math.Abs(got-tt.want) > 1e-12 {
			t.Errorf("Percentile(%v, %v) = %v, want %v", tt.xs, tt.p, got, tt.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	xs := []float64{1, 2, 3, 4}
	s := Summarize(xs, []float64{50, 90})
	want := Summary{Mean: 2.5, Median: 2.5, Std: 1.118033988749895, Percentiles: []float64{2.5, 3.7}}
	if math.Abs(s.Mean-want.Mean) > 1e-12 || math.Abs(s.Median-want.Median) > 1e-12 || math.Abs(s.Std-want.Std) > 1e-12 ||
		math.Abs(s.Percentiles[0]-2.5) > 1e-12 || math.Abs(s.Percentiles[1]-3.7) > 1e-12 {
		t.Fatalf("Summarize = %+v, want %+v", s, want)
	}
	if xs[0] != 1 || xs[3] != 4 {
		t.Fatal("Summarize reordered its input")
	}
	if z := Summarize(nil, []float64{99}); z.Mean != 0 || z.Std != 0 || z.Percentiles[0] != 0 {
		t.Fatalf("empty summary = %+v, want zeros", z)
	}
}

func normal(rng *rand.Rand, n int, mean float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = mean + rng.NormFloat64()
	}
	return out
}

func TestBootstrapDiff(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	a := Rounds{normal(rng, 200, 10), normal(rng, 200, 10)}
	same := Bootstrap{}
	iv, err := same.Diff(a, a, Mean)
	if err != nil {
		t.Fatal(err)
	}
	if iv.Diff != 0 || iv.Distinguishable() {
		t.Fatalf("a sample against itself: %+v, want a zero difference, not distinguishable", iv)
	}
	b := Rounds{normal(rng, 200, 11), normal(rng, 200, 11)}
	iv, err = same.Diff(a, b, Mean)
	if err != nil {
		t.Fatal(err)
	}
	if !iv.Distinguishable() || iv.Lo < 0.5 || iv.Hi > 1.5 || iv.Lo > iv.Diff || iv.Diff > iv.Hi {
		t.Fatalf("means 10 and 11, 400 values each: %+v, want about [0.8, 1.2] around the difference", iv)
	}
	again, _ := same.Diff(a, b, Mean)
	if again != iv {
		t.Fatalf("same data and seed gave %+v then %+v", iv, again)
	}
	if _, err := same.Diff(a, Rounds{{}}, Mean); err == nil {
		t.Fatal("an empty side gave no error")
	}
}

// TestBootstrapCoverage checks that the 95% interval of the difference of
// two samples from one distribution excludes zero about 5% of the time,
// not more: a noisy machine must not yield confident verdicts.
func TestBootstrapCoverage(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const trials = 300
	wrong := 0
	for i := range trials {
		a := Rounds{normal(rng, 60, 0)}
		b := Rounds{normal(rng, 60, 0)}
		iv, err := Bootstrap{Resamples: 1000, Seed: uint64(i + 1)}.Diff(a, b, Mean)
		if err != nil {
			t.Fatal(err)
		}
		if iv.Distinguishable() {
			wrong++
		}
	}
	// Binomial(300, 0.05): mean 15, sd 3.8; 30 is four sd away.
	if wrong > 30 {
		t.Fatalf("%d of %d comparisons of equal distributions were distinguishable, want about 5%%", wrong, trials)
	}
}

// TestBootstrapRounds: a shift between rounds that hits both sides
// alike (interleaved rounds) cancels, while one that hits a single side
// in one round of two widens the interval instead of giving a verdict.
func TestBootstrapRounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	a := Rounds{normal(rng, 100, 10), normal(rng, 100, 20)}
	b := Rounds{normal(rng, 100, 10), normal(rng, 100, 20)}
	iv, err := Bootstrap{}.Diff(a, b, Mean)
	if err != nil {
		t.Fatal(err)
	}
	if iv.Distinguishable() {
		t.Fatalf("drift shared by both sides: %+v, want not distinguishable", iv)
	}
	c := Rounds{normal(rng, 100, 10), normal(rng, 100, 10)}
	d := Rounds{normal(rng, 100, 10), normal(rng, 100, 14)}
	iv, err = Bootstrap{}.Diff(c, d, Mean)
	if err != nil {
		t.Fatal(err)
	}
	if iv.Distinguishable() {
		t.Fatalf("a shift in one round of two: %+v, want not distinguishable", iv)
	}
}

// The quantiles are the textbook table's (and scipy.stats.t.ppf's).
func TestTQuantile(t *testing.T) {
	for _, tt := range []struct{ p, df, want float64 }{
		{0.975, 1, 12.7062}, {0.975, 2, 4.3027}, {0.975, 10, 2.2281}, {0.995, 4, 4.6041}, {0.975, 1000, 1.9623},
	} {
		if got := tQuantile(tt.p, tt.df); math.Abs(got-tt.want) > 1e-3 {
			t.Errorf("t quantile %v with %v df = %v, want %v", tt.p, tt.df, got, tt.want)
		}
	}
	iv, err := TInterval([]float64{1, 2, 3}, 0.95)
	if err != nil {
		t.Fatal(err)
	}
	// mean 2, sd 1, half-width 4.3027/sqrt(3).
	if math.Abs(iv.Lo-(2-4.3027/math.Sqrt(3))) > 1e-3 || math.Abs(iv.Hi-(2+4.3027/math.Sqrt(3))) > 1e-3 {
		t.Fatalf("TInterval(1, 2, 3) = %+v", iv)
	}
	if _, err := TInterval([]float64{1}, 0.95); err == nil {
		t.Fatal("one value gave an interval")
	}
}

// TestPercentileSamples: a percentile's verdict needs MinTailSamples
// samples above it.
func TestPercentileSamples(t *testing.T) {
	for _, tt := range []struct {
		p    float64
		want int
	}{{99, 500}, {95, 100}, {90, 50}, {50, 10}, {99.9, 5000}} {
		if got := PercentileSamples(tt.p); got != tt.want {
			t.Errorf("PercentileSamples(%v) = %d, want %d", tt.p, got, tt.want)
		}
	}
}
