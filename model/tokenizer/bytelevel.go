package tokenizer

import "unicode/utf8"

// byteLevel is GPT-2's reversible map between bytes and printable runes: the
// printable Latin-1 bytes map to themselves and the other 68 bytes map, in
// order, to U+0100 onwards, so that every byte string has a whitespace-free
// Unicode spelling that BPE vocabularies can store as JSON text.
type byteLevel struct {
	enc [256]string   // byte -> its rune, UTF-8 encoded
	dec map[rune]byte // rune -> byte
}

func newByteLevel() *byteLevel {
	b := &byteLevel{dec: make(map[rune]byte, 256)}
	next := rune(256)
	for i := range 256 {
		r := rune(i)
		if !(r >= '!' && r <= '~' || r >= 0xA1 && r <= 0xAC || r >= 0xAE && r <= 0xFF) {
			r = next
			next++
		}
		b.enc[i] = string(r)
		b.dec[r] = byte(i)
	}
	return b
}

// encode appends the byte-level spelling of s to dst.
func (b *byteLevel) encode(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		dst = append(dst, b.enc[s[i]]...)
	}
	return dst
}

// decode appends the bytes spelled by token to dst. As Hugging Face does, a
// token with any rune outside the map (an added token such as " ") is copied
// as its UTF-8 bytes instead.
func (b *byteLevel) decode(dst []byte, token string) []byte {
	start := len(dst)
	for _, r := range token {
		c, ok := b.dec[r]
		if !ok {
			return append(dst[:start], token...)
		}
		dst = append(dst, c)
	}
	return dst
}

// lossyUTF8 replaces each maximal invalid subsequence of s with one U+FFFD,
// the Unicode "substitution of maximal subparts" practice that Rust's
// from_utf8_lossy (and so Hugging Face) follows.
func lossyUTF8(s []byte) string {
	if utf8.Valid(s) {
		return string(s)
	}
	out := make([]byte, 0, len(s)+8)
	for len(s) > 0 {
		r, n := utf8.DecodeRune(s)
		if r == utf8.RuneError && n == 1 {
			out = append(out, "\uFFFD"...)
			n = maximalSubpart(s)
		} else {
			out = append(out, s[:n]...)
		}
		s = s[n:]
	}
	return string(out)
}

// maximalSubpart returns the length of the longest prefix of s, which starts
// with an invalid sequence, that is a prefix of some valid UTF-8 sequence (at
// least 1).
func maximalSubpart(s []byte) int {
	need, lo, hi := utf8Lead(s[0])
	if need == 0 {
		return 1
	}
	i := 1
	for ; i <= need && i < len(s); i++ {
		c := s[i]
		if i == 1 && (c < lo || c > hi) || i > 1 && (c < 0x80 || c > 0xBF) {
			break
		}
	}
	return i
}

// utf8Lead returns how many continuation bytes the lead byte c needs and the
// allowed range of the first of them; need is 0 for a byte that cannot start
// a multi-byte sequence.
func utf8Lead(c byte) (need int, lo, hi byte) {
	lo, hi = 0x80, 0xBF
	switch {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0
	case c == 0xED:
		need, hi = 2, 0x9F
	case c >= 0xE1 && c <= 0xEF:
		need = 2
	case c == 0xF0:
		need, lo = 3, 0x90
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	case c == 0xF4:
		need, hi = 3, 0x8F
	}
	return need, lo, hi
}

// incompleteTail returns the length of a trailing sequence of s that is a
// proper prefix of a valid UTF-8 character, so more bytes could complete it;
// 0 when s ends cleanly.
func incompleteTail(s []byte) int {
	for back := 1; back <= 3 && back <= len(s); back++ {
		i := len(s) - back
		c := s[i]
		if c >= 0x80 && c <= 0xBF {
			continue // continuation byte: keep looking for its lead
		}
		need, _, _ := utf8Lead(c)
		if need < back || maximalSubpart(s[i:]) != back {
			return 0
		}
		return back
	}
	return 0
}
