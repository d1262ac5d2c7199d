package engine

import (
	"time"

	"github.com/tandemllm/tandem/nccl"
)

// StepRecord describes one batched step of the engine. Later layers
// (collectives, KV transfer, tracing) extend what a step records.
type StepRecord struct {
	// Step numbers the engine's steps from 1 (0 means none), the same on
	// every rank of a group.
	Step  uint64
	Start time.Time
	// Schedule is the time spent choosing the batch and reserving KV blocks.
	Schedule time.Duration
	// Compute is the forward pass, logits included.
	Compute time.Duration
	// Sample is the time spent sampling and detokenizing.
	Sample time.Duration
	// PrefillTokens and DecodeTokens count the batch's rows by kind.
	PrefillTokens, DecodeTokens int
	// Seqs is the batch composition, one entry per sequence.
	Seqs []SeqRecord
	// FreeBlocks is the KV pool's free block count after the step.
	FreeBlocks int
	// Collectives are the step's collective calls (tensor parallelism);
	// CollectiveTime is their total duration, part of Compute.
	Collectives    []nccl.Call
	CollectiveTime time.Duration
	// Ops is the forward pass's time per op, with Options.OpTimes (zero
	// without); the all-reduces' share is OpAllReduce.
	Ops OpTimes
}

// SeqRecord is one sequence's part of a step.
type SeqRecord struct {
	RequestID string
	// Pos is the position of the sequence's first row in this step.
	Pos int
	// Tokens is the number of rows the sequence had in the step.
	Tokens int
	// Prefill is true when the rows are prompt tokens (a prefill chunk).
	Prefill bool
	// Sampled is true when the step produced a token for the sequence.
	Sampled bool
}

// Tokens is the total number of rows of the step.
func (r *StepRecord) Tokens() int { return r.PrefillTokens + r.DecodeTokens }
