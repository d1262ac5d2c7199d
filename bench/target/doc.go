// Package target holds the load-test targets of package bench, one
// backend per sub-package: tandem (a Tandem coordinator over gRPC) and
// openai (any OpenAI-compatible server over HTTP with SSE). Each
// satisfies bench.Target.
package target
