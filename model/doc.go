// Package model describes the models Tandem serves: Hugging Face
// config.json parsing into a normalised Config, the architectures
// (Llama-family and GPT-2) and their weight names.
//
// Sub-packages read the files of a model directory: model/safetensors
// (weights, mmapped), model/tokenizer (tokenizer.json byte-level BPE) and
// model/preset (seeded model directories for tests, demos and benchmarks).
// This package never imports the engine or a compute backend.
package model
