package coordinator

import (
	"slices"
	"testing"
)

func TestChatTemplate(t *testing.T) {
	msgs := []chatMessage{{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "2+2?"}}
	tests := []struct {
		name string
		t    chatTemplate
		want string
	}{
		{"plain", chatTemplate{}, "system: Be brief.\nuser: Hi\nassistant: Hello.\nuser: 2+2?\nassistant:"},
		{"llama3", chatTemplate{llama3: true, bos: "<|begin_of_text|>"},
			"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\n"},
		{"llama3 without BOS token", chatTemplate{llama3: true},
			"<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
	}
	t.Run("developer is system", func(t *testing.T) {
		got := chatTemplate{llama3: true}.render([]chatMessage{{"developer", "Be brief."}})
		if want := "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"; got != want {
			t.Errorf("render =\n%q\nwant\n%q", got, want)
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := msgs
			if tt.name == "llama3 without BOS token" {
				in = msgs[1:2]
			}
			if got := tt.t.render(in); got != tt.want {
				t.Errorf("render =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestChatTemplateFor(t *testing.T) {
	if tmpl := tinyModel(t).chat; tmpl.llama3 || !tmpl.addSpecialTokens() || tmpl.stopTokens() != nil {
		t.Errorf("GPT-2 tokenizer: %+v, want the plain template", tmpl)
	}
	tok := llama3Tokenizer(t)
	tmpl := chatTemplateFor(tok)
	if !tmpl.llama3 || tmpl.bos != "<|begin_of_text|>" || tmpl.addSpecialTokens() || !slices.Equal(tmpl.stopTokens(), []int32{50260}) {
		t.Fatalf("Llama-3 tokens: %+v", tmpl)
	}
	// The rendered prompt's markers tokenize as the special tokens.
	prompt := tmpl.render([]chatMessage{{"user", "Hi"}})
	got := tok.Encode(prompt, tmpl.addSpecialTokens())
	count := func(id int32) (n int) {
		for _, g := range got {
			if g == id {
				n++
			}
		}
		return n
	}
	if got[0] != 50257 || count(50257) != 1 || count(50258) != 2 || count(50259) != 2 || count(50260) != 1 {
		t.Errorf("tokens %v: want <|begin_of_text|> once and first, two headers, one <|eot_id|>", got)
	}
	if back, err := tok.Decode(got, false); err != nil || back != prompt {
		t.Errorf("decoded %q (%v), want %q", back, err, prompt)
	}
}
