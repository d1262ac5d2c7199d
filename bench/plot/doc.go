// Package plot draws a load test's charts, each as PNG and SVG with
// gonum.org/v1/plot: latency CDFs (one panel per metric), inter-token
// latency against token position (stutter shows as spikes), and
// throughput against P99 latency across a sweep (the Pareto frontier).
// Every chart overlays its series in distinct colours, so one chart holds
// every configuration of a comparison.
//
// It imports gonum's plot packages and the standard library only; the
// callers turn their results into Series.
package plot
