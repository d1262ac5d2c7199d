package coordinator

import (
	"strings"

	"github.com/tandemllm/tandem/model/tokenizer"
)

// chatMessage is one message of a chat, its content already flattened to
// text.
type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// chatTemplate renders a chat into a prompt (see the package doc for the
// two formats).
type chatTemplate struct {
	// llama3: the tokenizer has Llama-3's header tokens, so Llama-3's
	// format is used; otherwise the plain one.
	llama3 bool
	// bos is written first in Llama-3's format when the tokenizer has
	// <|begin_of_text|>.
	bos string
	// eot (<|eot_id|>) ends a Llama-3 turn; generation stops at it.
	eot int32
}

func chatTemplateFor(tok *tokenizer.Tokenizer) chatTemplate {
	_, start := tok.TokenID("<|start_header_id|>")
	_, end := tok.TokenID("<|end_header_id|>")
	eot, hasEOT := tok.TokenID("<|eot_id|>")
	if !start || !end || !hasEOT {
		return chatTemplate{}
	}
	t := chatTemplate{llama3: true, eot: eot}
	if _, ok := tok.TokenID("<|begin_of_text|>"); ok {
		t.bos = "<|begin_of_text|>"
	}
	return t
}

// render returns the prompt for msgs, ending where the assistant's reply
// starts.
func (t chatTemplate) render(msgs []chatMessage) string {
	var b strings.Builder
	if !t.llama3 {
		for _, m := range msgs {
			b.WriteString(m.Role + ": " + m.Content + "\n")
		}
		b.WriteString("assistant:")
		return b.String()
	}
	b.WriteString(t.bos)
	for _, m := range msgs {
		role := m.Role
		if role == "developer" { // OpenAI's newer name for system instructions
			role = "system"
		}
		b.WriteString("<|start_header_id|>" + role + "<|end_header_id|>\n\n" + m.Content + "<|eot_id|>")
	}
	b.WriteString("<|start_header_id|>assistant<|end_header_id|>\n\n")
	return b.String()
}

// addSpecialTokens says whether the rendered prompt is tokenized with the
// tokenizer's special tokens: not in Llama-3's format, which writes its
// own <|begin_of_text|>.
func (t chatTemplate) addSpecialTokens() bool { return !t.llama3 }

// stopTokens are token ids that end the assistant's turn.
func (t chatTemplate) stopTokens() []int32 {
	if t.llama3 {
		return []int32{t.eot}
	}
	return nil
}
