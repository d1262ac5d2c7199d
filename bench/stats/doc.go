// Package stats holds the statistics of load-test samples: mean, median,
// population standard deviation and percentiles with numpy's default
// linear interpolation (what vLLM's benchmark reports), and bootstrap
// confidence intervals of a difference between two configurations,
// resampled over repeated rounds and over the requests within a round.
//
// It imports nothing of Tandem's and nothing outside the standard library.
package stats
