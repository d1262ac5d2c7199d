// Package calibration fits the cost model's efficiency factors to
// measured runs, and checks predictions against them: it reads `tandem
// bench compare` reports (the JSON its --result-dir holds), turns each
// configuration and load point into a case the simulator can replay
// (the deployment from its `tandem up` arguments, the requests' lengths
// from the result, the same request rate or concurrency), and compares
// the simulator's figures with the measured ones: the bench's TTFT, TPOT,
// ITL and E2E (vLLM's result keys) and the per-token split the traces
// joined (compute, allreduce, KV transfer, sampling).
//
// Fit searches the factors coordinate by coordinate to minimise the
// squared log-ratios of predicted to measured, and reports the error
// left per component; Validate predicts another run with given factors
// and reports the relative error of each metric.
//
// It imports costmodel, simulator, planner (model shapes) and
// bench/compare (the report format, one source of truth); it must never
// import the engine, worker or coordinator.
package calibration
