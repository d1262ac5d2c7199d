// Package preset makes complete Hugging Face model directories with
// seeded random weights, so tests, demos and benchmarks run without
// downloading a model: config.json and generation_config.json as
// transformers writes them, GPT-2's tokenizer.json and
// tokenizer_config.json, and model.safetensors.
//
// Weights follow vLLM's dummy load format in spirit: matrices and
// embeddings are uniform with standard deviation 0.02, norm gains are 1
// and biases 0. Every tensor's values depend only on (seed, tensor name),
// so a preset, dtype and seed always give the same bytes.
//
// Write builds a directory under a temporary name and renames it into
// place, so a half-written directory never looks complete; Ensure keeps a
// cache of such directories that concurrent processes can share.
//
// This package imports model, model/safetensors, model/tokenizer and
// internal/half; it must never import the engine, a compute backend or
// anything above them.
package preset
