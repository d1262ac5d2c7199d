package openai

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/tandemllm/tandem/bench"
)

// Endpoints the target speaks.
const (
	Completions     = "/v1/completions"
	ChatCompletions = "/v1/chat/completions"
)

// Options configure a Target.
type Options struct {
	// BaseURL is the server's root, such as http://127.0.0.1:8000.
	BaseURL string
	// Endpoint is Completions (default) or ChatCompletions.
	Endpoint string
	// Model names the model in every request; empty: the first model
	// /v1/models lists.
	Model string
	// APIKey, when set, is sent as a bearer token.
	APIKey string
	// Headers are sent with every request (--header); they override the
	// API key's Authorization but not the X-Request-Id.
	Headers map[string]string
	// MaxConns bounds the open connections (0: no bound).
	MaxConns int
	// TLS, when set, configures https connections (a CA of one's own);
	// default: the system's roots.
	TLS *tls.Config
}

// Target sends requests to one server.
type Target struct {
	o      Options
	client *http.Client
}

var _ bench.Target = (*Target)(nil)

// New checks the options and makes a Target.
func New(o Options) (*Target, error) {
	if o.Endpoint == "" {
		o.Endpoint = Completions
	}
	if o.Endpoint != Completions && o.Endpoint != ChatCompletions {
		return nil, fmt.Errorf("--endpoint %q: must be %s or %s", o.Endpoint, Completions, ChatCompletions)
	}
	if !strings.HasPrefix(o.BaseURL, "http://") && !strings.HasPrefix(o.BaseURL, "https://") {
		return nil, fmt.Errorf("--base-url %q: must start with http:// or https://", o.BaseURL)
	}
	// The root or the API's base, as OpenAI's clients take it: both
	// http://host:8000 (vLLM's --base-url) and http://host:8000/v1.
	o.BaseURL = strings.TrimSuffix(strings.TrimSuffix(o.BaseURL, "/"), "/v1")
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxConnsPerHost, tr.MaxIdleConnsPerHost = o.MaxConns, max(o.MaxConns, 100)
	if o.TLS != nil {
		tr.TLSClientConfig = o.TLS
	}
	return &Target{o: o, client: &http.Client{Transport: tr}}, nil
}

// Close closes idle connections.
func (t *Target) Close() error {
	t.client.CloseIdleConnections()
	return nil
}

// Model asks /v1/models and returns the configured model if listed, or
// the first, which later requests then name; it fails when the server
// cannot be reached within 10 s. Call it before Send.
func (t *Target) Model(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.o.BaseURL+"/v1/models", nil)
	if err != nil {
		return "", fmt.Errorf("--base-url %s: %w", t.o.BaseURL, err)
	}
	t.headers(req)
	resp, err := t.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("--base-url %s: %w: %v", t.o.BaseURL, bench.ErrUnreachable, err)
	}
	defer resp.Body.Close()
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return "", fmt.Errorf("--base-url %s: GET %s/v1/models: %s: give the server's root (http://HOST:PORT) or its API base (http://HOST:PORT/v1)",
			t.o.BaseURL, t.o.BaseURL, resp.Status)
	case http.StatusUnauthorized, http.StatusForbidden:
		return "", fmt.Errorf("--base-url %s: GET /v1/models: %s (give the server's key with --api-key or $OPENAI_API_KEY)", t.o.BaseURL, resp.Status)
	default:
		return "", fmt.Errorf("--base-url %s: GET /v1/models: %s", t.o.BaseURL, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return "", fmt.Errorf("--base-url %s: GET /v1/models: %w", t.o.BaseURL, err)
	}
	if len(list.Data) == 0 {
		return "", fmt.Errorf("--base-url %s: the server lists no model", t.o.BaseURL)
	}
	if t.o.Model == "" {
		t.o.Model = list.Data[0].ID
		return t.o.Model, nil
	}
	ids := make([]string, len(list.Data))
	for i, m := range list.Data {
		if m.ID == t.o.Model {
			return t.o.Model, nil
		}
		ids[i] = m.ID
	}
	return "", fmt.Errorf("--model %q: %w by the server at %s, which lists %s", t.o.Model, bench.ErrUnknownModel, t.o.BaseURL, strings.Join(ids, ", "))
}

// headers sets the API key and the --header headers.
func (t *Target) headers(req *http.Request) {
	if t.o.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+t.o.APIKey)
	}
	for k, v := range t.o.Headers {
		req.Header.Set(k, v)
	}
}

// chunk is one streamed event of either endpoint: output, usage, or an
// error (OpenAI's {"error": {...}}, or the top-level error object older
// vLLM servers send).
type chunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Choices []struct {
		Text  *string `json:"text"`
		Delta *struct {
			Content *string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
	Error *apiError `json:"error"`
	apiError
}

// apiError is an OpenAI-style error object; Code is a string or a
// number, as servers differ.
type apiError struct {
	Message string          `json:"message"`
	Type    string          `json:"type"`
	Code    json.RawMessage `json:"code"`
}

// streamErr is the error a chunk carries, nil when none.
func (c *chunk) streamErr() *apiError {
	switch {
	case c.Error != nil:
		return c.Error
	case c.Object == "error":
		return &c.apiError
	}
	return nil
}

// codeName is the error's class for errors_by_code: "STREAM_ERROR" and
// the server's code, else its type.
func (e *apiError) codeName() string {
	code := strings.Trim(string(e.Code), `"`)
	if code == "" || code == "null" {
		code = e.Type
	}
	if code == "" {
		return "STREAM_ERROR"
	}
	return "STREAM_ERROR " + code
}

// Send posts one streaming request and reads its events.
func (t *Target) Send(ctx context.Context, r bench.Request) bench.Output {
	out := bench.Output{RequestID: r.ID, PromptLen: r.PromptLen}
	body := map[string]any{
		"model": t.o.Model, "stream": true, "stream_options": map[string]any{"include_usage": true},
	}
	if t.o.Endpoint == ChatCompletions {
		body["messages"] = []map[string]string{{"role": "user", "content": r.Prompt}}
		body["max_completion_tokens"] = r.MaxTokens
	} else {
		body["prompt"] = r.Prompt
		body["max_tokens"] = r.MaxTokens
	}
	if r.IgnoreEOS {
		body["ignore_eos"] = true
	}
	if r.Temperature != nil {
		body["temperature"] = *r.Temperature
	}
	if r.TopP != nil {
		body["top_p"] = *r.TopP
	}
	if r.TopK != nil {
		body["top_k"] = *r.TopK // vLLM's extension
	}
	data, err := json.Marshal(body)
	if err != nil {
		return failed(out, "REQUEST", err.Error())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.o.BaseURL+t.o.Endpoint, bytes.NewReader(data))
	if err != nil {
		return failed(out, "REQUEST", err.Error())
	}
	t.headers(req)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-Id", r.ID)
	out.Start = time.Now()
	resp, err := t.client.Do(req)
	if err != nil {
		return failed(out, "CONNECTION", err.Error())
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return failed(out, fmt.Sprintf("HTTP %d", resp.StatusCode), strings.TrimSpace(resp.Status+": "+string(msg)))
	}
	// A server that files the request under the X-Request-Id sent echoes
	// it (vLLM, Tandem): the id then joins the server's logs and traces.
	// Others are known by the id their responses carry.
	return t.read(resp.Body, out, resp.Header.Get("X-Request-Id") == r.ID)
}

// read consumes the event stream; keepID keeps the request's own id
// instead of the one the chunks carry. A stream succeeds when it carried
// output and ended with [DONE] or a finish reason, without an error
// event: a mid-stream error (an "error" event, or a chunk holding an
// error object) or finish_reason "error" fails the request, whatever it
// streamed before.
func (t *Target) read(body io.Reader, out bench.Output, keepID bool) bench.Output {
	events := newSSEReader(body)
	last := out.Start
	chunks := 0
	ended := false // [DONE] or a finish reason seen
	var text strings.Builder
	for {
		ev, err := events.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return failed(out, "CONNECTION", err.Error())
		}
		data := bytes.TrimSpace(ev.Data)
		if string(data) == "[DONE]" {
			ended = true
			break
		}
		now := time.Now()
		if ev.Type == "error" {
			return failed(out, "STREAM_ERROR", fmt.Sprintf("error event after %d chunks: %s", chunks, data))
		}
		var c chunk
		if err := json.Unmarshal(data, &c); err != nil {
			return failed(out, "BAD_STREAM", fmt.Sprintf("event %q: %v", truncate(data, 200), err))
		}
		if e := c.streamErr(); e != nil {
			return failed(out, e.codeName(), fmt.Sprintf("error after %d chunks: %s (type %q, code %s)", chunks, e.Message, e.Type, orNull(e.Code)))
		}
		if c.ID != "" && !keepID {
			out.RequestID = c.ID
		}
		if len(c.Choices) > 0 {
			if chunks == 0 {
				out.TTFT = now.Sub(out.Start)
			} else {
				out.ITL = append(out.ITL, now.Sub(last))
			}
			chunks++
			last = now
			ch := c.Choices[0]
			switch {
			case ch.Text != nil:
				text.WriteString(*ch.Text)
			case ch.Delta != nil && ch.Delta.Content != nil:
				text.WriteString(*ch.Delta.Content)
			}
			if fr := ch.FinishReason; fr != nil && *fr != "" {
				if *fr == "error" {
					return failed(out, "STREAM_ERROR finish_reason", fmt.Sprintf("finish_reason \"error\" after %d chunks", chunks))
				}
				ended = true
			}
		} else if c.Usage != nil {
			out.OutputTokens = c.Usage.CompletionTokens
			if c.Usage.PromptTokens > 0 {
				out.PromptLen = c.Usage.PromptTokens
			}
		}
	}
	out.Text = text.String()
	out.Latency = last.Sub(out.Start)
	switch {
	case chunks == 0:
		return failed(out, "NO_OUTPUT", "never received a chunk with output")
	case !ended:
		return failed(out, "INCOMPLETE", fmt.Sprintf("the stream ended after %d chunks without a finish_reason or [DONE]", chunks))
	}
	if out.OutputTokens == 0 {
		out.OutputTokens = chunks // no usage chunk: one token per chunk
	}
	out.Success = true
	return out
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

func orNull(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "null"
	}
	return string(raw)
}

func failed(out bench.Output, code, msg string) bench.Output {
	out.Success, out.Code, out.Error = false, code, msg
	return out
}
