package stats

import (
	"math"
	"slices"
)

// Mean is the arithmetic mean; 0 for no values (as numpy's mean of the
// scalar 0 that vLLM falls back to).
func Mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// Std is the population standard deviation (numpy's default, ddof 0); 0
// for no values.
func Std(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	m := Mean(xs)
	var s float64
	for _, x := range xs {
		s += (x - m) * (x - m)
	}
	return math.Sqrt(s / float64(len(xs)))
}

// Median is Percentile(xs, 50).
func Median(xs []float64) float64 { return Percentile(xs, 50) }

// Percentile is the p-th percentile (0 <= p <= 100) with numpy's default
// "linear" method: the value at rank (n-1)·p/100 of the sorted values,
// interpolated between its neighbours. 0 for no values.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return sortedPercentile(s, p)
}

// Percentiles is Percentile for each of ps, sorting once.
func Percentiles(xs []float64, ps []float64) []float64 {
	out := make([]float64, len(ps))
	if len(xs) == 0 {
		return out
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	for i, p := range ps {
		out[i] = sortedPercentile(s, p)
	}
	return out
}

// sortedPercentile is Percentile of already sorted, non-empty values.
func sortedPercentile(s []float64, p float64) float64 {
	h := float64(len(s)-1) * p / 100
	lo := math.Floor(h)
	i := int(lo)
	if i >= len(s)-1 {
		return s[len(s)-1]
	}
	if i < 0 {
		return s[0]
	}
	return s[i] + (h-lo)*(s[i+1]-s[i])
}

// Summary is what a load-test report gives of one latency metric.
type Summary struct {
	Mean, Median, Std float64
	// Percentiles holds the value of each asked percentile, in the order
	// asked.
	Percentiles []float64
}

// Summarize computes a Summary of xs for the percentiles ps.
func Summarize(xs []float64, ps []float64) Summary {
	return Summary{Mean: Mean(xs), Median: Median(xs), Std: Std(xs), Percentiles: Percentiles(xs, ps)}
}
