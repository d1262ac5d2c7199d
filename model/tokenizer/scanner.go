package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// The three pre-tokenizer patterns below use look-ahead (\s+(?!\S)), which
// Go's regexp cannot express, and regexp2 is slow for them. Each gets a
// hand-written scanner that returns the same matches as regexp2 with the
// same pattern (tests check this on random text). All three match every
// character, so a scanner only has to find where the match starting at a
// given position ends.
const (
	patternGPT2   = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
	patternLlama3 = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	patternQwen2  = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// scanFunc returns the end of the match that starts at i < len(s).
type scanFunc func(s string, i int) int

// scannerFor returns the hand-written scanner for pattern, or nil.
func scannerFor(pattern string) scanFunc {
	switch pattern {
	case patternGPT2:
		return scanGPT2
	case patternLlama3:
		return func(s string, i int) int { return scanLlama(s, i, 3) }
	case patternQwen2:
		return func(s string, i int) int { return scanLlama(s, i, 1) }
	}
	return nil
}

// Character classes. Invalid UTF-8 decodes as U+FFFD (one byte at a time),
// a symbol, as regexp2 does when it converts the input to runes.
const (
	clsOther = iota
	clsLetter
	clsNumber
	clsSpace
)

// asciiClass holds the class of each ASCII byte, so the common case needs no
// Unicode table look-up.
var asciiClass = func() (t [128]uint8) {
	for c := range 128 {
		r := rune(c)
		switch {
		case unicode.IsLetter(r):
			t[c] = clsLetter
		case unicode.IsNumber(r):
			t[c] = clsNumber
		case unicode.IsSpace(r):
			t[c] = clsSpace
		}
	}
	return t
}()

// classAt returns the class of the rune at i and its width in bytes.
func classAt(s string, i int) (cls uint8, r rune, n int) {
	if c := s[i]; c < utf8.RuneSelf {
		return asciiClass[c], rune(c), 1
	}
	r, n = utf8.DecodeRuneInString(s[i:])
	switch {
	case unicode.IsLetter(r):
		return clsLetter, r, n
	case unicode.IsNumber(r):
		return clsNumber, r, n
	case unicode.IsSpace(r):
		return clsSpace, r, n
	}
	return clsOther, r, n
}

// span returns the end of the run of class cls that starts at i, and at most
// limit runes long (limit < 0 for no limit).
func span(s string, i int, cls uint8, limit int) int {
	for i < len(s) && limit != 0 {
		c, _, n := classAt(s, i)
		if c != cls {
			break
		}
		i += n
		limit--
	}
	return i
}

// spanNewlines returns the end of the run of \r and \n that starts at i.
func spanNewlines(s string, i int) int {
	for i < len(s) && (s[i] == '\r' || s[i] == '\n') {
		i++
	}
	return i
}

// contraction returns the length in bytes of the contraction suffix ('s,
// 't, 're, 've, 'm, 'll, 'd without the apostrophe) at s[i:], or 0. With fold
// it matches case-insensitively as regexp2's (?i) does, where the only
// non-ASCII equivalent of these letters is ſ (U+017F, long s) for s.
func contraction(s string, i int, fold bool) int {
	if fold && len(s) >= i+2 && s[i] == 0xC5 && s[i+1] == 0xBF {
		return 2
	}
	lower := func(j int) byte {
		if j >= len(s) {
			return 0
		}
		c := s[j]
		if fold && c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		return c
	}
	switch lower(i) {
	case 's', 't', 'm', 'd':
		return 1
	case 'r', 'v':
		if lower(i+1) == 'e' {
			return 2
		}
	case 'l':
		if lower(i+1) == 'l' {
			return 2
		}
	}
	return 0
}

// scanSpaces matches \s+(?!\S)|\s+ at i, where s[i] is whitespace: the whole
// run when it ends the text or is one rune long, else the run less its last
// rune, which is left to join the word that follows.
func scanSpaces(s string, i int) int {
	last := i
	j := i
	for j < len(s) {
		c, _, n := classAt(s, j)
		if c != clsSpace {
			break
		}
		last = j
		j += n
	}
	if j == len(s) || last == i {
		return j
	}
	return last
}

// scanGPT2 implements patternGPT2.
func scanGPT2(s string, i int) int {
	if s[i] == '\'' {
		if n := contraction(s, i+1, false); n > 0 {
			return i + 1 + n
		}
	}
	start := i
	if s[i] == ' ' && i+1 < len(s) {
		if c, _, _ := classAt(s, i+1); c != clsSpace {
			start = i + 1
		}
	}
	c, _, n := classAt(s, start)
	if c == clsSpace {
		return scanSpaces(s, i)
	}
	return span(s, start+n, c, -1)
}

// scanLlama implements patternLlama3 (maxDigits 3) and patternQwen2
// (maxDigits 1).
func scanLlama(s string, i int, maxDigits int) int {
	if s[i] == '\'' {
		if n := contraction(s, i+1, true); n > 0 {
			return i + 1 + n
		}
	}
	c, r, n := classAt(s, i)
	switch c {
	case clsLetter:
		return span(s, i+n, clsLetter, -1)
	case clsNumber:
		return span(s, i, clsNumber, maxDigits)
	}
	// [^\r\n\p{L}\p{N}]?\p{L}+
	if r != '\r' && r != '\n' && i+n < len(s) {
		if c2, _, n2 := classAt(s, i+n); c2 == clsLetter {
			return span(s, i+n+n2, clsLetter, -1)
		}
	}
	// ` ?[^\s\p{L}\p{N}]+[\r\n]*`
	if c == clsOther {
		return spanNewlines(s, span(s, i+n, clsOther, -1))
	}
	if r == ' ' && i+1 < len(s) {
		if c2, _, n2 := classAt(s, i+1); c2 == clsOther {
			return spanNewlines(s, span(s, i+1+n2, clsOther, -1))
		}
	}
	// \s*[\r\n]+ ends after the last newline of the whitespace run.
	end, lastNL := i, -1
	for end < len(s) {
		c2, r2, n2 := classAt(s, end)
		if c2 != clsSpace {
			break
		}
		if r2 == '\r' || r2 == '\n' {
			lastNL = end
		}
		end += n2
	}
	if lastNL >= 0 {
		return lastNL + 1
	}
	return scanSpaces(s, i)
}
