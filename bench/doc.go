// Package bench is Tandem's load generator, the engine of `tandem bench`
// and `tandem bench compare`: it sends a workload to a Target at a
// request rate (Poisson, or gamma with a burstiness) under a concurrency
// limit, measures every request as `vllm bench serve` does (time to first
// token, inter-token latencies per streamed chunk, end-to-end latency)
// and computes that tool's results under its key names, so its readers
// load ours.
//
// Targets are sub-packages: target/tandem (a coordinator's gRPC
// Generation API) and target/openai (any OpenAI-compatible HTTP server,
// with SSE). The workload comes from package dataset, the statistics from
// package stats; package serve is the `tandem bench` command built from
// these, package compare the side-by-side comparison, package plot the
// charts.
//
// This package must never import the coordinator, worker or engine: it
// measures a server from the outside, as any client would.
package bench
