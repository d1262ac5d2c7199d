package stats

import (
	"errors"
	"math"
)

// MinRounds is the fewest paired rounds Paired gives an interval from:
// with fewer, the spread between rounds, which is where a shared
// machine's noise shows, cannot be estimated (two rounds give a t
// interval of one degree of freedom, too wide to say anything).
const MinRounds = 3

// ErrFewRounds is returned by Paired when fewer than MinRounds rounds
// hold values on both sides.
var ErrFewRounds = errors.New("stats: too few paired rounds")

// Paired is the interval of stat(B) − stat(A) for two configurations
// measured in the same interleaved rounds: a[r] and b[r] ran in round r,
// close in time. It is the union of two intervals, one for each kind of
// noise:
//
//   - Diff's two-level bootstrap, for the spread of requests within a
//     round (it handles any statistic, percentiles included, but treats
//     the requests of a round as independent);
//   - a between-round interval: the rounds' paired differences
//     d_r = stat(b[r]) − stat(a[r]) move with whatever hit a whole block
//     of one side (a burst of load from another tenant, drift that the
//     interleaving did not cancel), which request-level resampling does
//     not see. Their standard error, sd(d)/√R, times Student's t
//     quantile with R−1 degrees of freedom, is put around the pooled
//     difference. The t interval keeps its level for few rounds when the
//     d_r are about normal, and errs wide when they are heavy-tailed and
//     symmetric, as they are when the two sides do not differ.
//
// A verdict needs both to exclude zero. Rounds where either side has no
// value are left out; fewer than MinRounds left give ErrFewRounds.
func (o Bootstrap) Paired(a, b Rounds, stat func([]float64) float64) (Interval, error) {
	var pa, pb Rounds
	if len(a) == len(b) {
		for r := range a {
			if len(a[r]) > 0 && len(b[r]) > 0 {
				pa, pb = append(pa, a[r]), append(pb, b[r])
			}
		}
	}
	if len(pa) < MinRounds {
		return Interval{}, ErrFewRounds
	}
	boot, err := o.Diff(pa, pb, stat)
	if err != nil {
		return Interval{}, err
	}
	diffs := make([]float64, len(pa))
	for r := range diffs {
		diffs[r] = stat(pb[r]) - stat(pa[r])
	}
	between, err := TInterval(diffs, boot.Level)
	if err != nil {
		return Interval{}, err
	}
	half := (between.Hi - between.Lo) / 2
	return Interval{
		Diff:  boot.Diff,
		Lo:    math.Min(boot.Lo, boot.Diff-half),
		Hi:    math.Max(boot.Hi, boot.Diff+half),
		Level: boot.Level,
	}, nil
}
