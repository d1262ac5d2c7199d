package tokenizer

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// decoder turns token strings back into text pieces. Pieces are Go strings
// that may hold any bytes: the final UTF-8 clean-up happens once, at the
// end (see lossyUTF8), so that a stream decoder can hold back an incomplete
// character instead.
type decoder interface {
	decodeChain(tokens []string) []string
}

type (
	byteLevelDec struct{ bl *byteLevel }
	replaceDec   struct {
		pat     *pattern
		content string
	}
	byteFallbackDec struct{}
	fuseDec         struct{}
	stripDec        struct {
		content     string
		start, stop int
	}
	metaspaceDec struct{ m *metaspacePre }
	decoderSeq   []decoder
)

func (d byteLevelDec) decodeChain(tokens []string) []string {
	var out []byte
	for _, t := range tokens {
		out = d.bl.decode(out, t)
	}
	return []string{string(out)}
}

func (d replaceDec) decodeChain(tokens []string) []string {
	for i, t := range tokens {
		tokens[i] = d.pat.replaceAll(t, d.content)
	}
	return tokens
}

// byteFallbackToken returns the byte a <0xXX> token stands for.
func byteFallbackToken(t string) (byte, bool) {
	if len(t) != 6 || !strings.HasPrefix(t, "<0x") || t[5] != '>' {
		return 0, false
	}
	v, err := strconv.ParseUint(t[3:5], 16, 8)
	return byte(v), err == nil
}

// decodeChain joins runs of <0xXX> tokens into their bytes; a run that is not
// valid UTF-8 becomes one U+FFFD per byte, as Hugging Face does.
func (byteFallbackDec) decodeChain(tokens []string) []string {
	out := make([]string, 0, len(tokens))
	var run []byte
	flush := func() {
		if len(run) == 0 {
			return
		}
		if utf8.Valid(run) {
			out = append(out, string(run))
		} else {
			out = append(out, strings.Repeat("\uFFFD", len(run)))
		}
		run = run[:0]
	}
	for _, t := range tokens {
		if b, ok := byteFallbackToken(t); ok {
			run = append(run, b)
			continue
		}
		flush()
		out = append(out, t)
	}
	flush()
	return out
}

func (fuseDec) decodeChain(tokens []string) []string {
	return []string{strings.Join(tokens, "")}
}

func (d stripDec) decodeChain(tokens []string) []string {
	for i, t := range tokens {
		for n := 0; n < d.start && strings.HasPrefix(t, d.content); n++ {
			t = t[len(d.content):]
		}
		for n := 0; n < d.stop && strings.HasSuffix(t, d.content); n++ {
			t = t[:len(t)-len(d.content)]
		}
		tokens[i] = t
	}
	return tokens
}

// decodeChain turns markers back into spaces and drops the space that the
// pre-tokenizer prepended to the first token.
func (d metaspaceDec) decodeChain(tokens []string) []string {
	for i, t := range tokens {
		t = strings.ReplaceAll(t, d.m.replacement, " ")
		if i == 0 && d.m.prepend != "never" {
			t = strings.TrimPrefix(t, " ")
		}
		tokens[i] = t
	}
	return tokens
}

func (seq decoderSeq) decodeChain(tokens []string) []string {
	for _, d := range seq {
		tokens = d.decodeChain(tokens)
	}
	return tokens
}

// parseDecoder builds the decoder described by raw; nil for null.
func parseDecoder(raw json.RawMessage, bl *byteLevel) (decoder, error) {
	typ, err := componentType(raw)
	if err != nil || typ == "" {
		return nil, err
	}
	switch typ {
	case "ByteLevel":
		return byteLevelDec{bl}, nil
	case "ByteFallback":
		return byteFallbackDec{}, nil
	case "Fuse":
		return fuseDec{}, nil
	case "Replace":
		var v struct {
			Pattern json.RawMessage `json:"pattern"`
			Content string          `json:"content"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("decoder Replace: %w", err)
		}
		p, err := compilePattern(v.Pattern)
		if err != nil {
			return nil, fmt.Errorf("decoder Replace: %w", err)
		}
		return replaceDec{p, v.Content}, nil
	case "Strip":
		var v struct {
			Content string `json:"content"`
			Start   int    `json:"start"`
			Stop    int    `json:"stop"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("decoder Strip: %w", err)
		}
		if v.Content == "" {
			return nil, fmt.Errorf("decoder Strip: empty content")
		}
		return stripDec{v.Content, v.Start, v.Stop}, nil
	case "Metaspace":
		m, err := parseMetaspace(raw, "decoder")
		if err != nil {
			return nil, err
		}
		return metaspaceDec{m}, nil
	case "Sequence":
		var v struct {
			Decoders []json.RawMessage `json:"decoders"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("decoder Sequence: %w", err)
		}
		var seq decoderSeq
		for i, r := range v.Decoders {
			d, err := parseDecoder(r, bl)
			if err != nil {
				return nil, fmt.Errorf("decoder Sequence[%d]: %w", i, err)
			}
			if d != nil {
				seq = append(seq, d)
			}
		}
		return seq, nil
	}
	return nil, fmt.Errorf("decoder: %w %q", errUnsupported, typ)
}

// hasByteFallback reports whether d is or contains a ByteFallback decoder.
func hasByteFallback(d decoder) bool {
	switch d := d.(type) {
	case byteFallbackDec:
		return true
	case decoderSeq:
		for _, sub := range d {
			if hasByteFallback(sub) {
				return true
			}
		}
	}
	return false
}
