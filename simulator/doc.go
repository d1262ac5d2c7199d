// Package simulator predicts how a deployment of tensor-parallel groups
// serves a workload, step by step: each group runs the engine's own
// continuous-batching rules (engine/schedule.go: decode rows first, then
// prefill chunks of running sequences, then waiting ones first come
// first served, within MaxBatchTokens rows and MaxSeqs sequences, with
// recompute preemption of the newest sequence when KV blocks run out),
// the coordinator's routing (coordinator/route.go), disaggregated
// prefill → KV transfer → decode as the worker runs it, and each step's
// time from package costmodel. Ranks sharing a device (CPU processes on
// one machine) slow each other down while both are busy.
//
// A workload is Poisson (or gamma-bursty) arrivals at a request rate, or
// a fixed concurrency, with prompt and output lengths drawn as `vllm
// bench serve`'s random dataset draws them, or given request by request.
// Results are the bench's: TTFT, TPOT, ITL and E2E latency percentiles,
// throughput, throughput per GPU and goodput under SLOs, under
// `vllm bench serve`'s key names. A run is deterministic for a seed.
//
// It imports costmodel (and parallel through it) and bench for the
// arrival schedule; it must never import the engine, worker, coordinator
// or any backend: it mirrors their rules and is checked against them by
// tests and by `tandem plan validate`.
package simulator
