package openai

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tandemllm/tandem/bench"
)

// streamServer answers every completion request with body as an event
// stream, and /v1/models with one model.
func streamServer(t *testing.T, body string) *Target {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/models" {
			fmt.Fprint(w, `{"data":[{"id":"m"}]}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, body)
	}))
	t.Cleanup(ts.Close)
	tg, err := New(Options{BaseURL: ts.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.Close() })
	if _, err := tg.Model(t.Context()); err != nil {
		t.Fatal(err)
	}
	return tg
}

func tok(s string) string {
	return `data: {"id":"c","choices":[{"index":0,"text":"` + s + `"}]}` + "\n\n"
}

const done = "data: [DONE]\n\n"

// TestStreams: what each stream a server may send counts as. Mid-stream
// errors, in every form servers send them, fail the request with their
// code, whatever came before; so does a stream cut off before its end.
func TestStreams(t *testing.T) {
	usage := `data: {"id":"c","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}` + "\n\n"
	tests := []struct {
		name, body string
		ok         bool
		code, err  string // the failure's code, and part of its message
		text       string
		tokens     int
	}{
		{name: "plain", body: tok("a") + tok("b") + tok("c") + usage + done, ok: true, text: "abc", tokens: 3},
		{name: "CRLF and comments", body: strings.ReplaceAll(": ping\n\n"+tok("a")+tok("b")+done, "\n", "\r\n"), ok: true, text: "ab", tokens: 2},
		{name: "lone CR", body: strings.ReplaceAll(tok("a")+tok("b")+done, "\n", "\r"), ok: true, text: "ab", tokens: 2},
		{name: "data split over lines", body: "data: {\"id\":\"c\",\ndata: \"choices\":[{\"text\":\"x\"}]}\n\n" + done, ok: true, text: "x", tokens: 1},
		{name: "finish reason without DONE", body: tok("a") + `data: {"choices":[{"text":"b","finish_reason":"length"}]}` + "\n\n", ok: true, text: "ab", tokens: 2},
		{name: "error object mid-stream (Tandem, new vLLM)", body: tok("a") + tok("b") + `data: {"error":{"message":"worker lost","type":"server_error","code":null}}` + "\n\n" + done,
			code: "STREAM_ERROR server_error", err: "worker lost"},
		{name: "error object with a numeric code", body: tok("a") + `data: {"error":{"message":"boom","type":"x","code":500}}` + "\n\n" + done,
			code: "STREAM_ERROR 500", err: "boom"},
		{name: "top-level error object (old vLLM)", body: tok("a") + `data: {"object":"error","message":"too long","type":"BadRequestError","code":400}` + "\n\n",
			code: "STREAM_ERROR 400", err: "too long"},
		{name: "error event", body: tok("a") + "event: error\ndata: the engine died\n\n" + done, code: "STREAM_ERROR", err: "the engine died"},
		{name: "finish reason error", body: tok("a") + `data: {"choices":[{"text":"","finish_reason":"error"}]}` + "\n\n" + done, code: "STREAM_ERROR finish_reason"},
		{name: "cut off", body: tok("a") + tok("b"), code: "INCOMPLETE", err: "after 2 chunks"},
		{name: "no output", body: usage + done, code: "NO_OUTPUT"},
		{name: "not JSON", body: "data: {nope\n\n", code: "BAD_STREAM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := streamServer(t, tt.body).Send(t.Context(), bench.Request{ID: "r", Prompt: "p", PromptLen: 1, MaxTokens: 3})
			if out.Success != tt.ok || out.Code != tt.code || !strings.Contains(out.Error, tt.err) {
				t.Fatalf("success %v, code %q, error %q; want %v, %q, an error holding %q", out.Success, out.Code, out.Error, tt.ok, tt.code, tt.err)
			}
			if tt.ok && (out.Text != tt.text || out.OutputTokens != tt.tokens || len(out.ITL) != strings.Count(tt.body, "choices\":[{")-1) {
				t.Fatalf("text %q, %d tokens, %d ITLs; want %q, %d", out.Text, out.OutputTokens, len(out.ITL), tt.text, tt.tokens)
			}
		})
	}
}

// TestModel: the base URL may be the server's root or its /v1 API base;
// every way of failing to find the model says which flag is at fault.
func TestModel(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/models" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, `{"data":[{"id":"a"},{"id":"b"}]}`)
	}))
	defer ts.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	tests := []struct {
		name, url, model string
		want             string // "" for success, else part of the error
		is               error
	}{
		{name: "root", url: ts.URL},
		{name: "API base", url: ts.URL + "/v1/"},
		{name: "second model", url: ts.URL, model: "b"},
		{name: "unknown model", url: ts.URL, model: "nosuch", want: `--model "nosuch"`, is: bench.ErrUnknownModel},
		{name: "wrong path", url: ts.URL + "/api", want: "--base-url " + ts.URL + "/api: GET " + ts.URL + "/api/v1/models: 404 Not Found: give the server's root"},
		{name: "nothing listens", url: closed.URL, want: "--base-url " + closed.URL, is: bench.ErrUnreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg, err := New(Options{BaseURL: tt.url, Model: tt.model})
			if err != nil {
				t.Fatal(err)
			}
			defer tg.Close()
			m, err := tg.Model(t.Context())
			switch {
			case tt.want == "" && (err != nil || m != cmp.Or(tt.model, "a")):
				t.Fatalf("model %q, error %v", m, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want one holding %q", err, tt.want)
			case tt.is != nil && !errors.Is(err, tt.is):
				t.Fatalf("error %v is not %v", err, tt.is)
			}
		})
	}
}

// TestRequestBody: sampling parameters, --header headers and the
// request id reach the server; a header may replace the API key's
// Authorization but not the request id.
func TestRequestBody(t *testing.T) {
	var got map[string]any
	var hdr http.Header
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/models" {
			fmt.Fprint(w, `{"data":[{"id":"m"}]}`)
			return
		}
		hdr = r.Header.Clone()
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
			t.Error(err)
		}
		fmt.Fprint(w, tok("x")+done)
	}))
	defer ts.Close()
	tg, err := New(Options{BaseURL: ts.URL, APIKey: "k", Headers: map[string]string{"X-Team": "infra", "X-Request-Id": "forged"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if _, err := tg.Model(t.Context()); err != nil {
		t.Fatal(err)
	}
	temp, topP, topK := 0.5, 0.9, 20
	out := tg.Send(t.Context(), bench.Request{ID: "bench-1", Prompt: "p", MaxTokens: 4, Sampling: bench.Sampling{Temperature: &temp, TopP: &topP, TopK: &topK}})
	if !out.Success {
		t.Fatalf("%s: %s", out.Code, out.Error)
	}
	if got["temperature"] != 0.5 || got["top_p"] != 0.9 || got["top_k"] != 20.0 || got["max_tokens"] != 4.0 {
		t.Errorf("body %v", got)
	}
	if hdr.Get("X-Team") != "infra" || hdr.Get("X-Request-Id") != "bench-1" || hdr.Get("Authorization") != "Bearer k" {
		t.Errorf("headers %v", hdr)
	}
	// Without sampling flags the server's defaults hold: no field is sent.
	got = nil
	tg.Send(t.Context(), bench.Request{ID: "bench-2", Prompt: "p", MaxTokens: 4})
	for _, k := range []string{"temperature", "top_p", "top_k"} {
		if _, ok := got[k]; ok {
			t.Errorf("%s sent without its flag", k)
		}
	}
}
