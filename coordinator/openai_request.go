package coordinator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// apiError is an OpenAI-style error response.
type apiError struct {
	status  int
	message string
	typ     string // "invalid_request_error", "rate_limit_error", "server_error"
	param   string // the request parameter at fault, if any
	code    string // OpenAI's error code, if any ("invalid_api_key")
}

func (e *apiError) Error() string { return e.message }

func invalid(param, format string, args ...any) *apiError {
	msg := fmt.Sprintf(format, args...)
	if param != "" {
		msg = param + ": " + msg
	}
	return &apiError{status: http.StatusBadRequest, message: msg, typ: "invalid_request_error", param: param}
}

// commonRequest holds the parameters /v1/completions and
// /v1/chat/completions share. Unknown parameters are ignored, as OpenAI's
// API does; parameters Tandem cannot honour are rejected, never dropped.
type commonRequest struct {
	Model            string             `json:"model"`
	Temperature      *float64           `json:"temperature"`
	TopP             *float64           `json:"top_p"`
	TopK             *int64             `json:"top_k"` // extension, as vLLM's; -1 means all
	N                *int64             `json:"n"`
	Stream           bool               `json:"stream"`
	StreamOptions    *streamOptions     `json:"stream_options"`
	Stop             json.RawMessage    `json:"stop"`
	Seed             *int64             `json:"seed"`
	PresencePenalty  *float64           `json:"presence_penalty"`
	FrequencyPenalty *float64           `json:"frequency_penalty"`
	LogitBias        map[string]float64 `json:"logit_bias"`
	IgnoreEOS        bool               `json:"ignore_eos"`     // extension, as vLLM's
	StopTokenIDs     []int32            `json:"stop_token_ids"` // extension, as vLLM's
	MaxTokens        *int64             `json:"max_tokens"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// completionRequest is /v1/completions' body beyond commonRequest.
type completionRequest struct {
	Prompt   json.RawMessage `json:"prompt"`
	Logprobs *int64          `json:"logprobs"`
	Echo     bool            `json:"echo"`
	Suffix   *string         `json:"suffix"`
	BestOf   *int64          `json:"best_of"`
}

// chatRequest is /v1/chat/completions' body beyond commonRequest.
type chatRequest struct {
	Messages            []chatMessageJSON `json:"messages"`
	MaxCompletionTokens *int64            `json:"max_completion_tokens"`
	Logprobs            *bool             `json:"logprobs"`
	TopLogprobs         *int64            `json:"top_logprobs"`
	Tools               json.RawMessage   `json:"tools"`
	ResponseFormat      *struct {
		Type string `json:"type"`
	} `json:"response_format"`
}

type chatMessageJSON struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// openAIRequest is a parsed, validated OpenAI request: the
// GenerateRequest it becomes and how to answer it.
type openAIRequest struct {
	chat         bool
	gen          *tandemv1.GenerateRequest
	stream       bool
	includeUsage bool
	// fillMaxTokens: max_tokens was not given and defaults to the rest of
	// the context.
	fillMaxTokens bool
	// maxTokensParam is the parameter that set max_tokens, for errors.
	maxTokensParam string
	// messages are a chat's, rendered by the model's chat template.
	messages []chatMessage
}

// decodeJSON decodes body into v; errors name the parameter at fault.
// Decoding the same body into several structs lets each keep its
// parameters' names flat in errors.
func decodeJSON(body []byte, v any) *apiError {
	dec := json.NewDecoder(bytes.NewReader(body))
	err := dec.Decode(v)
	if err == nil {
		if _, err := dec.Token(); err != io.EOF {
			return invalid("", "malformed JSON: unexpected data after the request object")
		}
		return nil
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return invalid("", "the request body is empty; expected a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalid("", "malformed JSON: the body ends in the middle of the object")
	case errors.As(err, &syn):
		return invalid("", "malformed JSON at byte %d: %v", syn.Offset, syn)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return invalid("", "the request body must be a JSON object, got %s", typ.Value)
		}
		return invalid(typ.Field, "expected %s, got %s", jsonKind(typ.Type), typ.Value)
	}
	return invalid("", "malformed JSON: %v", err)
}

// jsonKind names a Go type as the JSON value it reads.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer in range"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return t.String()
}

func parseCompletionRequest(body []byte) (*openAIRequest, *apiError) {
	var c commonRequest
	var r completionRequest
	if err := decodeJSON(body, &c); err != nil {
		return nil, err
	}
	if err := decodeJSON(body, &r); err != nil {
		return nil, err
	}
	out, err := c.convert()
	if err != nil {
		return nil, err
	}
	switch {
	case r.Echo:
		return nil, invalid("echo", "not supported")
	case r.Suffix != nil && *r.Suffix != "":
		return nil, invalid("suffix", "not supported")
	case r.BestOf != nil && *r.BestOf != 1:
		return nil, invalid("best_of", "only 1 is supported, got %d", *r.BestOf)
	}
	if err := parsePrompt(r.Prompt, out.gen); err != nil {
		return nil, err
	}
	out.maxTokensParam = "max_tokens"
	if c.MaxTokens == nil {
		// OpenAI's (and vLLM's) default for completions.
		out.gen.Sampling.MaxTokens = 16
	}
	if r.Logprobs != nil {
		if *r.Logprobs < 0 || *r.Logprobs > maxTopLogprobs {
			return nil, invalid("logprobs", "must be in [0, %d], got %d", maxTopLogprobs, *r.Logprobs)
		}
		out.gen.Sampling.Logprobs, out.gen.Sampling.TopLogprobs = true, int32(*r.Logprobs)
	}
	return out, nil
}

func parseChatRequest(body []byte) (*openAIRequest, *apiError) {
	var c commonRequest
	var r chatRequest
	if err := decodeJSON(body, &c); err != nil {
		return nil, err
	}
	if err := decodeJSON(body, &r); err != nil {
		return nil, err
	}
	out, err := c.convert()
	if err != nil {
		return nil, err
	}
	out.chat = true
	switch {
	case len(r.Tools) > 0 && string(r.Tools) != "null" && string(r.Tools) != "[]":
		return nil, invalid("tools", "tool calling is not supported")
	case r.ResponseFormat != nil && r.ResponseFormat.Type != "" && r.ResponseFormat.Type != "text":
		return nil, invalid("response_format", "only type \"text\" is supported, got %q", r.ResponseFormat.Type)
	}
	out.maxTokensParam = "max_tokens"
	if r.MaxCompletionTokens != nil {
		// The newer name wins, as in OpenAI's API.
		if err := setMaxTokens(out.gen.Sampling, *r.MaxCompletionTokens, "max_completion_tokens"); err != nil {
			return nil, err
		}
		out.maxTokensParam = "max_completion_tokens"
	} else if c.MaxTokens == nil {
		out.fillMaxTokens = true
	}
	if r.Logprobs != nil && *r.Logprobs {
		out.gen.Sampling.Logprobs = true
	}
	if r.TopLogprobs != nil {
		switch n := *r.TopLogprobs; {
		case n < 0 || n > maxTopLogprobs:
			return nil, invalid("top_logprobs", "must be in [0, %d], got %d", maxTopLogprobs, n)
		case n > 0 && !out.gen.Sampling.Logprobs:
			return nil, invalid("top_logprobs", "needs logprobs: true")
		default:
			out.gen.Sampling.TopLogprobs = int32(n)
		}
	}
	msgs, err := parseMessages(r.Messages)
	if err != nil {
		return nil, err
	}
	// The template is applied by the handler, which knows the tokenizer.
	out.messages = msgs
	return out, nil
}

// convert checks and converts the shared parameters.
func (c *commonRequest) convert() (*openAIRequest, *apiError) {
	s := &tandemv1.SamplingParams{Temperature: 1, TopP: 1} // OpenAI's defaults
	out := &openAIRequest{
		gen:    &tandemv1.GenerateRequest{Model: c.Model, Sampling: s},
		stream: c.Stream,
	}
	if c.StreamOptions != nil {
		if !c.Stream {
			return nil, invalid("stream_options", "stream_options is only allowed when stream is true")
		}
		out.includeUsage = c.StreamOptions.IncludeUsage
	}
	switch {
	case c.N != nil && *c.N != 1:
		return nil, invalid("n", "only 1 choice per request is supported, got %d", *c.N)
	case c.PresencePenalty != nil && *c.PresencePenalty != 0:
		return nil, invalid("presence_penalty", "not supported; must be 0")
	case c.FrequencyPenalty != nil && *c.FrequencyPenalty != 0:
		return nil, invalid("frequency_penalty", "not supported; must be 0")
	case len(c.LogitBias) > 0:
		return nil, invalid("logit_bias", "not supported")
	}
	if c.Temperature != nil {
		s.Temperature = *c.Temperature
	}
	if c.TopP != nil {
		s.TopP = *c.TopP
		if s.TopP == 0 {
			// OpenAI reads top_p 0 as "only the most likely token"; to the
			// engine 0 means "keep all", so ask for the smallest nucleus.
			s.TopP = math.SmallestNonzeroFloat64
		}
	}
	if c.TopK != nil {
		switch k := *c.TopK; {
		case k == -1:
			s.TopK = 0
		case k < 0 || k > math.MaxInt32:
			return nil, invalid("top_k", "must be -1 (all) or in [0, %d], got %d", math.MaxInt32, k)
		default:
			s.TopK = int32(k)
		}
	}
	if c.Seed != nil {
		seed := uint64(*c.Seed)
		s.Seed = &seed
	}
	if c.MaxTokens != nil {
		if err := setMaxTokens(s, *c.MaxTokens, "max_tokens"); err != nil {
			return nil, err
		}
	}
	stops, err := parseStop(c.Stop)
	if err != nil {
		return nil, err
	}
	s.Stop = stops
	s.StopTokenIds = c.StopTokenIDs
	s.IgnoreEos = c.IgnoreEOS
	return out, nil
}

func setMaxTokens(s *tandemv1.SamplingParams, n int64, param string) *apiError {
	if n < 1 || n > math.MaxInt32 {
		return invalid(param, "must be in [1, %d], got %d", math.MaxInt32, n)
	}
	s.MaxTokens = int32(n)
	return nil
}

// parseStop reads stop: null, a string or an array of strings.
func parseStop(raw json.RawMessage) ([]string, *apiError) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}, nil
	}
	var many []string
	if json.Unmarshal(raw, &many) == nil {
		return many, nil
	}
	return nil, invalid("stop", "expected a string or an array of strings")
}

// parsePrompt reads a completion prompt into gen: a string, or token ids,
// or either in a one-element array. Batches of prompts are refused.
func parsePrompt(raw json.RawMessage, gen *tandemv1.GenerateRequest) *apiError {
	if len(raw) == 0 || string(raw) == "null" {
		return invalid("prompt", "required")
	}
	var text string
	if json.Unmarshal(raw, &text) == nil {
		gen.Prompt = &tandemv1.GenerateRequest_Text{Text: text}
		return nil
	}
	var ids []int32
	if json.Unmarshal(raw, &ids) == nil {
		gen.Prompt = &tandemv1.GenerateRequest_TokenIds{TokenIds: &tandemv1.TokenIds{Ids: ids}}
		if len(ids) == 0 {
			return invalid("prompt", "must not be empty")
		}
		return nil
	}
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) != nil {
		return invalid("prompt", "expected a string, an array of token ids, or a one-element array of either")
	}
	if len(list) != 1 {
		return invalid("prompt", "one prompt per request is supported, got %d", len(list))
	}
	if bytes.HasPrefix(bytes.TrimSpace(list[0]), []byte("[")) {
		if json.Unmarshal(list[0], &ids) != nil {
			return invalid("prompt", "token ids must be integers in int32 range")
		}
		gen.Prompt = &tandemv1.GenerateRequest_TokenIds{TokenIds: &tandemv1.TokenIds{Ids: ids}}
		if len(ids) == 0 {
			return invalid("prompt", "must not be empty")
		}
		return nil
	}
	if json.Unmarshal(list[0], &text) != nil {
		return invalid("prompt", "expected a string, an array of token ids, or a one-element array of either")
	}
	gen.Prompt = &tandemv1.GenerateRequest_Text{Text: text}
	return nil
}

var chatRoles = []string{"system", "developer", "user", "assistant", "tool"}

// parseMessages checks a chat's messages and flattens their content to
// text.
func parseMessages(in []chatMessageJSON) ([]chatMessage, *apiError) {
	if len(in) == 0 {
		return nil, invalid("messages", "must hold at least one message")
	}
	out := make([]chatMessage, len(in))
	for i, m := range in {
		at := "messages[" + strconv.Itoa(i) + "]"
		known := false
		for _, r := range chatRoles {
			known = known || m.Role == r
		}
		if !known {
			return nil, &apiError{status: http.StatusBadRequest, typ: "invalid_request_error", param: "messages",
				message: fmt.Sprintf("%s.role: unknown role %q (want one of %s)", at, m.Role, strings.Join(chatRoles, ", "))}
		}
		content, err := messageText(m.Content)
		if err != nil {
			return nil, &apiError{status: http.StatusBadRequest, typ: "invalid_request_error", param: "messages",
				message: at + ".content: " + err.Error()}
		}
		out[i] = chatMessage{Role: m.Role, Content: content}
	}
	return out, nil
}

// messageText flattens a message's content: a string, null, or an array
// of text parts.
func messageText(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return "", errors.New("expected a string or an array of content parts")
	}
	var b strings.Builder
	for i, p := range parts {
		if p.Type != "text" || p.Text == nil {
			return "", fmt.Errorf("part %d: only text parts ({\"type\": \"text\", \"text\": ...}) are supported, got type %q", i, p.Type)
		}
		b.WriteString(*p.Text)
	}
	return b.String(), nil
}
