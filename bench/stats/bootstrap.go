package stats

import (
	"errors"
	"math/rand/v2"
	"slices"
)

// Rounds are samples grouped by the round that produced them: Rounds[r]
// holds round r's values (one per request, or a single run-level figure
// such as a throughput).
type Rounds [][]float64

// Pool is every value of every round, in order.
func (r Rounds) Pool() []float64 {
	var out []float64
	for _, vs := range r {
		out = append(out, vs...)
	}
	return out
}

// Interval is a bootstrap confidence interval of a difference B − A.
type Interval struct {
	// Diff is the statistic of B's pooled values minus that of A's.
	Diff float64
	// Lo and Hi bound Diff at confidence Level.
	Lo, Hi, Level float64
}

// Distinguishable reports whether the interval excludes zero: only then
// is one side better than the other at the interval's confidence.
func (i Interval) Distinguishable() bool { return i.Lo > 0 || i.Hi < 0 }

// Bootstrap computes confidence intervals by resampling. The zero value
// uses the defaults below.
type Bootstrap struct {
	// Resamples is the number of bootstrap resamples; default 10000.
	Resamples int
	// Level is the confidence level in (0, 1); default 0.95.
	Level float64
	// Seed seeds the resampling, so that the same data always gives the
	// same interval; default 1.
	Seed uint64
}

// ErrNoData is returned when a side has no values to resample.
var ErrNoData = errors.New("stats: no values to resample")

// Diff is the interval of stat(B) − stat(A) by a two-level bootstrap:
// each resample draws rounds with replacement (the same round indices on
// both sides when they ran the same number of rounds, since interleaved
// rounds share the machine's drift), then the values within each drawn
// round with replacement, and applies stat to the pooled draw. The
// interval is the resampled differences' percentile interval.
func (o Bootstrap) Diff(a, b Rounds, stat func([]float64) float64) (Interval, error) {
	if len(a.Pool()) == 0 || len(b.Pool()) == 0 {
		return Interval{}, ErrNoData
	}
	n, level, seed := o.Resamples, o.Level, o.Seed
	if n <= 0 {
		n = 10000
	}
	if level <= 0 || level >= 1 {
		level = 0.95
	}
	if seed == 0 {
		seed = 1
	}
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	diffs := make([]float64, n)
	var bufA, bufB []float64
	pickA, pickB := make([]int, len(a)), make([]int, len(b))
	paired := len(a) == len(b)
	for i := range diffs {
		drawRounds(rng, pickA)
		if paired {
			copy(pickB, pickA)
		} else {
			drawRounds(rng, pickB)
		}
		bufA = resample(rng, a, pickA, bufA[:0])
		bufB = resample(rng, b, pickB, bufB[:0])
		diffs[i] = stat(bufB) - stat(bufA)
	}
	slices.Sort(diffs)
	alpha := (1 - level) / 2
	return Interval{
		Diff:  stat(b.Pool()) - stat(a.Pool()),
		Lo:    sortedPercentile(diffs, 100*alpha),
		Hi:    sortedPercentile(diffs, 100*(1-alpha)),
		Level: level,
	}, nil
}

func drawRounds(rng *rand.Rand, pick []int) {
	for i := range pick {
		pick[i] = rng.IntN(len(pick))
	}
}

// resample appends to buf, for each picked round, as many values drawn
// with replacement from it as it holds.
func resample(rng *rand.Rand, r Rounds, pick []int, buf []float64) []float64 {
	for _, p := range pick {
		vs := r[p]
		for range vs {
			buf = append(buf, vs[rng.IntN(len(vs))])
		}
	}
	return buf
}
