// Package safetensors reads and writes model weights in the safetensors
// format as Hugging Face specifies it: an 8-byte little-endian header
// length, a JSON header mapping each tensor name to its dtype, shape and
// data_offsets (plus an optional "__metadata__" map of strings), then the
// data section, which the tensors must tile exactly.
//
// Open maps a file read-only and hands out tensors as slices of the
// mapping (no copy); OpenDir does the same for a model directory holding
// model.safetensors or a sharded set named by model.safetensors.index.json.
// Create and WriteDir write files whose tensor data is produced
// incrementally, so multi-gigabyte models never sit in memory.
//
// Every error names the file and, where one is involved, the tensor; the
// ones caused by a malformed file wrap ErrInvalid.
//
// This package imports only the standard library, golang.org/x/sys and
// internal/half; it must never import model, engine or a compute backend.
package safetensors
