package coordinator

import (
	"math"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

const (
	// maxTopLogprobs bounds SamplingParams.top_logprobs, as OpenAI's API
	// does.
	maxTopLogprobs = 20
	// maxRequestIDLen bounds a client's request id, which ends up in
	// logs, traces and metrics.
	maxRequestIDLen = 256
)

// GRPCStatus makes a fieldError an INVALID_ARGUMENT status.
func (e *fieldError) GRPCStatus() *status.Status {
	return status.New(codes.InvalidArgument, e.Error())
}

// prepared is a validated request, ready to route.
type prepared struct {
	id       string // "" until admitted
	prompt   []int32
	sampling *tandemv1.SamplingParams // a copy; top_logprobs > 0 implies logprobs
	timeout  time.Duration            // 0: none
	tokenize time.Duration            // spent tokenizing a text prompt
}

// prepare validates req and tokenizes its prompt. Every error is a
// *fieldError naming the first bad field. When fillMaxTokens is set, a
// max_tokens of 0 means the rest of the context (as the OpenAI chat API
// does) instead of an error.
func (m *modelInfo) prepare(req *tandemv1.GenerateRequest, fillMaxTokens bool) (*prepared, error) {
	if req.GetModel() != "" && req.GetModel() != m.name {
		return nil, badField("model", "unknown model %q; this cluster serves %q", req.GetModel(), m.name)
	}
	p := &prepared{id: req.GetRequestId()}
	switch pr := req.GetPrompt().(type) {
	case *tandemv1.GenerateRequest_Text:
		if pr.Text == "" {
			return nil, badField("text", "the prompt must not be empty")
		}
		if limit := m.maxPositions * m.maxTokenBytes; len(pr.Text) > limit {
			return nil, badField("text", "%d bytes cannot fit in the context length of %d tokens (at most %d bytes), not tokenized", len(pr.Text), m.maxPositions, limit)
		}
		start := time.Now()
		p.prompt = m.tok.Encode(pr.Text, req.AddSpecialTokens == nil || *req.AddSpecialTokens)
		p.tokenize = time.Since(start)
		if len(p.prompt) == 0 {
			return nil, badField("text", "the prompt tokenizes to no tokens")
		}
	case *tandemv1.GenerateRequest_TokenIds:
		p.prompt = pr.TokenIds.GetIds()
		if len(p.prompt) == 0 {
			return nil, badField("token_ids", "the prompt must not be empty")
		}
		for i, id := range p.prompt {
			if !m.validID(id) {
				return nil, badField("token_ids.ids["+strconv.Itoa(i)+"]", "token id %d is not in the vocabulary [0, %d)", id, m.vocab)
			}
		}
	default:
		return nil, badField("prompt", "set text or token_ids")
	}
	s := &tandemv1.SamplingParams{}
	if req.GetSampling() != nil {
		s = proto.CloneOf(req.GetSampling())
	}
	if err := m.checkSampling(s); err != nil {
		return nil, err
	}
	room := m.maxPositions - len(p.prompt)
	switch {
	case room <= 0:
		return nil, badField("prompt", "%d tokens leave no room in the model's context length of %d tokens", len(p.prompt), m.maxPositions)
	case s.MaxTokens == 0 && fillMaxTokens:
		s.MaxTokens = int32(room)
	case s.MaxTokens < 1:
		return nil, badField("sampling.max_tokens", "must be >= 1, got %d", s.MaxTokens)
	case int(s.MaxTokens) > room:
		return nil, badField("prompt", "%d tokens plus max_tokens %d exceed the model's context length of %d tokens", len(p.prompt), s.MaxTokens, m.maxPositions)
	}
	if s.TopLogprobs > 0 {
		s.Logprobs = true
	}
	p.sampling = s
	if err := checkRequestID(p.id); err != nil {
		return nil, err
	}
	if t := req.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil {
			return nil, badField("timeout", "%s", err)
		}
		if p.timeout = t.AsDuration(); p.timeout <= 0 {
			return nil, badField("timeout", "must be positive, got %v", p.timeout)
		}
	}
	return p, nil
}

func (m *modelInfo) checkSampling(s *tandemv1.SamplingParams) error {
	switch {
	case math.IsNaN(s.Temperature) || math.IsInf(s.Temperature, 0):
		return badField("sampling.temperature", "must be a finite number, got %v", s.Temperature)
	case s.Temperature < 0:
		return badField("sampling.temperature", "must be >= 0, got %v", s.Temperature)
	case s.TopK < 0:
		return badField("sampling.top_k", "must be >= 0, got %d", s.TopK)
	case math.IsNaN(s.TopP) || s.TopP < 0 || s.TopP > 1:
		return badField("sampling.top_p", "must be in [0, 1], got %v", s.TopP)
	case s.TopLogprobs < 0 || s.TopLogprobs > maxTopLogprobs:
		return badField("sampling.top_logprobs", "must be in [0, %d], got %d", maxTopLogprobs, s.TopLogprobs)
	}
	// Every token is checked against every stop string: bound the work.
	if len(s.Stop) > maxStops {
		return badField("sampling.stop", "at most %d stop strings, got %d", maxStops, len(s.Stop))
	}
	for i, stop := range s.Stop {
		switch {
		case stop == "":
			return badField("sampling.stop["+strconv.Itoa(i)+"]", "must not be empty")
		case len(stop) > maxStopBytes:
			return badField("sampling.stop["+strconv.Itoa(i)+"]", "at most %d bytes, got %d", maxStopBytes, len(stop))
		}
	}
	for i, id := range s.StopTokenIds {
		if !m.validID(id) {
			return badField("sampling.stop_token_ids["+strconv.Itoa(i)+"]", "token id %d is not in the vocabulary [0, %d)", id, m.vocab)
		}
	}
	return nil
}

// Limits on stop strings, which cost work on every token.
const (
	maxStops     = 16
	maxStopBytes = 512
)

func (m *modelInfo) validID(id int32) bool { return id >= 0 && int(id) < m.vocab }

// checkRequestID accepts a client's id when it is short, printable UTF-8.
func checkRequestID(id string) error {
	if len(id) > maxRequestIDLen {
		return badField("request_id", "must be at most %d bytes, got %d", maxRequestIDLen, len(id))
	}
	if !utf8.ValidString(id) {
		return badField("request_id", "must be valid UTF-8")
	}
	for _, r := range id {
		if !unicode.IsPrint(r) {
			return badField("request_id", "must be printable, got %q", id)
		}
	}
	return nil
}
