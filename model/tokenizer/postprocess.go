package tokenizer

import (
	"encoding/json"
	"fmt"
)

// postProcessor adds special tokens around an encoded sequence when the
// caller asks for them.
type postProcessor interface {
	process(ids []int32) []int32
}

// template is a TemplateProcessing single-sequence template: ids to put
// before and after the sequence.
type template struct{ before, after []int32 }

func (t template) process(ids []int32) []int32 {
	if len(t.before) == 0 && len(t.after) == 0 {
		return ids
	}
	out := make([]int32, 0, len(t.before)+len(ids)+len(t.after))
	out = append(out, t.before...)
	out = append(out, ids...)
	return append(out, t.after...)
}

type postSequence []postProcessor

func (seq postSequence) process(ids []int32) []int32 {
	for _, p := range seq {
		ids = p.process(ids)
	}
	return ids
}

// parsePostProcessor builds the post-processor described by raw; nil for
// null and for ByteLevel, which only adjusts offsets.
func parsePostProcessor(raw json.RawMessage, valid func(int32) bool) (postProcessor, error) {
	typ, err := componentType(raw)
	if err != nil || typ == "" {
		return nil, err
	}
	switch typ {
	case "ByteLevel":
		return nil, nil
	case "TemplateProcessing":
		return parseTemplate(raw, valid)
	case "BertProcessing", "RobertaProcessing":
		// Both wrap a single sequence as CLS A SEP; the pair is [token, id].
		var v struct {
			Sep [2]json.RawMessage `json:"sep"`
			Cls [2]json.RawMessage `json:"cls"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("post_processor %s: %w", typ, err)
		}
		var cls, sep int32
		if err := json.Unmarshal(v.Cls[1], &cls); err != nil {
			return nil, fmt.Errorf("post_processor %s: cls: %w", typ, err)
		}
		if err := json.Unmarshal(v.Sep[1], &sep); err != nil {
			return nil, fmt.Errorf("post_processor %s: sep: %w", typ, err)
		}
		if !valid(cls) || !valid(sep) {
			return nil, fmt.Errorf("post_processor %s: cls %d or sep %d is not a token id", typ, cls, sep)
		}
		return template{before: []int32{cls}, after: []int32{sep}}, nil
	case "Sequence":
		var v struct {
			Processors []json.RawMessage `json:"processors"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("post_processor Sequence: %w", err)
		}
		var seq postSequence
		for i, r := range v.Processors {
			p, err := parsePostProcessor(r, valid)
			if err != nil {
				return nil, fmt.Errorf("post_processor Sequence[%d]: %w", i, err)
			}
			if p != nil {
				seq = append(seq, p)
			}
		}
		return seq, nil
	}
	return nil, fmt.Errorf("post_processor: %w %q", errUnsupported, typ)
}

// parseTemplate reads the single-sequence template of TemplateProcessing:
// a list of {"SpecialToken": {"id": name}} and {"Sequence": {"id": "A"}}
// items, with the ids of each named special token in special_tokens.
func parseTemplate(raw json.RawMessage, valid func(int32) bool) (postProcessor, error) {
	var v struct {
		Single []struct {
			SpecialToken *struct {
				ID string `json:"id"`
			} `json:"SpecialToken"`
			Sequence *struct {
				ID string `json:"id"`
			} `json:"Sequence"`
		} `json:"single"`
		SpecialTokens map[string]struct {
			IDs []int32 `json:"ids"`
		} `json:"special_tokens"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("post_processor TemplateProcessing: %w", err)
	}
	var t template
	seen := false
	for i, item := range v.Single {
		switch {
		case item.Sequence != nil:
			if seen {
				return nil, fmt.Errorf("post_processor TemplateProcessing: single[%d]: more than one sequence", i)
			}
			seen = true
		case item.SpecialToken != nil:
			st, ok := v.SpecialTokens[item.SpecialToken.ID]
			if !ok {
				return nil, fmt.Errorf("post_processor TemplateProcessing: single[%d]: special token %q not in special_tokens", i, item.SpecialToken.ID)
			}
			for _, id := range st.IDs {
				if !valid(id) {
					return nil, fmt.Errorf("post_processor TemplateProcessing: special token %q: id %d is not a token id", item.SpecialToken.ID, id)
				}
			}
			if seen {
				t.after = append(t.after, st.IDs...)
			} else {
				t.before = append(t.before, st.IDs...)
			}
		default:
			return nil, fmt.Errorf("post_processor TemplateProcessing: single[%d]: neither SpecialToken nor Sequence", i)
		}
	}
	if !seen {
		return nil, fmt.Errorf("post_processor TemplateProcessing: single template has no sequence")
	}
	return t, nil
}
