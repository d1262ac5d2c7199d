package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"

	tiktoken "github.com/tiktoken-go/tokenizer"
)

// gpt2Ranks is the number of ranked tokens in r50k_base; the next id is
// <|endoftext|>.
const gpt2Ranks = 50256

// GPT2VocabSize is the number of tokens in GPT-2's vocabulary.
const GPT2VocabSize = gpt2Ranks + 1

// GPT2JSON returns a Hugging Face tokenizer.json for GPT-2's byte-level BPE:
// 50257 tokens with <|endoftext|> = 50256 as a special added token, the GPT-2
// pre-tokenizer (ByteLevel with its regex) and a ByteLevel decoder. The vocab
// and merges are derived from the r50k_base ranks shipped with
// github.com/tiktoken-go/tokenizer, so encoding with the file gives the same
// ids as tiktoken's GPT-2 encoder.
//
// When padTo is greater than 50257, special added tokens named
// <|reserved_special_token_N|> (N from 0) are appended until the vocabulary
// holds padTo tokens, so that a model whose embedding table is larger (the
// llama-1b preset uses 128256, the Llama-3 vocabulary size) has a token for
// every row. A padTo of 50257 or less adds nothing.
func GPT2JSON(padTo int) ([]byte, error) {
	ranks, err := gpt2RankBytes()
	if err != nil {
		return nil, err
	}
	merges, err := mergesFromRanks(ranks)
	if err != nil {
		return nil, err
	}
	bl := newByteLevel()
	spell := func(b []byte) string { return string(bl.encode(nil, string(b))) }

	var buf bytes.Buffer
	buf.WriteString("{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [\n")
	writeAdded := func(id int, content string, normalized bool, last bool) {
		fmt.Fprintf(&buf, "    {\"id\": %d, \"content\": %s, \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": %t, \"special\": true}",
			id, jsonString(content), normalized)
		if !last {
			buf.WriteByte(',')
		}
		buf.WriteByte('\n')
	}
	writeAdded(gpt2Ranks, "<|endoftext|>", true, padTo <= GPT2VocabSize)
	for id := GPT2VocabSize; id < padTo; id++ {
		writeAdded(id, fmt.Sprintf("<|reserved_special_token_%d|>", id-GPT2VocabSize), false, id == padTo-1)
	}
	buf.WriteString(`  ],
  "normalizer": null,
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
  "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
  "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
  "model": {
    "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "", "end_of_word_suffix": "",
    "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
    "vocab": {
`)
	for id, b := range ranks {
		fmt.Fprintf(&buf, "      %s: %d,\n", jsonString(spell(b)), id)
	}
	fmt.Fprintf(&buf, "      %s: %d\n    },\n    \"merges\": [\n", jsonString("<|endoftext|>"), gpt2Ranks)
	for i, m := range merges {
		sep := ","
		if i == len(merges)-1 {
			sep = ""
		}
		fmt.Fprintf(&buf, "      %s%s\n", jsonString(spell(ranks[m[0]])+" "+spell(ranks[m[1]])), sep)
	}
	buf.WriteString("    ]\n  }\n}\n")
	return buf.Bytes(), nil
}

// GPT2Tokenizer returns the tokenizer described by GPT2JSON(padTo).
func GPT2Tokenizer(padTo int) (*Tokenizer, error) {
	data, err := GPT2JSON(padTo)
	if err != nil {
		return nil, err
	}
	return parse("gpt2 tokenizer.json", data)
}

// gpt2RankBytes returns the bytes of each r50k_base token, indexed by rank.
// The codec does not export its table, but decoding one id at a time with
// no UTF-8 cleaning returns exactly the token's bytes.
func gpt2RankBytes() ([][]byte, error) {
	codec, err := tiktoken.Get(tiktoken.R50kBase)
	if err != nil {
		return nil, fmt.Errorf("gpt2 ranks: %w", err)
	}
	codec.SetErrorMode(tiktoken.ErrorModeNone)
	ranks := make([][]byte, gpt2Ranks)
	for id := range ranks {
		s, err := codec.Decode([]uint{uint(id)})
		if err != nil {
			return nil, fmt.Errorf("gpt2 ranks: token %d: %w", id, err)
		}
		ranks[id] = []byte(s)
	}
	return ranks, nil
}

// mergesFromRanks derives a BPE merge list from rank-ordered tokens: for each
// multi-byte token, in rank order, the pair of tokens that rank-based BPE
// joins to form it. That pair is found by running BPE on the token's own
// bytes while allowing only merges of lower rank than the token: what is left
// is exactly two parts. Listing merges in the rank order of their results
// makes merge priority equal rank priority.
func mergesFromRanks(ranks [][]byte) ([][2]int, error) {
	rankOf := make(map[string]int, len(ranks))
	for id, b := range ranks {
		rankOf[string(b)] = id
	}
	var merges [][2]int
	parts := make([]string, 0, 64)
	for id, tok := range ranks {
		if len(tok) < 2 {
			continue
		}
		parts = parts[:0]
		for i := range tok {
			parts = append(parts, string(tok[i:i+1]))
		}
		for len(parts) > 2 {
			best, bestRank := -1, id
			for i := 0; i+1 < len(parts); i++ {
				if r, ok := rankOf[parts[i]+parts[i+1]]; ok && r < bestRank {
					best, bestRank = i, r
				}
			}
			if best < 0 {
				break
			}
			parts[best] += parts[best+1]
			parts = append(parts[:best+1], parts[best+2:]...)
		}
		if len(parts) != 2 {
			return nil, fmt.Errorf("gpt2 ranks: token %d %q is not reachable by merging lower-ranked tokens", id, tok)
		}
		left, okl := rankOf[parts[0]]
		right, okr := rankOf[parts[1]]
		if !okl || !okr {
			return nil, fmt.Errorf("gpt2 ranks: token %d %q splits into unknown parts", id, tok)
		}
		merges = append(merges, [2]int{left, right})
	}
	return merges, nil
}

// jsonString quotes s as a JSON string without HTML escaping.
func jsonString(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return string(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
}
