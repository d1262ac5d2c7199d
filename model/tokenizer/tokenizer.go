package tokenizer

import (
	"fmt"
	"os"
	"strings"
)

// Tokenizer encodes text to token ids and back, following a Hugging Face
// tokenizer.json with a BPE model. It is immutable after loading, apart from
// an internal word cache, and safe for concurrent use.
type Tokenizer struct {
	model     *bpe
	idToToken []string // "" marks an id no token has
	special   []bool   // by id
	added     []AddedToken
	addedIDs  map[string]int32

	rawAdded  *addedMatcher // tokens matched before normalization
	normAdded *addedMatcher // tokens matched after it
	norm      normalizer
	pre       preTokenizer
	post      postProcessor
	dec       decoder
	byteRuns  bool // dec contains ByteFallback
}

// defaultCacheWords bounds the per-Tokenizer word cache.
const defaultCacheWords = 1 << 15

// Load reads and parses a tokenizer.json file.
func Load(path string) (*Tokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	return parse(path, data)
}

// Parse parses the contents of a tokenizer.json file.
func Parse(data []byte) (*Tokenizer, error) {
	return parse("tokenizer.json", data)
}

// VocabSize returns one more than the largest token id, which is the number
// of rows a model's embedding table needs.
func (t *Tokenizer) VocabSize() int { return len(t.idToToken) }

// TokenID returns the id of a token given as it appears in tokenizer.json
// (for byte-level models, in the byte-level alphabet: "Ġthe").
func (t *Tokenizer) TokenID(token string) (int32, bool) {
	if id, ok := t.addedIDs[token]; ok {
		return id, true
	}
	id, ok := t.model.vocab[token]
	return id, ok
}

// Token returns the token string with the given id.
func (t *Tokenizer) Token(id int32) (string, bool) {
	if id < 0 || int(id) >= len(t.idToToken) || t.idToToken[id] == "" {
		return "", false
	}
	return t.idToToken[id], true
}

// AddedTokens returns the added tokens, in id order.
func (t *Tokenizer) AddedTokens() []AddedToken {
	return append([]AddedToken(nil), t.added...)
}

// IsSpecial reports whether id is a special added token.
func (t *Tokenizer) IsSpecial(id int32) bool {
	return id >= 0 && int(id) < len(t.special) && t.special[id]
}

// BOS returns the id of the beginning-of-sequence added token; tokenizer.json
// does not say which it is, so it is found by its usual
// names (<|begin_of_text|>, <s>, <|startoftext|>, <bos>, then GPT-2's
// <|endoftext|>).
func (t *Tokenizer) BOS() (int32, bool) {
	return t.firstOf("<|begin_of_text|>", "<s>", "<|startoftext|>", "<bos>", "<|endoftext|>")
}

// EOS returns the id of the end-of-sequence added token, found by its usual names
// (<|end_of_text|>, </s>, <eos>, <|endoftext|>). Chat models also stop at
// their turn-end token (<|eot_id|>, <|im_end|>), which TokenID finds.
func (t *Tokenizer) EOS() (int32, bool) {
	return t.firstOf("<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>")
}

func (t *Tokenizer) firstOf(names ...string) (int32, bool) {
	for _, n := range names {
		// Only added tokens: a vocabulary may hold "</s>" as ordinary text.
		if id, ok := t.addedIDs[n]; ok {
			return id, true
		}
	}
	return 0, false
}

// Encode returns the token ids of text. With addSpecial, the post-processor's
// special tokens (Llama-3's <|begin_of_text|>, for one) are added. Added
// tokens written in the text are recognised whatever addSpecial says, as
// Hugging Face does. Bytes that are not valid UTF-8 count as symbols when
// pre-tokenizing; byte-level models encode them exactly.
func (t *Tokenizer) Encode(text string, addSpecial bool) []int32 {
	ids := make([]int32, 0, len(text)/4+4)
	var pieces []string
	atStart := true
	encodeText := func(s string, id int32) {
		if id >= 0 {
			ids = append(ids, id)
			atStart = false
			return
		}
		pieces = pieces[:0]
		if t.pre == nil {
			pieces = append(pieces, s)
		} else {
			pieces = t.pre.split(pieces, s, atStart)
		}
		atStart = false
		for _, p := range pieces {
			ids = t.model.encode(ids, p)
		}
	}
	t.rawAdded.split(text, func(s string, id int32) {
		if id >= 0 || t.norm == nil && t.normAdded == nil {
			encodeText(s, id)
			return
		}
		if t.norm != nil {
			s = t.norm.normalize(s)
		}
		t.normAdded.split(s, encodeText)
	})
	if addSpecial && t.post != nil {
		ids = t.post.process(ids)
	}
	return ids
}

// Decode returns the text of ids, leaving out special tokens when
// skipSpecial is set. Byte sequences that are not valid UTF-8 become U+FFFD,
// one per maximal invalid subsequence, as Hugging Face does.
func (t *Tokenizer) Decode(ids []int32, skipSpecial bool) (string, error) {
	raw, err := t.decodeRaw(ids, skipSpecial)
	if err != nil {
		return "", err
	}
	return lossyUTF8([]byte(raw)), nil
}

// decodeRaw returns the decoded bytes of ids, before UTF-8 clean-up.
func (t *Tokenizer) decodeRaw(ids []int32, skipSpecial bool) (string, error) {
	tokens := make([]string, 0, len(ids))
	for _, id := range ids {
		tok, ok := t.Token(id)
		if !ok {
			return "", fmt.Errorf("%w: %d (vocabulary size %d)", ErrUnknownID, id, len(t.idToToken))
		}
		if skipSpecial && t.special[id] {
			continue
		}
		tokens = append(tokens, tok)
	}
	if t.dec == nil {
		return strings.Join(tokens, " "), nil
	}
	return strings.Join(t.dec.decodeChain(tokens), ""), nil
}
