package stats

import "math"

// MinTailSamples is the fewest samples beyond a percentile that a
// verdict on it rests on. A high percentile of few samples is set by
// the few largest of them: the bootstrap can only redraw the values it
// saw, so it cannot see how far the tail of the distribution reaches
// and its interval comes out too narrow (the bootstrap of an extreme
// order statistic is known not to keep its level), and one stray slow
// request moves the figure by itself. Five samples beyond the
// percentile on each side is the least at which the interval is about
// the spread of the tail rather than of one or two requests.
const MinTailSamples = 5

// PercentileSamples is the fewest samples a side needs for a verdict on
// a difference of its p-th percentile (0 < p < 100): MinTailSamples of
// them above it. P99 needs 500, P90 50, the median 10.
func PercentileSamples(p float64) int {
	return int(math.Ceil(MinTailSamples*100/(100-p) - 1e-9))
}
