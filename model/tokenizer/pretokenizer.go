package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
)

// preTokenizer splits a run of normalized text into pre-tokens, the words
// that the model encodes independently. atStart says whether s begins the
// input text (Metaspace's "first" scheme depends on it).
type preTokenizer interface {
	split(dst []string, s string, atStart bool) []string
}

// byteLevelPre optionally adds a leading space, optionally splits with the
// GPT-2 pattern, and respells every piece in the byte-level alphabet.
type byteLevelPre struct {
	bl             *byteLevel
	addPrefixSpace bool
	useRegex       bool
}

func (p *byteLevelPre) split(dst []string, s string, _ bool) []string {
	if s == "" {
		return dst
	}
	if p.addPrefixSpace && s[0] != ' ' {
		s = " " + s
	}
	if !p.useRegex {
		return append(dst, string(p.bl.encode(nil, s)))
	}
	for i := 0; i < len(s); {
		j := scanGPT2(s, i)
		dst = append(dst, string(p.bl.encode(make([]byte, 0, 2*(j-i)), s[i:j])))
		i = j
	}
	return dst
}

// Split behaviours: what becomes of the matches of the pattern.
const (
	splitIsolated           = "Isolated"           // a piece of its own
	splitRemoved            = "Removed"            // dropped
	splitMergedWithPrevious = "MergedWithPrevious" // joined to the piece before
	splitMergedWithNext     = "MergedWithNext"     // joined to the piece after
	splitContiguous         = "Contiguous"         // adjacent matches joined
)

type splitPre struct {
	pat      *pattern
	behavior string
	invert   bool
}

func (p *splitPre) split(dst []string, s string, _ bool) []string {
	if s == "" {
		return dst
	}
	if p.pat.scan != nil && p.behavior == splitIsolated && !p.invert {
		for i := 0; i < len(s); {
			j := p.pat.scan(s, i)
			dst = append(dst, s[i:j])
			i = j
		}
		return dst
	}
	return splitByMatches(dst, s, p.pat.findAll(nil, s), p.behavior, p.invert)
}

// splitByMatches cuts s at the matches and applies behavior; with invert the
// text between matches is treated as the matches.
func splitByMatches(dst []string, s string, ms [][2]int, behavior string, invert bool) []string {
	type part struct {
		start, end int
		match      bool
	}
	parts := make([]part, 0, 2*len(ms)+1)
	last := 0
	for _, m := range ms {
		if m[0] > last {
			parts = append(parts, part{last, m[0], invert})
		}
		parts = append(parts, part{m[0], m[1], !invert})
		last = m[1]
	}
	if last < len(s) {
		parts = append(parts, part{last, len(s), invert})
	}
	pendingStart := -1 // for MergedWithNext: start of a match waiting for its next piece
	for i, pt := range parts {
		switch behavior {
		case splitRemoved:
			if !pt.match {
				dst = append(dst, s[pt.start:pt.end])
			}
		case splitMergedWithPrevious:
			if pt.match && i > 0 && !parts[i-1].match && len(dst) > 0 {
				dst[len(dst)-1] = s[parts[i-1].start:pt.end]
			} else {
				dst = append(dst, s[pt.start:pt.end])
			}
		case splitMergedWithNext:
			start := pt.start
			if pendingStart >= 0 {
				start, pendingStart = pendingStart, -1
			}
			if pt.match && i+1 < len(parts) && !parts[i+1].match {
				pendingStart = start
				continue
			}
			dst = append(dst, s[start:pt.end])
		case splitContiguous:
			if pt.match && i > 0 && parts[i-1].match && len(dst) > 0 {
				dst[len(dst)-1] = s[parts[i-1].start:pt.end]
				parts[i].start = parts[i-1].start
			} else {
				dst = append(dst, s[pt.start:pt.end])
			}
		default: // splitIsolated
			dst = append(dst, s[pt.start:pt.end])
		}
	}
	return dst
}

// metaspacePre replaces spaces with a visible marker (▁ by default),
// optionally prepends one, and optionally splits before each marker, as
// sentencepiece-style tokenizers expect.
type metaspacePre struct {
	replacement string
	prepend     string // "always", "first" or "never"
	splitOnMark bool
}

func (p *metaspacePre) split(dst []string, s string, atStart bool) []string {
	if s == "" {
		return dst
	}
	s = strings.ReplaceAll(s, " ", p.replacement)
	if !strings.HasPrefix(s, p.replacement) && (p.prepend == "always" || p.prepend == "first" && atStart) {
		s = p.replacement + s
	}
	if !p.splitOnMark {
		return append(dst, s)
	}
	lit := &pattern{literal: p.replacement}
	return splitByMatches(dst, s, lit.findAll(nil, s), splitMergedWithNext, false)
}

// preSequence applies each pre-tokenizer to every piece of the previous one.
type preSequence []preTokenizer

func (seq preSequence) split(dst []string, s string, atStart bool) []string {
	pieces := []string{s}
	var next []string
	for _, p := range seq {
		next = next[:0]
		for i, piece := range pieces {
			next = p.split(next, piece, atStart && i == 0)
		}
		pieces, next = next, pieces
	}
	return append(dst, pieces...)
}

// parsePreTokenizer builds the pre-tokenizer described by raw; nil for null.
func parsePreTokenizer(raw json.RawMessage, bl *byteLevel) (preTokenizer, error) {
	typ, err := componentType(raw)
	if err != nil || typ == "" {
		return nil, err
	}
	switch typ {
	case "ByteLevel":
		v := struct {
			AddPrefixSpace bool `json:"add_prefix_space"`
			UseRegex       bool `json:"use_regex"`
		}{UseRegex: true}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("pre_tokenizer ByteLevel: %w", err)
		}
		return &byteLevelPre{bl: bl, addPrefixSpace: v.AddPrefixSpace, useRegex: v.UseRegex}, nil
	case "Split":
		var v struct {
			Pattern  json.RawMessage `json:"pattern"`
			Behavior string          `json:"behavior"`
			Invert   bool            `json:"invert"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("pre_tokenizer Split: %w", err)
		}
		switch v.Behavior {
		case splitIsolated, splitRemoved, splitMergedWithPrevious, splitMergedWithNext, splitContiguous:
		default:
			return nil, fmt.Errorf("pre_tokenizer Split: unknown behavior %q", v.Behavior)
		}
		p, err := compilePattern(v.Pattern)
		if err != nil {
			return nil, fmt.Errorf("pre_tokenizer Split: %w", err)
		}
		return &splitPre{pat: p, behavior: v.Behavior, invert: v.Invert}, nil
	case "Metaspace":
		return parseMetaspace(raw, "pre_tokenizer")
	case "Sequence":
		var v struct {
			PreTokenizers []json.RawMessage `json:"pretokenizers"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("pre_tokenizer Sequence: %w", err)
		}
		var seq preSequence
		for i, r := range v.PreTokenizers {
			p, err := parsePreTokenizer(r, bl)
			if err != nil {
				return nil, fmt.Errorf("pre_tokenizer Sequence[%d]: %w", i, err)
			}
			if p != nil {
				seq = append(seq, p)
			}
		}
		return seq, nil
	}
	return nil, fmt.Errorf("pre_tokenizer: %w %q", errUnsupported, typ)
}

// parseMetaspace reads a Metaspace pre-tokenizer or decoder. Older files
// give add_prefix_space instead of prepend_scheme.
func parseMetaspace(raw json.RawMessage, what string) (*metaspacePre, error) {
	v := struct {
		Replacement    string `json:"replacement"`
		PrependScheme  string `json:"prepend_scheme"`
		AddPrefixSpace *bool  `json:"add_prefix_space"`
		Split          *bool  `json:"split"`
	}{Replacement: "▁"}
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("%s Metaspace: %w", what, err)
	}
	if v.Replacement == "" {
		return nil, fmt.Errorf("%s Metaspace: empty replacement", what)
	}
	scheme := v.PrependScheme
	if scheme == "" {
		scheme = "always"
		if v.AddPrefixSpace != nil && !*v.AddPrefixSpace {
			scheme = "never"
		}
	}
	switch scheme {
	case "always", "first", "never":
	default:
		return nil, fmt.Errorf("%s Metaspace: unknown prepend_scheme %q", what, scheme)
	}
	return &metaspacePre{replacement: v.Replacement, prepend: scheme, splitOnMark: v.Split == nil || *v.Split}, nil
}
