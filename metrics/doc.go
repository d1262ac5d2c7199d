// Package metrics defines Tandem's Prometheus metrics: the request-level
// histograms and counters the coordinator exports (Coordinator), the
// per-rank scheduler, step, collective and KV-transfer metrics every
// worker exports (Worker), and GPU telemetry read from NVML on scrape
// (GPU, Worker.AttachGPU).
//
// Names follow vLLM's conventions with a "tandem:" prefix in place of
// "vllm:", and the request histograms use vLLM's buckets, so dashboards and
// alerts written for vLLM work after a prefix change. docs/metrics.md lists
// every metric with its vLLM counterpart.
//
// Every collector is registered on the prometheus.Registerer the caller
// passes (never the global default registry), so a test or a process can
// hold several independent sets. Labelled children are resolved once at
// construction: the calls made per token (Coordinator.Token) and per step
// (Worker.Step, Worker.Collective) are a few atomic operations and
// allocate nothing. All methods are safe for concurrent use.
//
// The package imports no other Tandem package; the coordinator and the
// worker call it with plain numbers and durations.
package metrics
