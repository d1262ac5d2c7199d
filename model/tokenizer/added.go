package tokenizer

import (
	"sort"
	"unicode"
	"unicode/utf8"
)

// AddedToken is a token matched in the input text before pre-tokenization,
// such as <|begin_of_text|>. Special ones are those Decode can skip.
type AddedToken struct {
	ID      int32
	Content string
	Special bool
	// LStrip and RStrip make a match absorb the whitespace to its left or
	// right; SingleWord makes it match only when not inside a word;
	// Normalized makes it match the normalized text rather than the raw one.
	LStrip, RStrip, SingleWord, Normalized bool
}

// addedMatcher finds added tokens in text, leftmost first and, at one
// position, longest first, as Hugging Face does.
type addedMatcher struct {
	tokens  []AddedToken
	byFirst [256][]int32 // first byte -> indices into tokens, longest first
}

func newAddedMatcher(tokens []AddedToken) *addedMatcher {
	m := &addedMatcher{}
	for _, t := range tokens {
		if t.Content != "" {
			m.tokens = append(m.tokens, t)
		}
	}
	for i, t := range m.tokens {
		b := t.Content[0]
		m.byFirst[b] = append(m.byFirst[b], int32(i))
	}
	for b := range m.byFirst {
		l := m.byFirst[b]
		sort.SliceStable(l, func(i, j int) bool { return len(m.tokens[l[i]].Content) > len(m.tokens[l[j]].Content) })
	}
	return m
}

// split calls emit for each piece of text in order: a run of ordinary text
// (id -1) or an added token.
func (m *addedMatcher) split(text string, emit func(s string, id int32)) {
	if m == nil || len(m.tokens) == 0 {
		if text != "" {
			emit(text, -1)
		}
		return
	}
	last := 0 // start of the text not yet emitted
	for i := 0; i < len(text); i++ {
		cands := m.byFirst[text[i]]
		if len(cands) == 0 || i < last {
			continue
		}
		for _, ci := range cands {
			t := &m.tokens[ci]
			end := i + len(t.Content)
			if end > len(text) || text[i:end] != t.Content {
				continue
			}
			if t.SingleWord && (isWordBefore(text, i) || isWordAfter(text, end)) {
				continue
			}
			start := i
			if t.LStrip {
				for start > last {
					r, n := utf8.DecodeLastRuneInString(text[last:start])
					if !unicode.IsSpace(r) {
						break
					}
					start -= n
				}
			}
			if t.RStrip {
				for end < len(text) {
					r, n := utf8.DecodeRuneInString(text[end:])
					if !unicode.IsSpace(r) {
						break
					}
					end += n
				}
			}
			if start > last {
				emit(text[last:start], -1)
			}
			emit(text[start:end], t.ID)
			last = end
			i = end - 1
			break
		}
	}
	if last < len(text) {
		emit(text[last:], -1)
	}
}

func isWordRune(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }

func isWordBefore(s string, i int) bool {
	if i == 0 {
		return false
	}
	r, _ := utf8.DecodeLastRuneInString(s[:i])
	return isWordRune(r)
}

func isWordAfter(s string, i int) bool {
	if i >= len(s) {
		return false
	}
	r, _ := utf8.DecodeRuneInString(s[i:])
	return isWordRune(r)
}
