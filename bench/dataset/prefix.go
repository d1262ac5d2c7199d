package dataset

import (
	"fmt"
	"math/rand/v2"
	"slices"
)

// PrefixRepetitionOptions shape the "prefix_repetition" dataset; the
// names follow vllm bench serve's --prefix-repetition-* flags.
type PrefixRepetitionOptions struct {
	// PrefixLen and SuffixLen are the tokens of each prompt's shared
	// prefix and of its own suffix (the tokenizer's special tokens come on
	// top); OutputLen the tokens asked for.
	PrefixLen, SuffixLen, OutputLen int
	// NumPrefixes is how many distinct prefixes there are; each is used by
	// Num/NumPrefixes prompts.
	NumPrefixes int
	// Num is the number of prompts asked for; Num/NumPrefixes·NumPrefixes
	// are made.
	Num int
	// Seed makes the draw reproducible.
	Seed uint64
}

// maxSuffixDraws bounds the suffixes drawn for one prompt until its text
// encodes to its prefix's tokens followed by exactly SuffixLen more.
const maxSuffixDraws = 32

// PrefixRepetition returns NumPrefixes random prefixes of PrefixLen tokens,
// each followed in Num/NumPrefixes prompts by a random suffix of SuffixLen
// tokens, in a shuffled order: a workload whose prompts share prefixes, as
// system prompts and few-shot examples do, for measuring prefix caching.
// Every prompt's text encodes to exactly its prefix's tokens and then its
// suffix's (a suffix whose text would merge with the prefix's across the
// join is drawn again), so a server caching by tokens sees the whole
// prefix shared.
func PrefixRepetition(tok Tokenizer, o PrefixRepetitionOptions) ([]Request, error) {
	switch {
	case o.PrefixLen < 1:
		return nil, fmt.Errorf("%w: --prefix-repetition-prefix-len %d: must be >= 1", ErrInvalid, o.PrefixLen)
	case o.SuffixLen < 1:
		return nil, fmt.Errorf("%w: --prefix-repetition-suffix-len %d: must be >= 1", ErrInvalid, o.SuffixLen)
	case o.OutputLen < 1:
		return nil, fmt.Errorf("%w: --prefix-repetition-output-len %d: must be >= 1", ErrInvalid, o.OutputLen)
	case o.NumPrefixes < 1:
		return nil, fmt.Errorf("%w: --prefix-repetition-num-prefixes %d: must be >= 1", ErrInvalid, o.NumPrefixes)
	case o.Num < o.NumPrefixes:
		return nil, fmt.Errorf("%w: --num-prompts %d: fewer than --prefix-repetition-num-prefixes %d", ErrInvalid, o.Num, o.NumPrefixes)
	}
	allowed := ordinary(tok)
	if len(allowed) == 0 {
		return nil, fmt.Errorf("%w: the tokenizer has no ordinary tokens", ErrInvalid)
	}
	special := len(tok.Encode("x", true)) - len(tok.Encode("x", false))
	rng := rand.New(rand.NewPCG(o.Seed, 0x9f1e))
	draw := func(n int) (string, error) {
		ids := make([]int32, n)
		for k := range ids {
			ids[k] = allowed[rng.IntN(len(allowed))]
		}
		text, got, err := exactLength(tok, rng, allowed, ids, n)
		if err == nil && got != n {
			err = fmt.Errorf("dataset: no text of exactly %d tokens found", n)
		}
		return text, err
	}
	per := o.Num / o.NumPrefixes
	reqs := make([]Request, 0, per*o.NumPrefixes)
	for range o.NumPrefixes {
		prefix, err := draw(o.PrefixLen)
		if err != nil {
			return nil, err
		}
		want := tok.Encode(prefix, false)
		for range per {
			var text string
			for try := 0; ; try++ {
				if try == maxSuffixDraws {
					return nil, fmt.Errorf("dataset: no suffix of %d tokens keeps the prefix's tokens after %d draws", o.SuffixLen, maxSuffixDraws)
				}
				suffix, err := draw(o.SuffixLen)
				if err != nil {
					return nil, err
				}
				text = prefix + suffix
				if got := tok.Encode(text, false); len(got) == o.PrefixLen+o.SuffixLen && slices.Equal(got[:o.PrefixLen], want) {
					break
				}
			}
			reqs = append(reqs, Request{Prompt: text, PromptLen: special + o.PrefixLen + o.SuffixLen, OutputLen: o.OutputLen})
		}
	}
	rng.Shuffle(len(reqs), func(i, j int) { reqs[i], reqs[j] = reqs[j], reqs[i] })
	return reqs, nil
}

// ordinary lists tok's non-special token ids.
func ordinary(tok Tokenizer) []int32 {
	var ids []int32
	for id := range int32(tok.VocabSize()) {
		if !tok.IsSpecial(id) {
			ids = append(ids, id)
		}
	}
	return ids
}
