package coordinator

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

func parseFor(chat bool, body string) (*openAIRequest, *apiError) {
	if chat {
		return parseChatRequest([]byte(body))
	}
	return parseCompletionRequest([]byte(body))
}

func TestParseOpenAIRequest(t *testing.T) {
	tests := []struct {
		name  string
		chat  bool
		body  string
		check func(t *testing.T, r *openAIRequest)
	}{
		{"completion defaults", false, `{"model":"m","prompt":"hi"}`, func(t *testing.T, r *openAIRequest) {
			s := r.gen.Sampling
			if r.gen.Model != "m" || r.gen.GetText() != "hi" || s.Temperature != 1 || s.TopP != 1 || s.MaxTokens != 16 || s.Seed != nil || r.stream || r.fillMaxTokens || s.Logprobs {
				t.Errorf("got %v, stream %v fill %v", r.gen, r.stream, r.fillMaxTokens)
			}
		}},
		{"completion parameters", false, `{"prompt":["hi"],"max_tokens":5,"temperature":0,"top_p":0.5,"top_k":-1,"n":1,"seed":-1,
			"stop":"\n","logprobs":3,"ignore_eos":true,"stop_token_ids":[7],"stream":true,"stream_options":{"include_usage":true},"user":"x","unknown":{"a":1}}`,
			func(t *testing.T, r *openAIRequest) {
				s := r.gen.Sampling
				if r.gen.GetText() != "hi" || s.MaxTokens != 5 || s.Temperature != 0 || s.TopP != 0.5 || s.TopK != 0 || s.GetSeed() != math.MaxUint64 ||
					!slices.Equal(s.Stop, []string{"\n"}) || !s.Logprobs || s.TopLogprobs != 3 || !s.IgnoreEos || !slices.Equal(s.StopTokenIds, []int32{7}) ||
					!r.stream || !r.includeUsage {
					t.Errorf("got %v, stream %v usage %v", r.gen, r.stream, r.includeUsage)
				}
			}},
		{"token id prompt", false, `{"prompt":[1,2,3],"stop":["a","b"],"logprobs":0}`, func(t *testing.T, r *openAIRequest) {
			if !slices.Equal(r.gen.GetTokenIds().GetIds(), []int32{1, 2, 3}) || !slices.Equal(r.gen.Sampling.Stop, []string{"a", "b"}) || !r.gen.Sampling.Logprobs {
				t.Errorf("got %v", r.gen)
			}
		}},
		{"nested token id prompt", false, `{"prompt":[[4,5]],"stop":null}`, func(t *testing.T, r *openAIRequest) {
			if !slices.Equal(r.gen.GetTokenIds().GetIds(), []int32{4, 5}) || r.gen.Sampling.Stop != nil {
				t.Errorf("got %v", r.gen)
			}
		}},
		{"top_p 0 is the smallest nucleus", false, `{"prompt":"x","top_p":0}`, func(t *testing.T, r *openAIRequest) {
			if s := r.gen.GetSampling(); s.TopP <= 0 || s.TopP >= 1e-300 {
				t.Errorf("top_p 0 became %v, want the smallest positive value", s.TopP)
			}
		}},
		{"chat defaults", true, `{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant","content":null}]}`,
			func(t *testing.T, r *openAIRequest) {
				want := []chatMessage{{"system", "s"}, {"user", "ab"}, {"assistant", ""}}
				if !r.chat || !r.fillMaxTokens || r.gen.Sampling.MaxTokens != 0 || !slices.Equal(r.messages, want) {
					t.Errorf("got %+v", r)
				}
			}},
		{"chat max_completion_tokens wins", true, `{"messages":[{"role":"user","content":"x"}],"max_tokens":9,"max_completion_tokens":4,"logprobs":true,"top_logprobs":2}`,
			func(t *testing.T, r *openAIRequest) {
				s := r.gen.Sampling
				if r.fillMaxTokens || s.MaxTokens != 4 || r.maxTokensParam != "max_completion_tokens" || !s.Logprobs || s.TopLogprobs != 2 {
					t.Errorf("got %v fill %v param %s", s, r.fillMaxTokens, r.maxTokensParam)
				}
			}},
		{"chat max_tokens", true, `{"messages":[{"role":"user","content":"x"}],"max_tokens":9,"logprobs":false,"tools":[],"response_format":{"type":"text"}}`,
			func(t *testing.T, r *openAIRequest) {
				if r.fillMaxTokens || r.gen.Sampling.MaxTokens != 9 || r.gen.Sampling.Logprobs {
					t.Errorf("got %v", r.gen.Sampling)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := parseFor(tt.chat, tt.body)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, r)
		})
	}
}

func TestParseOpenAIRequestErrors(t *testing.T) {
	const msgs = `"messages":[{"role":"user","content":"x"}]`
	tests := []struct {
		name   string
		chat   bool
		body   string
		status int
		param  string
		msg    string
	}{
		{"empty body", false, ``, 400, "", "the request body is empty"},
		{"malformed", false, `{"prompt":"x",}`, 400, "", "malformed JSON at byte 15: invalid character"},
		{"truncated", false, `{"prompt":"x"`, 400, "", "malformed JSON: the body ends in the middle"},
		{"trailing data", false, `{"prompt":"x"} {}`, 400, "", "unexpected data after the request object"},
		{"not an object", true, `[1]`, 400, "", "must be a JSON object, got array"},
		{"temperature type", false, `{"prompt":"x","temperature":"hot"}`, 400, "temperature", "temperature: expected a number, got string"},
		{"max_tokens fraction", false, `{"prompt":"x","max_tokens":1.5}`, 400, "max_tokens", "max_tokens: expected an integer in range, got number 1.5"},
		{"stream type", true, `{` + msgs + `,"stream":"yes"}`, 400, "stream", "expected a boolean"},
		{"n", false, `{"prompt":"x","n":2}`, 400, "n", "n: only 1 choice per request is supported, got 2"},
		{"stream_options without stream", false, `{"prompt":"x","stream_options":{"include_usage":true}}`, 400, "stream_options", "stream_options: stream_options is only allowed when stream is true"},
		{"max_tokens zero", false, `{"prompt":"x","max_tokens":0}`, 400, "max_tokens", "must be in [1, 2147483647], got 0"},
		{"max_completion_tokens huge", true, `{` + msgs + `,"max_completion_tokens":3000000000}`, 400, "max_completion_tokens", "got 3000000000"},
		{"top_k", false, `{"prompt":"x","top_k":-2}`, 400, "top_k", "must be -1 (all)"},
		{"presence_penalty", false, `{"prompt":"x","presence_penalty":0.5}`, 400, "presence_penalty", "not supported"},
		{"frequency_penalty", true, `{` + msgs + `,"frequency_penalty":1}`, 400, "frequency_penalty", "not supported"},
		{"logit_bias", false, `{"prompt":"x","logit_bias":{"1":2}}`, 400, "logit_bias", "not supported"},
		{"stop type", false, `{"prompt":"x","stop":5}`, 400, "stop", "expected a string or an array of strings"},
		{"stop array type", false, `{"prompt":"x","stop":["a",1]}`, 400, "stop", "expected a string or an array of strings"},
		{"no prompt", false, `{"model":"m"}`, 400, "prompt", "prompt: required"},
		{"empty prompt ids", false, `{"prompt":[]}`, 400, "prompt", "must not be empty"},
		{"several prompts", false, `{"prompt":["a","b"]}`, 400, "prompt", "one prompt per request is supported, got 2"},
		{"bad prompt", false, `{"prompt":{"a":1}}`, 400, "prompt", "expected a string, an array of token ids"},
		{"bad nested ids", false, `{"prompt":[[1,"a"]]}`, 400, "prompt", "token ids must be integers"},
		{"echo", false, `{"prompt":"x","echo":true}`, 400, "echo", "not supported"},
		{"suffix", false, `{"prompt":"x","suffix":"y"}`, 400, "suffix", "not supported"},
		{"best_of", false, `{"prompt":"x","best_of":3}`, 400, "best_of", "only 1 is supported, got 3"},
		{"completion logprobs range", false, `{"prompt":"x","logprobs":21}`, 400, "logprobs", "must be in [0, 20], got 21"},
		{"completion logprobs type", false, `{"prompt":"x","logprobs":true}`, 400, "logprobs", "expected an integer in range, got bool"},
		{"no messages", true, `{"messages":[]}`, 400, "messages", "must hold at least one message"},
		{"missing messages", true, `{"model":"m"}`, 400, "messages", "must hold at least one message"},
		{"bad role", true, `{"messages":[{"role":"user","content":"x"},{"role":"robot","content":"x"}]}`, 400, "messages", `messages[1].role: unknown role "robot"`},
		{"image part", true, `{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`, 400, "messages", `messages[0].content: part 0: only text parts`},
		{"content type", true, `{"messages":[{"role":"user","content":5}]}`, 400, "messages", "messages[0].content: expected a string or an array of content parts"},
		{"top_logprobs without logprobs", true, `{` + msgs + `,"top_logprobs":2}`, 400, "top_logprobs", "needs logprobs: true"},
		{"top_logprobs range", true, `{` + msgs + `,"logprobs":true,"top_logprobs":99}`, 400, "top_logprobs", "must be in [0, 20]"},
		{"chat logprobs type", true, `{` + msgs + `,"logprobs":3}`, 400, "logprobs", "expected a boolean, got number"},
		{"tools", true, `{` + msgs + `,"tools":[{"type":"function"}]}`, 400, "tools", "not supported"},
		{"response_format", true, `{` + msgs + `,"response_format":{"type":"json_object"}}`, 400, "response_format", `got "json_object"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseFor(tt.chat, tt.body)
			if err == nil {
				t.Fatal("accepted")
			}
			if err.status != tt.status || err.param != tt.param || err.typ != "invalid_request_error" || !strings.Contains(err.message, tt.msg) {
				t.Errorf("got %d %q param %q: %q; want %d param %q: %q", err.status, err.typ, err.param, err.message, tt.status, tt.param, tt.msg)
			}
		})
	}
}

// decodeError reads an OpenAI error body.
func decodeError(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var v struct {
		Error map[string]any `json:"error"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.Error == nil {
		t.Fatalf("error body %s: %v", body, err)
	}
	return v.Error
}

func TestErrorJSON(t *testing.T) {
	w := httptest.NewRecorder()
	writeError(w, invalid("temperature", "must be >= 0, got -1"))
	if w.Code != 400 || w.Header().Get("Content-Type") != "application/json" {
		t.Errorf("status %d, content type %q", w.Code, w.Header().Get("Content-Type"))
	}
	want := map[string]any{"message": "temperature: must be >= 0, got -1", "type": "invalid_request_error", "param": "temperature", "code": nil}
	got := decodeError(t, w.Body.Bytes())
	if len(got) != len(want) {
		t.Errorf("error %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("error.%s = %v, want %v", k, got[k], v)
		}
	}
	w = httptest.NewRecorder()
	writeError(w, &apiError{status: 503, typ: "server_error", message: "down"})
	if got := decodeError(t, w.Body.Bytes()); w.Code != 503 || got["param"] != nil || got["message"] != "down" {
		t.Errorf("%d %v", w.Code, got)
	}
}

func TestAPIErrorFromGenerate(t *testing.T) {
	completion := &openAIRequest{maxTokensParam: "max_tokens"}
	chat := &openAIRequest{chat: true, maxTokensParam: "max_completion_tokens"}
	tests := []struct {
		name   string
		req    *openAIRequest
		err    error
		status int
		typ    string
		param  string
		msg    string
	}{
		{"sampling field", completion, badField("sampling.temperature", "must be >= 0, got -1"), 400, "invalid_request_error", "temperature", "temperature: must be >= 0, got -1"},
		{"indexed field", completion, badField("sampling.stop[1]", "must not be empty"), 400, "invalid_request_error", "stop", "stop[1]: must not be empty"},
		{"prompt token", completion, badField("token_ids.ids[3]", "token id 9 is not in the vocabulary"), 400, "invalid_request_error", "prompt", "prompt[3]: token id 9"},
		{"prompt length in chat", chat, badField("prompt", "3000 tokens plus max_tokens 10 exceed"), 400, "invalid_request_error", "messages", "messages: 3000 tokens"},
		{"text in chat", chat, badField("text", "the prompt tokenizes to no tokens"), 400, "invalid_request_error", "messages", "messages: the prompt"},
		{"max tokens in chat", chat, badField("sampling.max_tokens", "must be >= 1"), 400, "invalid_request_error", "max_completion_tokens", "max_completion_tokens: must"},
		{"top logprobs in completions", completion, badField("sampling.top_logprobs", "x"), 400, "invalid_request_error", "logprobs", "logprobs: x"},
		{"top logprobs in chat", chat, badField("sampling.top_logprobs", "x"), 400, "invalid_request_error", "top_logprobs", "top_logprobs: x"},
		{"model", chat, badField("model", `unknown model "x"`), 400, "invalid_request_error", "model", `model: unknown model "x"`},
		{"full", completion, status.Error(codes.ResourceExhausted, "full"), 429, "rate_limit_error", "", "full"},
		{"unavailable", completion, status.Error(codes.Unavailable, `group "d" is unavailable`), 503, "server_error", "", `group "d"`},
		{"id in use", completion, status.Error(codes.AlreadyExists, `request_id: a request with id "x" is in flight`), 409, "invalid_request_error", "X-Request-Id", `X-Request-Id: a request with id "x" is in flight`},
		{"bad id", completion, badField("request_id", "must be at most 256 bytes, got 300"), 400, "invalid_request_error", "X-Request-Id", "X-Request-Id: must be at most 256 bytes"},
		{"worker rejects", completion, status.Error(codes.InvalidArgument, "bad"), 400, "invalid_request_error", "", "bad"},
		{"deadline", completion, status.Error(codes.DeadlineExceeded, "late"), 504, "server_error", "", "late"},
		{"internal", completion, errors.New("boom"), 500, "server_error", "", "boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.req.apiError(tt.err)
			if e.status != tt.status || e.typ != tt.typ || e.param != tt.param || !strings.HasPrefix(e.message, tt.msg) {
				t.Errorf("got %d %s param %q %q; want %d %s param %q %q", e.status, e.typ, e.param, e.message, tt.status, tt.typ, tt.param, tt.msg)
			}
		})
	}
}

func TestSSE(t *testing.T) {
	var b bytes.Buffer
	if err := writeSSE(&b, map[string]string{"a": "x\ny"}); err != nil {
		t.Fatal(err)
	}
	if got, want := b.String(), "data: {\"a\":\"x\\ny\"}\n\n"; got != want {
		t.Errorf("event %q, want %q", got, want)
	}
	w := httptest.NewRecorder()
	s := &sseWriter{w: w, rc: http.NewResponseController(w), timeout: time.Minute}
	s.start()
	if err := s.event(1); err != nil {
		t.Fatal(err)
	}
	s.done()
	if w.Code != 200 || w.Header().Get("Content-Type") != "text/event-stream" || !w.Flushed {
		t.Errorf("status %d, headers %v, flushed %v", w.Code, w.Header(), w.Flushed)
	}
	if got, want := w.Body.String(), "data: 1\n\ndata: [DONE]\n\n"; got != want {
		t.Errorf("stream %q, want %q", got, want)
	}
}

// jsonOf marshals v and decodes it generically, as a client would.
func jsonOf(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestResponses(t *testing.T) {
	lps := []*tandemv1.TokenLogprobs{
		{Chosen: &tandemv1.Logprob{TokenId: 1, Text: "Hi", TokenBytes: []byte("Hi"), Logprob: -0.5},
			Top: []*tandemv1.Logprob{{TokenId: 1, Text: "Hi", Logprob: -0.5}, {TokenId: 2, Text: "Ho", Logprob: -1}, {TokenId: 3, Text: "Hi", Logprob: -3}}},
		{Chosen: &tandemv1.Logprob{TokenId: 4, Text: "\uFFFD", TokenBytes: []byte{0xE2}, Logprob: float32(math.Inf(-1))}},
	}
	last := &tandemv1.GenerateResponse{RequestId: "r1", FinishReason: tandemv1.FinishReason_FINISH_REASON_LENGTH, Usage: &tandemv1.Usage{PromptTokens: 3, CompletionTokens: 2}}
	newResponder := func(chat, logprobs, usage bool) *responder {
		req := &openAIRequest{chat: chat, includeUsage: usage, gen: &tandemv1.GenerateRequest{Sampling: &tandemv1.SamplingParams{Logprobs: logprobs}}}
		rs := &responder{req: req, model: "tiny", created: 42, header: http.Header{}}
		rs.noteID(&tandemv1.GenerateResponse{RequestId: "r1"})
		rs.noteID(&tandemv1.GenerateResponse{RequestId: "ignored"})
		if got := rs.header.Get("X-Request-Id"); got != "r1" {
			t.Errorf("X-Request-Id %q, want the first id noted", got)
		}
		return rs
	}

	t.Run("completion", func(t *testing.T) {
		got := jsonOf(t, newResponder(false, true, false).full("Hi!", lps, last))
		want := `{"choices":[{"finish_reason":"length","index":0,"logprobs":{"text_offset":[0,2],"token_logprobs":[-0.5,-9999],` +
			`"tokens":["Hi","` + "\uFFFD" + `"],"top_logprobs":[{"Hi":-0.5,"Ho":-1},{}]},"text":"Hi!"}],"created":42,"id":"cmpl-r1","model":"tiny",` +
			`"object":"text_completion","usage":{"completion_tokens":2,"prompt_tokens":3,"total_tokens":5}}`
		if b, _ := json.Marshal(got); string(b) != want {
			t.Errorf("got  %s\nwant %s", b, want)
		}
	})
	t.Run("completion top_logprobs keep order", func(t *testing.T) {
		b, err := json.Marshal(orderedLogprobs(lps[0].Top))
		if err != nil || string(b) != `{"Hi":-0.5,"Ho":-1}` {
			t.Errorf("%s %v", b, err)
		}
	})
	t.Run("chat", func(t *testing.T) {
		got := jsonOf(t, newResponder(true, true, false).full("Hi!", lps[:1], last))
		want := `{"choices":[{"finish_reason":"length","index":0,"logprobs":{"content":[{"bytes":[72,105],"logprob":-0.5,"token":"Hi","top_logprobs":` +
			`[{"bytes":[],"logprob":-0.5,"token":"Hi"},{"bytes":[],"logprob":-1,"token":"Ho"},{"bytes":[],"logprob":-3,"token":"Hi"}]}]},` +
			`"message":{"content":"Hi!","role":"assistant"}}],"created":42,"id":"chatcmpl-r1","model":"tiny","object":"chat.completion",` +
			`"usage":{"completion_tokens":2,"prompt_tokens":3,"total_tokens":5}}`
		if b, _ := json.Marshal(got); string(b) != want {
			t.Errorf("got  %s\nwant %s", b, want)
		}
	})
	t.Run("chat stream", func(t *testing.T) {
		rs := newResponder(true, false, true)
		var got []string
		for _, v := range []any{rs.roleChunk(), rs.chunk("Hi", nil, nil), rs.chunk("", nil, last), rs.usageChunk(last.Usage)} {
			b, _ := json.Marshal(jsonOf(t, v))
			got = append(got, string(b))
		}
		head := `"created":42,"id":"chatcmpl-r1","model":"tiny","object":"chat.completion.chunk"`
		want := []string{
			`{"choices":[{"delta":{"content":"","role":"assistant"},"finish_reason":null,"index":0,"logprobs":null}],` + head + `,"usage":null}`,
			`{"choices":[{"delta":{"content":"Hi"},"finish_reason":null,"index":0,"logprobs":null}],` + head + `,"usage":null}`,
			`{"choices":[{"delta":{},"finish_reason":"length","index":0,"logprobs":null}],` + head + `,"usage":null}`,
			`{"choices":[],` + head + `,"usage":{"completion_tokens":2,"prompt_tokens":3,"total_tokens":5}}`,
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("chunk %d:\ngot  %s\nwant %s", i, got[i], want[i])
			}
		}
	})
	t.Run("completion stream without usage", func(t *testing.T) {
		b, _ := json.Marshal(jsonOf(t, newResponder(false, false, false).chunk("", nil, nil)))
		want := `{"choices":[{"finish_reason":null,"index":0,"logprobs":null,"text":""}],"created":42,"id":"cmpl-r1","model":"tiny","object":"text_completion"}`
		if string(b) != want {
			t.Errorf("got  %s\nwant %s", b, want)
		}
	})
	t.Run("finish reasons", func(t *testing.T) {
		for r, want := range map[tandemv1.FinishReason]string{
			tandemv1.FinishReason_FINISH_REASON_STOP: "stop", tandemv1.FinishReason_FINISH_REASON_LENGTH: "length",
			tandemv1.FinishReason_FINISH_REASON_ABORT: "stop", tandemv1.FinishReason_FINISH_REASON_TIMEOUT: "length",
		} {
			if got := finishReason(r); got == nil || *got != want {
				t.Errorf("%v: %v, want %s", r, got, want)
			}
		}
		if finishReason(tandemv1.FinishReason_FINISH_REASON_UNSPECIFIED) != nil {
			t.Error("unspecified is not null")
		}
	})
}

// TestTextOffsetSplitCharacter: a character split across tokens counts
// once in the completions text offsets, where its last byte comes.
func TestTextOffsetSplitCharacter(t *testing.T) {
	rs := &responder{}
	var offsets []int
	for _, b := range []string{"caf", "\xc3", "\xa9 ", "\xe2\x98", "\x83 done"} {
		offsets = append(offsets, rs.textOffset)
		rs.advance(&tandemv1.Logprob{TokenBytes: []byte(b), Text: "\ufffd"})
	}
	offsets = append(offsets, rs.textOffset)
	// "café ☃ done": c a f é ␠ ☃ ␠ d o n e
	if want := []int{0, 3, 3, 5, 5, 11}; !slices.Equal(offsets, want) {
		t.Fatalf("offsets %v, want %v", offsets, want)
	}
}
