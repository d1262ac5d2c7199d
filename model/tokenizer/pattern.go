package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/dlclark/regexp2/v2"
)

// patternJSON is a Hugging Face pattern: {"String": "..."} or {"Regex": "..."}.
type patternJSON struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

// pattern finds non-overlapping matches of a literal or a regular expression.
type pattern struct {
	literal string
	scan    scanFunc        // a hand-written scanner for a known regex
	re      *regexp2.Regexp // any other regex
}

func compilePattern(raw json.RawMessage) (*pattern, error) {
	var pj patternJSON
	if err := json.Unmarshal(raw, &pj); err != nil {
		return nil, fmt.Errorf("pattern: %w", err)
	}
	switch {
	case pj.String != nil:
		return &pattern{literal: *pj.String}, nil
	case pj.Regex != nil:
		if scan := scannerFor(*pj.Regex); scan != nil {
			return &pattern{scan: scan}, nil
		}
		// Compile rather than MustCompile: MustCompile would use the
		// code-generated matchers that github.com/tiktoken-go/tokenizer
		// registers for some patterns, which skip U+007F.
		re, err := regexp2.Compile(*pj.Regex, regexp2.None)
		if err != nil {
			return nil, fmt.Errorf("pattern %q: %w", *pj.Regex, err)
		}
		return &pattern{re: re}, nil
	}
	return nil, errors.New("pattern: neither String nor Regex given")
}

// findAll appends the [start, end) byte ranges of the non-empty matches in s.
func (p *pattern) findAll(dst [][2]int, s string) [][2]int {
	switch {
	case p.scan != nil:
		for i := 0; i < len(s); {
			j := p.scan(s, i)
			dst = append(dst, [2]int{i, j})
			i = j
		}
	case p.re != nil:
		// Without a match timeout regexp2 cannot fail.
		idx, _ := p.re.FindAllStringIndex(s, -1)
		for _, m := range idx {
			if m[1] > m[0] {
				dst = append(dst, [2]int{m[0], m[1]})
			}
		}
	case p.literal != "":
		for i := 0; ; {
			j := strings.Index(s[i:], p.literal)
			if j < 0 {
				break
			}
			dst = append(dst, [2]int{i + j, i + j + len(p.literal)})
			i += j + len(p.literal)
		}
	}
	return dst
}

// replaceAll replaces every match in s with content.
func (p *pattern) replaceAll(s, content string) string {
	if p.re == nil && p.scan == nil {
		if p.literal == "" {
			return s
		}
		return strings.ReplaceAll(s, p.literal, content)
	}
	ms := p.findAll(nil, s)
	if len(ms) == 0 {
		return s
	}
	var b strings.Builder
	last := 0
	for _, m := range ms {
		b.WriteString(s[last:m[0]])
		b.WriteString(content)
		last = m[1]
	}
	b.WriteString(s[last:])
	return b.String()
}
