// Package serve is `tandem bench`: a load test with the flags of `vllm
// bench serve` (Config), against a Tandem coordinator (--addr, gRPC) or
// any OpenAI-compatible server (--base-url), sweeping comma lists of
// request rates and concurrency limits, reporting each run as that tool
// does (terminal report and result JSON under its key names) and drawing
// the charts of package plot.
//
// Every flag is checked, the target reached and the dataset built before
// the first request is sent, and errors name the flag or file at fault.
// A load point whose every request failed, and a run interrupted, end
// with an error after their report and result are written.
//
// It imports bench and its sub-packages, model, model/preset and
// model/tokenizer (to read the target's tokenizer and shape); never the
// coordinator, worker or engine.
package serve
