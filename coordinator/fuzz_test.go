package coordinator

import (
	"net/http"
	"testing"

	"google.golang.org/protobuf/proto"
)

// FuzzOpenAIRequest feeds arbitrary bodies to both endpoints' parsers:
// they never panic, every refusal is a 400 with a message, and every
// accepted request is a well-formed GenerateRequest.
func FuzzOpenAIRequest(f *testing.F) {
	for _, seed := range []string{
		`{"model":"m","prompt":"hi","max_tokens":5,"stream":true,"stream_options":{"include_usage":true}}`,
		`{"prompt":[[1,2]],"stop":["a"],"logprobs":2,"top_k":-1,"seed":-5}`,
		`{"prompt":["x","y"]}`,
		`{"messages":[{"role":"user","content":[{"type":"text","text":"a"}]}],"logprobs":true,"top_logprobs":3}`,
		`{"messages":[{"role":"user","content":"x"}],"max_completion_tokens":0}`,
		`{"temperature":"x"}`, `[]`, `null`, `{`, `{"n":2}`, "",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, chat := range []bool{false, true} {
			var r *openAIRequest
			var err *apiError
			if chat {
				r, err = parseChatRequest(body)
			} else {
				r, err = parseCompletionRequest(body)
			}
			if err != nil {
				if err.status != http.StatusBadRequest || err.message == "" || err.typ != "invalid_request_error" {
					t.Fatalf("chat %v: bad refusal %+v", chat, err)
				}
				continue
			}
			if r.chat != chat || r.gen.GetSampling() == nil {
				t.Fatalf("chat %v: accepted %+v", chat, r)
			}
			if chat && len(r.messages) == 0 || !chat && r.gen.GetPrompt() == nil {
				t.Fatalf("chat %v: accepted without a prompt: %+v", chat, r)
			}
			if _, err := proto.Marshal(r.gen); err != nil {
				t.Fatalf("chat %v: request does not marshal: %v", chat, err)
			}
		}
	})
}
