package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tandemllm/tandem/blockhash"
	"github.com/tandemllm/tandem/compute"
	"github.com/tandemllm/tandem/nccl"
)

// Errors callers branch on.
var (
	// ErrInvalidRequest is wrapped by errors about a request's own content
	// (empty or over-long prompt, bad token ids, duplicate id).
	ErrInvalidRequest = errors.New("invalid request")
	// ErrNotFound is returned for an unknown request id.
	ErrNotFound = errors.New("engine: no such request")
	// ErrDuplicateID is an ErrInvalidRequest: the request id is in use.
	ErrDuplicateID = fmt.Errorf("%w: duplicate request id", ErrInvalidRequest)
)

// FinishReason says why a request's generation ended ("" while it runs).
// The worker turns it into the wire's tandemv1.FinishReason, in one place.
type FinishReason string

// Finish reasons, as OpenAI's API names them.
const (
	FinishStop   FinishReason = "stop"   // an end-of-sequence token, stop token or stop string
	FinishLength FinishReason = "length" // MaxTokens reached
	FinishAbort  FinishReason = "abort"  // aborted by the caller
)

// DefaultBlockSize is the KV block size Options.BlockSize defaults to, in
// token slots (vLLM's default --block-size). Workers register their
// engine's block size, so nothing else assumes it.
const DefaultBlockSize = 16

// Options configure an Engine. Zero fields take the documented defaults.
type Options struct {
	// KVCacheBytes is the memory budget of the paged KV cache (default
	// 512 MiB, capped at what MaxSeqs full-length sequences need).
	KVCacheBytes int64
	// BlockSize is the number of token slots per KV block (default
	// DefaultBlockSize).
	BlockSize int
	// DisablePrefixCaching turns the prefix cache off (vLLM's
	// --no-enable-prefix-caching): every prompt is computed from scratch
	// and no block outlives its sequence. Default: on.
	DisablePrefixCaching bool
	// ModelID is the model's identity in the prefix cache's block hashes
	// (see package blockhash): a router hashing prompts to find which group
	// holds them must use the same (the worker passes the model name it
	// serves and registers).
	ModelID string
	// KVCacheDType is the element type of the KV cache (default
	// KVAuto: what the backend suits to the model's weights, see
	// compute.Backend.AutoKVDType). Every rank of a group must use the
	// same.
	KVCacheDType KVCacheDType
	// MaxBatchTokens bounds the rows of one step; it is also the prefill
	// chunk size (default 512).
	MaxBatchTokens int
	// MaxSeqs bounds the sequences of one step (default 256).
	MaxSeqs int
	// Detokenizer turns tokens into text deltas and enables stop strings;
	// nil leaves Output.Text empty.
	Detokenizer Detokenizer
	// OnStep, if set, is called after every step with its record, which
	// is only valid during the call.
	OnStep func(*StepRecord)
	// OpTimes records each step's time per op of the forward pass in
	// StepRecord.Ops (default off). It costs a clock read per op; on a
	// backend that queues its ops (compute/cuda) it also waits for the
	// queue after each, which slows the step.
	OpTimes bool
	// BeforeForward, if set, is called on rank 0 once a step is scheduled
	// (its id and batch composition are in the record), before its
	// forward pass: the moment to start streaming the KV of prompts the
	// step completes (see WaitLayer).
	BeforeForward func(*StepRecord)
	// Comm connects the ranks of a tensor-parallel group; required when
	// the model is sharded (TP > 1), ignored otherwise. Every rank must use
	// the same Options.
	Comm nccl.Communicator
}

// Detokenizer makes one incremental text stream per sequence.
type Detokenizer interface {
	NewStream() TextStream
}

// TextStream turns a sequence's tokens into text, one token at a time,
// returning only complete characters.
type TextStream interface {
	Add(token int32) string
	// Flush returns text still held back (an incomplete character) at the end.
	Flush() string
}

// Request is one generation request.
type Request struct {
	ID     string
	Prompt []int32
	Params SamplingParams
	// HoldKV keeps the request's KV blocks when it finishes, until
	// Release, so a prefill group can send them on (see Held).
	HoldKV bool
}

// Output is one generated token of a request, or its end.
type Output struct {
	RequestID string
	// Index is the token's position among the generated tokens.
	Index int
	Token int32
	// Text is the new text this token completes (may be empty).
	Text        string
	Logprob     *TokenLogprob
	TopLogprobs []TokenLogprob
	// FinishReason is set on the last output of a request.
	FinishReason FinishReason
	// Step is the id of the step that produced the token (StepRecord.Step).
	Step uint64
}

// sequence is the engine's state of one request.
type sequence struct {
	req       Request
	tokens    []int32 // prompt then generated
	generated int
	computed  int // tokens whose keys and values are in the cache
	blocks    []int32
	// hashes name the sequence's full blocks, as far as they have been
	// needed; registered counts the leading blocks already offered to the
	// prefix cache.
	hashes     []blockhash.Hash
	registered int
	sampler    *sampler
	stream     TextStream
	text       strings.Builder
	emitted    int // bytes of text already returned
	lpScratch  []int32
}

// Engine runs one model on one backend with continuous batching: every
// step admits new sequences, mixes prefill chunks with decode tokens and
// drops finished sequences. It is not safe for concurrent use.
type Engine struct {
	m       *Model
	opts    Options
	kv      compute.KVCache
	pool    *blockPool
	scratch *scratch
	batch   batch
	byID    map[string]*sequence
	held    map[string]HeldKV // KV kept past a request's end, or reserved for one arriving
	waiting []*sequence       // FCFS, not yet (or no longer) holding blocks
	running []*sequence
	step    uint64
	rec     StepRecord
	clock   opClock
	comm    nccl.Communicator
	// planWords is the reusable encoding of a step plan (TP > 1).
	planWords []int32
	progress  progress
	prefix    PrefixStats
}

// New makes an engine for m, allocating its KV cache on m's backend.
func New(m *Model, opts Options) (*Engine, error) {
	cfg := m.cfg
	if tp := m.plan.TP; tp > 1 && (opts.Comm == nil || opts.Comm.Size() != tp || opts.Comm.Rank() != m.plan.Rank) {
		return nil, fmt.Errorf("engine: a TP-%d shard of rank %d needs a communicator of that size and rank", tp, m.plan.Rank)
	}
	if opts.BlockSize <= 0 {
		opts.BlockSize = DefaultBlockSize
	}
	if opts.MaxBatchTokens <= 0 {
		opts.MaxBatchTokens = 512
	}
	if opts.MaxSeqs <= 0 {
		opts.MaxSeqs = 256
	}
	opts.MaxSeqs = min(opts.MaxSeqs, opts.MaxBatchTokens)
	if opts.KVCacheBytes <= 0 {
		opts.KVCacheBytes = 512 << 20
	}
	kvDType, err := opts.KVCacheDType.resolve(m)
	if err != nil {
		return nil, err
	}
	spec := compute.KVSpec{
		Layers: cfg.Layers, BlockSize: opts.BlockSize,
		KVHeads: m.attnSpec.KVHeads, HeadDim: cfg.HeadDim, DType: kvDType,
	}
	perBlock := int64(cfg.Layers * spec.Bytes() * opts.BlockSize)
	blocks := opts.KVCacheBytes / perBlock
	fullSeq := int64((cfg.MaxPositions + opts.BlockSize - 1) / opts.BlockSize)
	blocks = min(blocks, fullSeq*int64(opts.MaxSeqs))
	if blocks < 1 {
		return nil, fmt.Errorf("engine: KV cache budget of %d bytes holds no block of %d bytes", opts.KVCacheBytes, perBlock)
	}
	spec.NumBlocks = int(blocks)
	kv, err := m.be.NewKVCache(spec)
	if err != nil {
		return nil, fmt.Errorf("engine: allocating KV cache: %w", err)
	}
	e := &Engine{
		m: m, opts: opts, kv: kv,
		pool:    newBlockPool(int(blocks), opts.BlockSize, !opts.DisablePrefixCaching),
		scratch: newScratch(m.be, m, opts.MaxBatchTokens, opts.MaxSeqs),
		byID:    map[string]*sequence{},
		held:    map[string]HeldKV{},
		comm:    opts.Comm,
		clock:   opClock{on: opts.OpTimes},
	}
	if s, ok := m.be.(syncer); ok && opts.OpTimes {
		e.clock.sync = s.Sync
	}
	e.progress.init()
	return e, nil
}

// Model is the engine's model.
func (e *Engine) Model() *Model { return e.m }

// KVBlocks returns the free and total KV cache blocks; free blocks
// include those of the prefix cache nobody uses, which are evicted when
// needed.
func (e *Engine) KVBlocks() (free, total int) { return e.pool.Free(), e.pool.total }

// KVCacheDType is the element type of the KV cache, resolved: KVFP32,
// KVBF16 or KVFP16, never KVAuto.
func (e *Engine) KVCacheDType() KVCacheDType { return kvCacheDTypeOf(e.kv.DType()) }

// BlockSize is the number of token slots per KV block.
func (e *Engine) BlockSize() int { return e.opts.BlockSize }

// HasWork reports whether any request is waiting or running.
func (e *Engine) HasWork() bool { return len(e.byID) > 0 }

// Add validates a request and queues it.
func (e *Engine) Add(req Request) error {
	if _, held := e.held[req.ID]; held {
		return fmt.Errorf("%w: %q is already in use", ErrDuplicateID, req.ID)
	}
	s, err := e.newSequence(req)
	if err != nil {
		return err
	}
	e.byID[req.ID] = s
	e.waiting = append(e.waiting, s)
	return nil
}

// newSequence validates req and makes its sequence.
func (e *Engine) newSequence(req Request) (*sequence, error) {
	cfg := e.m.cfg
	if err := req.Params.Validate(); err != nil {
		return nil, err
	}
	switch {
	case req.ID == "":
		return nil, fmt.Errorf("%w: request id is empty", ErrInvalidRequest)
	case e.byID[req.ID] != nil:
		return nil, fmt.Errorf("%w: %q is already in use", ErrDuplicateID, req.ID)
	case len(req.Prompt) == 0:
		return nil, fmt.Errorf("%w: prompt is empty", ErrInvalidRequest)
	case len(req.Prompt) > cfg.MaxPositions:
		return nil, fmt.Errorf("%w: prompt is %d tokens, longer than the model's context of %d", ErrInvalidRequest, len(req.Prompt), cfg.MaxPositions)
	case len(req.Prompt)+req.Params.MaxTokens > cfg.MaxPositions:
		return nil, fmt.Errorf("%w: max_tokens %d plus the prompt's %d tokens exceed the model's context of %d",
			ErrInvalidRequest, req.Params.MaxTokens, len(req.Prompt), cfg.MaxPositions)
	case e.pool.blocksFor(len(req.Prompt)+req.Params.MaxTokens) > e.pool.total:
		return nil, fmt.Errorf("%w: prompt plus max_tokens (%d tokens) exceed the KV cache's %d tokens",
			ErrInvalidRequest, len(req.Prompt)+req.Params.MaxTokens, e.pool.total*e.opts.BlockSize)
	}
	for i, t := range req.Prompt {
		if t < 0 || int(t) >= cfg.VocabSize {
			return nil, fmt.Errorf("%w: prompt token %d at index %d is outside the vocabulary (%d)", ErrInvalidRequest, t, i, cfg.VocabSize)
		}
	}
	for _, t := range req.Params.StopTokenIDs {
		if t < 0 || int(t) >= cfg.VocabSize {
			return nil, fmt.Errorf("%w: stop token id %d is outside the vocabulary (%d)", ErrInvalidParams, t, cfg.VocabSize)
		}
	}
	if len(req.Params.Stop) > 0 && e.opts.Detokenizer == nil {
		return nil, fmt.Errorf("%w: stop strings need a detokenizer", ErrInvalidParams)
	}
	s := &sequence{
		req:     req,
		tokens:  append(make([]int32, 0, len(req.Prompt)+req.Params.MaxTokens), req.Prompt...),
		sampler: newSampler(req.Params),
	}
	if e.opts.Detokenizer != nil {
		s.stream = e.opts.Detokenizer.NewStream()
	}
	return s, nil
}

// Abort ends a request and frees its KV blocks, including blocks it holds
// after finishing (HoldKV) or that Reserve set aside.
func (e *Engine) Abort(id string) error {
	s := e.byID[id]
	if s == nil {
		return e.Release(id)
	}
	s.req.HoldKV = false
	e.finish(s)
	return nil
}

func (e *Engine) finish(s *sequence) {
	if s.req.HoldKV && s.blocks != nil {
		e.held[s.req.ID] = HeldKV{Blocks: s.blocks, Tokens: s.computed}
	} else {
		e.pool.release(s.blocks)
	}
	s.blocks = nil
	delete(e.byID, s.req.ID)
	e.waiting = slices.DeleteFunc(e.waiting, func(x *sequence) bool { return x == s })
	e.running = slices.DeleteFunc(e.running, func(x *sequence) bool { return x == s })
}

// Step runs one batched forward pass and returns the outputs it produced.
// It returns no outputs and no error when there is no work.
func (e *Engine) Step(ctx context.Context) ([]Output, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	start := time.Now()
	e.rec = StepRecord{Step: e.step, Start: start, Seqs: e.rec.Seqs[:0], Collectives: e.rec.Collectives[:0]}
	sampling := e.schedule()
	if len(e.batch.tokens) == 0 {
		return nil, nil
	}
	e.step++
	e.rec.Step = e.step
	if e.opts.BeforeForward != nil {
		e.opts.BeforeForward(&e.rec)
	}
	computeStart := time.Now()
	if e.m.plan.TP > 1 {
		if err := e.broadcastPlan(ctx, &e.batch); err != nil {
			return nil, err
		}
	}
	logits, err := e.forward(ctx, &e.batch)
	if err != nil {
		return nil, err
	}
	sampleStart := time.Now()
	outs := e.sampleAll(logits, sampling)
	e.rec.Schedule = computeStart.Sub(start)
	e.rec.Compute = sampleStart.Sub(computeStart)
	e.rec.Sample = time.Since(sampleStart)
	e.rec.FreeBlocks = e.pool.Free()
	if e.opts.OnStep != nil {
		e.opts.OnStep(&e.rec)
	}
	return outs, nil
}

// Load is how busy an engine is: the inputs of a router's choice.
type Load struct {
	// Running sequences hold KV blocks; Waiting ones are queued for them.
	Running, Waiting int
	// PendingPrefillTokens are prompt tokens not yet computed.
	PendingPrefillTokens int
}

// Load reports the engine's current load.
func (e *Engine) Load() Load {
	l := Load{Running: len(e.running), Waiting: len(e.waiting)}
	for _, q := range [][]*sequence{e.running, e.waiting} {
		for _, s := range q {
			if n := len(s.tokens) - s.computed; n > 1 {
				l.PendingPrefillTokens += n
			}
		}
	}
	return l
}
