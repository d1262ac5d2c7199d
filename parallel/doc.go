// Package parallel computes how a model is split over the ranks of a
// tensor-parallel group (Megatron-style): which query heads, KV heads,
// MLP columns and vocabulary rows each rank owns, and how KV heads move
// between a prefill group of one TP degree and a decode group of another.
//
// It is pure arithmetic on a model's geometry and imports nothing of
// Tandem's; the engine, worker and KV transfer use it.
package parallel
