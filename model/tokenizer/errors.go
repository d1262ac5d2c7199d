package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode"
)

var (
	// ErrInvalid is wrapped by every error about a malformed or unsupported
	// tokenizer.json; the message names the file and the problem.
	ErrInvalid = errors.New("invalid tokenizer")
	// ErrUnknownID is wrapped by errors about token ids the vocabulary does
	// not define.
	ErrUnknownID = errors.New("unknown token id")

	// errUnsupported marks component types this package does not implement.
	errUnsupported = errors.New("unsupported type")
)

// componentType returns the "type" field of a component object, or "" when
// the component is absent or null.
func componentType(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", nil
	}
	var v struct {
		Type *string `json:"type"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", fmt.Errorf("component is not an object: %w", err)
	}
	if v.Type == nil || *v.Type == "" {
		return "", errors.New("component has no type")
	}
	return *v.Type, nil
}

func isSpace(r rune) bool { return unicode.IsSpace(r) }
