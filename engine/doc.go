// Package engine executes a model on one rank: it loads weights into a
// compute backend, keeps the paged KV cache (a block pool and a block table
// per sequence), runs batched steps that mix prefill chunks and decode
// tokens of many sequences, samples the next tokens and records each step.
//
// The engine imports model and compute; it never imports a specific
// backend, the worker, the coordinator or any transport.
package engine
