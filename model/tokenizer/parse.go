package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

type fileJSON struct {
	AddedTokens   []addedTokenJSON `json:"added_tokens"`
	Normalizer    json.RawMessage  `json:"normalizer"`
	PreTokenizer  json.RawMessage  `json:"pre_tokenizer"`
	PostProcessor json.RawMessage  `json:"post_processor"`
	Decoder       json.RawMessage  `json:"decoder"`
	Model         *modelJSON       `json:"model"`
}

type addedTokenJSON struct {
	ID         *int64 `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

type modelJSON struct {
	Type                    string           `json:"type"`
	Vocab                   map[string]int64 `json:"vocab"`
	Merges                  json.RawMessage  `json:"merges"`
	UnkToken                *string          `json:"unk_token"`
	ContinuingSubwordPrefix *string          `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string          `json:"end_of_word_suffix"`
	FuseUnk                 bool             `json:"fuse_unk"`
	ByteFallback            bool             `json:"byte_fallback"`
	IgnoreMerges            bool             `json:"ignore_merges"`
}

// parse builds a Tokenizer from tokenizer.json contents; name is the file
// that errors name.
func parse(name string, data []byte) (*Tokenizer, error) {
	t, err := build(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", name, ErrInvalid, err)
	}
	return t, nil
}

func build(data []byte) (*Tokenizer, error) {
	var f fileJSON
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("malformed JSON: %w", err)
	}
	if f.Model == nil {
		return nil, errors.New("no model")
	}
	if f.Model.Type != "BPE" && f.Model.Type != "" {
		return nil, fmt.Errorf("model: %w %q (only BPE is supported)", errUnsupported, f.Model.Type)
	}
	t := &Tokenizer{}
	if err := t.buildVocab(f.Model, f.AddedTokens); err != nil {
		return nil, err
	}
	var err error
	if t.model, err = buildBPE(f.Model); err != nil {
		return nil, err
	}
	bl := newByteLevel()
	if t.norm, err = parseNormalizer(f.Normalizer); err != nil {
		return nil, err
	}
	t.buildAddedMatchers()
	if t.pre, err = parsePreTokenizer(f.PreTokenizer, bl); err != nil {
		return nil, err
	}
	valid := func(id int32) bool { _, ok := t.Token(id); return ok }
	if t.post, err = parsePostProcessor(f.PostProcessor, valid); err != nil {
		return nil, err
	}
	if t.dec, err = parseDecoder(f.Decoder, bl); err != nil {
		return nil, err
	}
	t.byteRuns = hasByteFallback(t.dec)
	return t, nil
}

// buildVocab fills the id tables from the model vocab and the added tokens.
func (t *Tokenizer) buildVocab(m *modelJSON, added []addedTokenJSON) error {
	if m.Vocab == nil {
		return errors.New("model: missing vocab")
	}
	if len(m.Vocab) == 0 {
		return errors.New("model: empty vocab")
	}
	// Ids are dense in real files; the bound keeps a corrupt id from
	// allocating gigabytes.
	limit := int64(2*(len(m.Vocab)+len(added)) + 1024)
	maxID := int64(-1)
	checkID := func(what string, id int64) error {
		if id < 0 || id >= limit {
			return fmt.Errorf("%s: id %d out of range (the file defines %d tokens)", what, id, len(m.Vocab)+len(added))
		}
		maxID = max(maxID, id)
		return nil
	}
	for tok, id := range m.Vocab {
		if tok == "" {
			return errors.New("model: vocab has an empty token")
		}
		if err := checkID(fmt.Sprintf("model: vocab token %q", tok), id); err != nil {
			return err
		}
	}
	t.addedIDs = make(map[string]int32, len(added))
	for i, a := range added {
		if a.ID == nil {
			return fmt.Errorf("added_tokens[%d] %q: no id", i, a.Content)
		}
		if a.Content == "" {
			return fmt.Errorf("added_tokens[%d]: empty content", i)
		}
		if err := checkID(fmt.Sprintf("added_tokens[%d] %q", i, a.Content), *a.ID); err != nil {
			return err
		}
	}
	t.idToToken = make([]string, maxID+1)
	t.special = make([]bool, maxID+1)
	for tok, id := range m.Vocab {
		if prev := t.idToToken[id]; prev != "" {
			a, b := min(prev, tok), max(prev, tok) // sorted, so the message is stable
			return fmt.Errorf("model: vocab tokens %q and %q share id %d", a, b, id)
		}
		t.idToToken[id] = tok
	}
	seen := make(map[int32]string, len(added))
	for i, a := range added {
		id := int32(*a.ID)
		if prev, ok := seen[id]; ok && prev != a.Content {
			return fmt.Errorf("added_tokens[%d] %q: id %d already taken by added token %q", i, a.Content, id, prev)
		}
		seen[id] = a.Content
		t.idToToken[id] = a.Content
		t.special[id] = a.Special
		t.addedIDs[a.Content] = id
		t.added = append(t.added, AddedToken{
			ID: id, Content: a.Content, Special: a.Special,
			LStrip: a.LStrip, RStrip: a.RStrip, SingleWord: a.SingleWord, Normalized: a.Normalized,
		})
	}
	sort.SliceStable(t.added, func(i, j int) bool { return t.added[i].ID < t.added[j].ID })
	return nil
}

// buildAddedMatchers splits the added tokens, as Hugging Face does, into
// those matched in the raw text and those (normalized: true) matched in the
// normalized text, whose content is normalized too. Without a normalizer
// the two are the same.
func (t *Tokenizer) buildAddedMatchers() {
	var raw, normed []AddedToken
	for _, a := range t.added {
		if a.Normalized && t.norm != nil {
			a.Content = t.norm.normalize(a.Content)
			normed = append(normed, a)
		} else {
			raw = append(raw, a)
		}
	}
	t.rawAdded = newAddedMatcher(raw)
	if len(normed) > 0 {
		t.normAdded = newAddedMatcher(normed)
	}
}

// buildBPE reads the merges and options of the BPE model.
func buildBPE(m *modelJSON) (*bpe, error) {
	if s := m.ContinuingSubwordPrefix; s != nil && *s != "" {
		return nil, fmt.Errorf("model: continuing_subword_prefix %q is not supported", *s)
	}
	if s := m.EndOfWordSuffix; s != nil && *s != "" {
		return nil, fmt.Errorf("model: end_of_word_suffix %q is not supported", *s)
	}
	b := &bpe{
		vocab:        make(map[string]int32, len(m.Vocab)),
		unk:          -1,
		byteFallback: m.ByteFallback,
		fuseUnk:      m.FuseUnk,
		ignoreMerges: m.IgnoreMerges,
		cache:        newWordCache(defaultCacheWords),
	}
	for tok, id := range m.Vocab {
		b.vocab[tok] = int32(id)
	}
	if m.UnkToken != nil && *m.UnkToken != "" {
		id, ok := b.vocab[*m.UnkToken]
		if !ok {
			return nil, fmt.Errorf("model: unk_token %q is not in the vocab", *m.UnkToken)
		}
		b.unk = id
	}
	for i := range b.byteIDs {
		b.byteIDs[i] = -1
		if id, ok := b.vocab[fmt.Sprintf("<0x%02X>", i)]; ok {
			b.byteIDs[i] = id
		}
	}
	pairs, err := parseMerges(m.Merges)
	if err != nil {
		return nil, err
	}
	b.merges = make(map[uint64]merge, len(pairs))
	for rank, p := range pairs {
		left, okl := b.vocab[p[0]]
		right, okr := b.vocab[p[1]]
		if !okl || !okr {
			return nil, fmt.Errorf("model: merges[%d] %q %q names a token not in the vocab", rank, p[0], p[1])
		}
		id, ok := b.vocab[p[0]+p[1]]
		if !ok {
			return nil, fmt.Errorf("model: merges[%d] %q %q makes %q, which is not in the vocab", rank, p[0], p[1], p[0]+p[1])
		}
		key := pairKey(left, right)
		if _, dup := b.merges[key]; !dup { // the first (highest-priority) listing wins
			b.merges[key] = merge{rank: int32(rank), id: id}
		}
	}
	return b, nil
}

// parseMerges accepts both the "a b" string form and the newer ["a", "b"]
// pair form.
func parseMerges(raw json.RawMessage) ([][2]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, errors.New("model: missing merges")
	}
	var strs []string
	if err := json.Unmarshal(raw, &strs); err == nil {
		pairs := make([][2]string, len(strs))
		for i, s := range strs {
			a, b, ok := strings.Cut(s, " ")
			if !ok || a == "" || b == "" || strings.Contains(b, " ") {
				return nil, fmt.Errorf("model: merges[%d] %q is not two tokens separated by one space", i, s)
			}
			pairs[i] = [2]string{a, b}
		}
		return pairs, nil
	}
	var lists [][]string
	if err := json.Unmarshal(raw, &lists); err != nil {
		return nil, fmt.Errorf("model: merges are neither strings nor pairs of strings: %w", err)
	}
	pairs := make([][2]string, len(lists))
	for i, l := range lists {
		if len(l) != 2 {
			return nil, fmt.Errorf("model: merges[%d] has %d tokens, want 2", i, len(l))
		}
		pairs[i] = [2]string{l[0], l[1]}
	}
	return pairs, nil
}
