// Package tokenizer encodes text to token ids and decodes ids to text, as
// Hugging Face's tokenizers library does with a tokenizer.json whose model
// is BPE: GPT-2, Llama-3, Qwen2/3 and sentencepiece-style (byte-fallback,
// Metaspace) files. It also writes GPT-2's tokenizer.json from the r50k_base
// ranks (GPT2JSON), so that a model directory can be made without network
// access.
//
// The pre-tokenizer patterns of GPT-2, Llama-3 and Qwen2/3 need look-ahead,
// which Go's regexp lacks; they run on hand-written scanners checked against
// github.com/dlclark/regexp2, which serves any other pattern.
//
// Errors about tokenizer files wrap ErrInvalid and name the file; errors
// about token ids wrap ErrUnknownID.
//
// This package must never import the engine, compute, worker, coordinator or
// any other package of Tandem: it is a leaf that those use.
package tokenizer
