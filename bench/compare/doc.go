// Package compare is `tandem bench compare`: one workload run on two or
// more configurations — running deployments (--target NAME=HOST:PORT, a
// Tandem coordinator over gRPC, or --target NAME=URL, any
// OpenAI-compatible server) or local clusters it starts and stops itself
// as `tandem up` child processes (--tp, --modes, --config FILE.yaml) —
// in interleaved rounds, so that a machine's drift hits all of them.
//
// Each round runs every configuration on the first half of its prompts
// in the order given, then on the second half in the reverse order
// (A B B A), so that drift linear over a round costs each the same; a
// local cluster runs on through two blocks of its own in a row. Each
// round draws its prompts from its own seed (every configuration gets
// the same ones), so that no prefix cache serves a round from what an
// earlier one sent. Every configuration gets warm-up requests
// (AutoWarmups unless told), drawn from yet another seed, before its
// first block and after each start of its cluster, so that no side pays
// the cold start of a fresh process or connection.
//
// For every configuration and load point it reports the bench results
// and, joined from each request's server trace by request id, the cost of
// an output token split into queue, compute, allreduce, KV transfer,
// sampling and other, with the bytes moved per token next to their
// analytic values for the model and TP degree (a URL target's traces come
// from the coordinator --trace-addr names; without one it has no split).
// The analytic KV bytes use each configuration's KV cache dtype, from
// its tandem up flags and its model's weights (cacheDType).
// Every difference from the baseline (the first configuration, or
// Config.Baseline; every pair with Config.Pairwise) carries an interval
// from stats.Bootstrap.Paired (the rounds' spread and the requests'), and
// needs stats.MinRounds rounds for a timing, and a percentile
// stats.PercentileSamples values a side; an interval that holds zero
// reads "not distinguishable".
//
// Every flag, --config file (parseUpFile) and local configuration's
// tandem up flags (`tandem up --check`, run before anything starts) is
// checked before any cluster starts. An interrupt or a failed block
// stops the cluster that runs and still saves the report of the blocks
// that finished, marked partial. ReadReport reads reports of earlier
// versions too.
//
// It imports bench and its sub-packages, tracing (the per-token
// breakdown), parallel (the analytic KV map), model, netshape (link
// profiles and the root they need), pki (the CA of configurations
// serving TLS) and proto; never the coordinator, worker or engine.
package compare
