// Package stats holds the statistics of load-test samples: mean, median,
// population standard deviation and percentiles with numpy's default
// linear interpolation (what vLLM's benchmark reports), and confidence
// intervals of a difference between two configurations measured in
// interleaved rounds.
//
// # Why two intervals
//
// A load test's requests are not independent draws. On a shared machine
// the noise is correlated in time: another tenant's build slows every
// request for seconds, often a whole block of one configuration, and the
// machine drifts between blocks. Bootstrap.Diff resamples rounds and
// then the requests within each round as if requests were independent;
// with few rounds it takes a block that one burst slowed for a real
// difference (a simulation in sim_test.go of self-comparisons on such a
// machine, 3 rounds of 12 requests, finds a "winner" in 27% of them at
// a 95% family level, and in 16% over 6 rounds of 16). Bootstrap.Paired adds what the rounds
// themselves say: round r's difference d_r = stat(b[r]) − stat(a[r])
// carries whatever hit that round's blocks, so the spread of the d_r,
// through a Student t interval with R−1 degrees of freedom (exact for
// normal d_r, wide for heavy-tailed symmetric ones, as d_r are when the
// two sides do not differ), measures the noise the request bootstrap
// misses. Paired reports the union of the two intervals, so a verdict
// needs both to exclude zero, and refuses fewer than MinRounds rounds:
// the spread of two rounds is too poor an estimate to rely on. In the
// same simulation it names a winner in 1.6% and 2.3% of those
// self-comparisons, and still finds a difference of about three times
// the requests' own latency in 94% of comparisons over six rounds.
//
// Figures the load cannot change (bytes per token, fixed by the model
// and its sharding) have no between-round noise; Diff alone is their
// interval.
//
// It imports nothing of Tandem's and nothing outside the standard library.
package stats
