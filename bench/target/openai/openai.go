// Package openai is a bench.Target for any OpenAI-compatible server:
// /v1/completions or /v1/chat/completions with "stream": true, read as
// server-sent events. It measures as vllm bench serve's request functions
// do: time to the first chunk carrying choices, the gap before each
// later such chunk, and the token counts of the usage chunk that
// stream_options.include_usage asks for. Every request carries the
// bench's request id in an X-Request-Id header; a server that echoes it
// (vLLM, Tandem) has filed the request under it, so the output keeps
// it, and otherwise takes the id the server's chunks carry.
//
// It imports bench only; never any other package of Tandem.
package openai

import (
	"bufio"
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
	o.BaseURL = strings.TrimSuffix(o.BaseURL, "/")
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
	t.auth(req)
	resp, err := t.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("--base-url %s: %w", t.o.BaseURL, err)
	}
	defer resp.Body.Close()
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if resp.StatusCode != http.StatusOK {
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
	for _, m := range list.Data {
		if m.ID == t.o.Model {
			return t.o.Model, nil
		}
	}
	return "", fmt.Errorf("--model %q: the server at %s lists %s", t.o.Model, t.o.BaseURL, list.Data[0].ID)
}

func (t *Target) auth(req *http.Request) {
	if t.o.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+t.o.APIKey)
	}
}

// chunk is one streamed event of either endpoint.
type chunk struct {
	ID      string `json:"id"`
	Choices []struct {
		Text  *string `json:"text"`
		Delta *struct {
			Content *string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
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
	data, err := json.Marshal(body)
	if err != nil {
		return failed(out, "REQUEST", err.Error())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.o.BaseURL+t.o.Endpoint, bytes.NewReader(data))
	if err != nil {
		return failed(out, "REQUEST", err.Error())
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-Id", r.ID)
	t.auth(req)
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
// instead of the one the chunks carry.
func (t *Target) read(body io.Reader, out bench.Output, keepID bool) bench.Output {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	last := out.Start
	chunks := 0
	var text strings.Builder
	for sc.Scan() {
		line := sc.Bytes()
		data, ok := bytes.CutPrefix(line, []byte("data:"))
		if !ok {
			continue // blank separators, comments (":"), event names
		}
		data = bytes.TrimSpace(data)
		if string(data) == "[DONE]" {
			break
		}
		now := time.Now()
		var c chunk
		if err := json.Unmarshal(data, &c); err != nil {
			return failed(out, "BAD_STREAM", fmt.Sprintf("event %q: %v", data, err))
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
		} else if c.Usage != nil {
			out.OutputTokens = c.Usage.CompletionTokens
			if c.Usage.PromptTokens > 0 {
				out.PromptLen = c.Usage.PromptTokens
			}
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		return failed(out, "CONNECTION", err.Error())
	}
	out.Text = text.String()
	out.Latency = last.Sub(out.Start)
	if chunks == 0 {
		return failed(out, "NO_OUTPUT", "never received a chunk with output")
	}
	if out.OutputTokens == 0 {
		out.OutputTokens = chunks // no usage chunk: one token per chunk
	}
	out.Success = true
	return out
}

func failed(out bench.Output, code, msg string) bench.Output {
	out.Success, out.Code, out.Error = false, code, msg
	return out
}
