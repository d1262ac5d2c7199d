// Package compare is `tandem bench compare`: one workload run on two or
// more configurations — running deployments (--target NAME=HOST:PORT) or
// local clusters it starts and stops itself as `tandem up` child
// processes (--tp, --modes, --config FILE.yaml) — in rounds with the
// configurations interleaved, so a machine's drift hits all of them.
//
// For every configuration and load point it reports the bench results
// and, joined from each request's server trace by request id, the cost of
// an output token split into queue, compute, allreduce, KV transfer,
// sampling and other, with the bytes moved per token next to their
// analytic values for the model and TP degree. Every difference from the
// first configuration carries a bootstrap confidence interval over rounds
// and requests; an interval that holds zero reads "not distinguishable".
//
// It imports bench and its sub-packages, tracing (the per-token
// breakdown), parallel (the analytic KV map), model and proto; never the
// coordinator, worker or engine.
package compare
