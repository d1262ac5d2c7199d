// Package simulator predicts how a deployment of tensor-parallel groups
// serves a workload, step by step: each group runs the engine's own
// continuous-batching rules (engine/schedule.go: decode rows first, then
// prefill chunks of running sequences, then waiting ones first come
// first served, within MaxBatchTokens rows and MaxSeqs sequences, with
// recompute preemption of the newest sequence when KV blocks run out,
// and prefix-cache hits of prompts sharing a workload prefix), the
// coordinator's routing (coordinator/score.go), disaggregated prefill →
// KV transfer → decode as the worker runs it, and each step's time from
// package costmodel. Ranks sharing a device (CPU processes on one
// machine) share its cores while they compute: every rank's threads and
// other work's count (costmodel.Model.SharedRate).
//
// A workload is Poisson (or gamma-bursty) arrivals at a request rate, or
// a fixed concurrency, with prompt and output lengths drawn as `vllm
// bench serve`'s random dataset draws them (optionally after one of a few
// shared prefixes), or given request by request, in blocks run one
// after another from an idle deployment (the runs a merged benchmark
// result holds), each on the deployment the block before left or on one
// started afresh, its prefix caches empty.
// Results are the bench's: TTFT, TPOT, ITL and E2E latency percentiles,
// throughput, throughput per GPU and goodput under SLOs, under
// `vllm bench serve`'s key names. A run is deterministic for a seed.
//
// It imports costmodel (and parallel through it), bench for the arrival
// schedule and cluster for the roles; it must never import the engine, worker, coordinator
// or any backend: it mirrors their rules and is checked against them by
// tests and by `tandem plan validate`.
package simulator
