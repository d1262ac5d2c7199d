package coordinator

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/tandemllm/tandem/model"
	"github.com/tandemllm/tandem/model/tokenizer"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// modelInfo is what the coordinator knows of the served model: enough to
// validate, tokenize and detokenize requests. It is immutable.
type modelInfo struct {
	name         string
	tok          *tokenizer.Tokenizer
	vocab        int // rows of the embedding table: valid ids are [0, vocab)
	maxPositions int
	// maxTokenBytes bounds the bytes of text one token stands for (its
	// vocabulary string's, which byte-level BPE spells with at least one
	// byte per byte it decodes to): a text longer than maxPositions of
	// them cannot fit and is refused before it is tokenized.
	maxTokenBytes int
	chat          chatTemplate
	// byteOf inverts GPT-2's byte-level alphabet (rune → byte); see
	// tokenBytes.
	byteOf map[rune]byte
}

func loadModel(dir, name string) (*modelInfo, error) {
	cfg, err := model.LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, err
	}
	return newModelInfo(name, cfg, tok), nil
}

func newModelInfo(name string, cfg *model.Config, tok *tokenizer.Tokenizer) *modelInfo {
	longest := 1
	for id := range int32(tok.VocabSize()) {
		if t, ok := tok.Token(id); ok {
			longest = max(longest, len(t))
		}
	}
	return &modelInfo{
		name:          name,
		tok:           tok,
		vocab:         cfg.VocabSize,
		maxPositions:  cfg.MaxPositions,
		maxTokenBytes: 2 * longest, // room for a normalizer that drops characters
		chat:          chatTemplateFor(tok),
		byteOf:        byteLevelInverse(),
	}
}

// serves reports whether a group registered with the model name m serves
// this model: the same name, or a model directory of that base name (so a
// worker started with a path still matches).
func (m *modelInfo) serves(name string) bool {
	return name == m.name || filepath.Base(name) == m.name
}

// tokenText returns a token's text on its own (U+FFFD for bytes that are
// not whole UTF-8 characters) and its exact bytes. The tokenizer gives a
// token's vocabulary string and its decoded text; for byte-level BPE the
// vocabulary string maps back to the exact bytes through GPT-2's byte
// alphabet, which is used when it agrees with the decoded text, and
// byte-fallback tokens (<0xAB>) are one byte.
func (m *modelInfo) tokenText(id int32) (string, []byte) {
	text, err := m.tok.Decode([]int32{id}, false)
	if err != nil {
		return "", nil
	}
	raw, ok := m.tok.Token(id)
	if !ok || m.tok.IsSpecial(id) {
		return text, []byte(text)
	}
	if len(raw) == 6 && strings.HasPrefix(raw, "<0x") && raw[5] == '>' {
		if b, err := strconv.ParseUint(raw[3:5], 16, 8); err == nil {
			return text, []byte{byte(b)}
		}
	}
	b := make([]byte, 0, len(raw))
	for _, r := range raw {
		c, ok := m.byteOf[r]
		if !ok {
			return text, []byte(text)
		}
		b = append(b, c)
	}
	if utf8.Valid(b) && string(b) == text || !utf8.Valid(b) && strings.ContainsRune(text, utf8.RuneError) {
		return text, b
	}
	return text, []byte(text)
}

// fillLogprobs completes the text and bytes of the tokens in lp, which
// workers leave empty since they do not detokenize.
func (m *modelInfo) fillLogprobs(lp *tandemv1.TokenLogprobs) *tandemv1.TokenLogprobs {
	fill := func(l *tandemv1.Logprob) {
		if l != nil && l.Text == "" && len(l.TokenBytes) == 0 {
			l.Text, l.TokenBytes = m.tokenText(l.TokenId)
		}
	}
	fill(lp.GetChosen())
	for _, t := range lp.GetTop() {
		fill(t)
	}
	return lp
}

// byteLevelInverse maps the runes of GPT-2's byte-level alphabet
// (bytes_to_unicode) back to their bytes: printable Latin-1 bytes stand
// for themselves, the others for U+0100 onwards in byte order.
func byteLevelInverse() map[rune]byte {
	inv := make(map[rune]byte, 256)
	n := 0
	for b := range 256 {
		if b >= '!' && b <= '~' || b >= 0xA1 && b <= 0xAC || b >= 0xAE {
			inv[rune(b)] = byte(b)
		} else {
			inv[rune(256+n)] = byte(b)
			n++
		}
	}
	return inv
}

// fieldError is an invalid request field. The message starts with the
// field's name as GenerateRequest spells it, so a client knows what to
// fix; the OpenAI API renames it to its own parameter.
type fieldError struct {
	field string // such as "sampling.temperature" or "token_ids[3]"
	msg   string
}

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

func badField(field, format string, args ...any) *fieldError {
	return &fieldError{field: field, msg: fmt.Sprintf(format, args...)}
}
