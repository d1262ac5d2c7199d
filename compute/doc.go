// Package compute declares the backend interface a rank's forward pass runs
// on: weight matrices, activation buffers, a paged KV cache and the kernels
// of Llama-family and GPT-2 models (matrix multiply, norms, RoPE,
// activations, paged attention).
//
// Backends live in sub-packages, one per package: compute/cpu (Go and Go
// assembly, all cores) and, later, compute/cuda. This package imports no
// backend and nothing of Tandem's own.
package compute
