package dataset

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
)

// Tokenizer is what building prompts needs of the target's tokenizer;
// *model/tokenizer.Tokenizer satisfies it.
type Tokenizer interface {
	Encode(text string, addSpecial bool) []int32
	Decode(ids []int32, skipSpecial bool) (string, error)
	VocabSize() int
	IsSpecial(id int32) bool
}

// Request is one prompt of a workload.
type Request struct {
	// Prompt is the text sent.
	Prompt string
	// PromptLen is the prompt's length in tokens as the target counts it
	// (the tokenizer's special tokens included).
	PromptLen int
	// OutputLen is the number of tokens to ask for (max_tokens).
	OutputLen int
}

// ErrInvalid is wrapped by every error about options or a dataset file.
var ErrInvalid = errors.New("invalid dataset")

// RandomOptions shape the "random" dataset; the names follow vllm bench
// serve's --random-* flags.
type RandomOptions struct {
	// InputLen and OutputLen are the mean prompt and output lengths in
	// tokens (prompt length counts the tokenizer's special tokens).
	InputLen, OutputLen int
	// RangeRatio in [0, 1) spreads the lengths uniformly over
	// [len·(1−r), len·(1+r)].
	RangeRatio float64
	// Num is the number of prompts.
	Num int
	// Seed makes the draw reproducible.
	Seed uint64
}

// maxAdjust bounds the decode/re-encode rounds that bring a random
// prompt to its exact length.
const maxAdjust = 64

// Random returns Num prompts whose token counts, under tok, are drawn
// from the asked ranges. Each prompt starts as a run of consecutive
// non-special token ids from a random offset; its text is the decoding of
// those ids, re-encoded and then cut or extended with random tokens until
// decoding and encoding agree on the exact length (BPE merges across the
// joins would otherwise change it). A prompt that cannot be brought to
// its length keeps the nearest and reports its true length.
func Random(tok Tokenizer, o RandomOptions) ([]Request, error) {
	switch {
	case o.Num < 1:
		return nil, fmt.Errorf("%w: --num-prompts %d: must be >= 1", ErrInvalid, o.Num)
	case o.InputLen < 1:
		return nil, fmt.Errorf("%w: --random-input-len %d: must be >= 1", ErrInvalid, o.InputLen)
	case o.OutputLen < 1:
		return nil, fmt.Errorf("%w: --random-output-len %d: must be >= 1", ErrInvalid, o.OutputLen)
	case !(o.RangeRatio >= 0 && o.RangeRatio < 1):
		return nil, fmt.Errorf("%w: --random-range-ratio %v: must be in [0, 1)", ErrInvalid, o.RangeRatio)
	}
	special := len(tok.Encode("x", true)) - len(tok.Encode("x", false))
	own := o.InputLen - special
	inLo, inHi := int(math.Floor(float64(own)*(1-o.RangeRatio))), int(math.Ceil(float64(own)*(1+o.RangeRatio)))
	if inLo < 1 {
		return nil, fmt.Errorf("%w: --random-input-len %d: with %d special tokens and --random-range-ratio %v a prompt could have no token of its own",
			ErrInvalid, o.InputLen, special, o.RangeRatio)
	}
	outLo := max(1, int(math.Floor(float64(o.OutputLen)*(1-o.RangeRatio))))
	outHi := max(1, int(math.Ceil(float64(o.OutputLen)*(1+o.RangeRatio))))
	allowed := ordinary(tok)
	if len(allowed) == 0 {
		return nil, fmt.Errorf("%w: the tokenizer has no ordinary tokens", ErrInvalid)
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x5eed))
	reqs := make([]Request, o.Num)
	for i := range reqs {
		in := inLo + rng.IntN(inHi-inLo+1)
		out := outLo + rng.IntN(outHi-outLo+1)
		offset := rng.IntN(len(allowed))
		ids := make([]int32, in)
		for k := range ids {
			ids[k] = allowed[(offset+i+k)%len(allowed)]
		}
		text, n, err := exactLength(tok, rng, allowed, ids, in)
		if err != nil {
			return nil, err
		}
		reqs[i] = Request{Prompt: text, PromptLen: n + special, OutputLen: out}
	}
	return reqs, nil
}

// exactLength decodes ids and adjusts them until the text encodes to
// target tokens; it returns the text and its length.
func exactLength(tok Tokenizer, rng *rand.Rand, allowed, ids []int32, target int) (string, int, error) {
	var text string
	for range maxAdjust {
		var err error
		if text, err = tok.Decode(ids, false); err != nil {
			return "", 0, fmt.Errorf("dataset: decoding a random prompt: %w", err)
		}
		got := tok.Encode(text, false)
		switch {
		case len(got) == target:
			return text, target, nil
		case len(got) > target:
			ids = got[:target]
		default:
			ids = got
			for len(ids) < target {
				ids = append(ids, allowed[rng.IntN(len(allowed))])
			}
		}
	}
	return text, len(tok.Encode(text, false)), nil
}
