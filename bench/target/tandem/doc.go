// Package tandem is a bench.Target for a Tandem coordinator's gRPC
// Generation API: each request streams its tokens, is filed under the
// bench's request id (so its trace can be fetched by it), and reports the
// prompt length the coordinator tokenized.
//
// It imports bench and the generated proto package; never the
// coordinator, worker or engine.
package tandem
