package coordinator

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

func validRequest() *tandemv1.GenerateRequest {
	return &tandemv1.GenerateRequest{
		Model:    "tiny",
		Prompt:   &tandemv1.GenerateRequest_Text{Text: "Hello world"},
		Sampling: &tandemv1.SamplingParams{MaxTokens: 8},
	}
}

func ids(n int) *tandemv1.GenerateRequest_TokenIds {
	return &tandemv1.GenerateRequest_TokenIds{TokenIds: &tandemv1.TokenIds{Ids: make([]int32, n)}}
}

func TestPrepareRejects(t *testing.T) {
	m := tinyModel(t)
	tests := []struct {
		name  string
		edit  func(r *tandemv1.GenerateRequest)
		field string
		msg   string
	}{
		{"unknown model", func(r *tandemv1.GenerateRequest) { r.Model = "gpt-4" }, "model", `unknown model "gpt-4"; this cluster serves "tiny"`},
		{"no prompt", func(r *tandemv1.GenerateRequest) { r.Prompt = nil }, "prompt", "set text or token_ids"},
		{"empty text", func(r *tandemv1.GenerateRequest) { r.Prompt = &tandemv1.GenerateRequest_Text{} }, "text", "must not be empty"},
		{"empty ids", func(r *tandemv1.GenerateRequest) { r.Prompt = ids(0) }, "token_ids", "must not be empty"},
		{"nil ids", func(r *tandemv1.GenerateRequest) { r.Prompt = &tandemv1.GenerateRequest_TokenIds{} }, "token_ids", "must not be empty"},
		{"negative id", func(r *tandemv1.GenerateRequest) {
			r.Prompt = &tandemv1.GenerateRequest_TokenIds{TokenIds: &tandemv1.TokenIds{Ids: []int32{1, -1}}}
		}, "token_ids.ids[1]", "token id -1 is not in the vocabulary [0, 50257)"},
		{"id past vocab", func(r *tandemv1.GenerateRequest) {
			r.Prompt = &tandemv1.GenerateRequest_TokenIds{TokenIds: &tandemv1.TokenIds{Ids: []int32{50257}}}
		}, "token_ids.ids[0]", "token id 50257"},
		{"no sampling", func(r *tandemv1.GenerateRequest) { r.Sampling = nil }, "sampling.max_tokens", "must be >= 1, got 0"},
		{"max_tokens 0", func(r *tandemv1.GenerateRequest) { r.Sampling.MaxTokens = 0 }, "sampling.max_tokens", "must be >= 1, got 0"},
		{"max_tokens negative", func(r *tandemv1.GenerateRequest) { r.Sampling.MaxTokens = -3 }, "sampling.max_tokens", "got -3"},
		{"temperature negative", func(r *tandemv1.GenerateRequest) { r.Sampling.Temperature = -1 }, "sampling.temperature", "must be >= 0, got -1"},
		{"temperature NaN", func(r *tandemv1.GenerateRequest) { r.Sampling.Temperature = math.NaN() }, "sampling.temperature", "finite"},
		{"temperature Inf", func(r *tandemv1.GenerateRequest) { r.Sampling.Temperature = math.Inf(1) }, "sampling.temperature", "finite"},
		{"top_p above 1", func(r *tandemv1.GenerateRequest) { r.Sampling.TopP = 1.5 }, "sampling.top_p", "must be in [0, 1], got 1.5"},
		{"top_p negative", func(r *tandemv1.GenerateRequest) { r.Sampling.TopP = -0.1 }, "sampling.top_p", "got -0.1"},
		{"top_p NaN", func(r *tandemv1.GenerateRequest) { r.Sampling.TopP = math.NaN() }, "sampling.top_p", "NaN"},
		{"top_k negative", func(r *tandemv1.GenerateRequest) { r.Sampling.TopK = -1 }, "sampling.top_k", "must be >= 0, got -1"},
		{"top_logprobs 21", func(r *tandemv1.GenerateRequest) { r.Sampling.TopLogprobs = 21 }, "sampling.top_logprobs", "must be in [0, 20], got 21"},
		{"top_logprobs negative", func(r *tandemv1.GenerateRequest) { r.Sampling.TopLogprobs = -1 }, "sampling.top_logprobs", "got -1"},
		{"empty stop", func(r *tandemv1.GenerateRequest) { r.Sampling.Stop = []string{"a", ""} }, "sampling.stop[1]", "must not be empty"},
		{"too many stops", func(r *tandemv1.GenerateRequest) { r.Sampling.Stop = strings.Split(strings.Repeat("x,", 17), ",")[:17] }, "sampling.stop", "at most 16 stop strings, got 17"},
		{"long stop", func(r *tandemv1.GenerateRequest) { r.Sampling.Stop = []string{strings.Repeat("y", 513)} }, "sampling.stop[0]", "at most 512 bytes, got 513"},
		{"stop token past vocab", func(r *tandemv1.GenerateRequest) { r.Sampling.StopTokenIds = []int32{60000} }, "sampling.stop_token_ids[0]", "token id 60000"},
		{"prompt plus max_tokens too long", func(r *tandemv1.GenerateRequest) { r.Prompt, r.Sampling.MaxTokens = ids(2000), 49 },
			"prompt", "2000 tokens plus max_tokens 49 exceed the model's context length of 2048 tokens"},
		{"prompt fills the context", func(r *tandemv1.GenerateRequest) { r.Prompt = ids(2048) },
			"prompt", "2048 tokens leave no room in the model's context length of 2048 tokens"},
		{"long request id", func(r *tandemv1.GenerateRequest) { r.RequestId = strings.Repeat("x", 257) }, "request_id", "at most 256 bytes"},
		{"control char in request id", func(r *tandemv1.GenerateRequest) { r.RequestId = "a\nb" }, "request_id", "printable"},
		{"bad UTF-8 request id", func(r *tandemv1.GenerateRequest) { r.RequestId = "\xff" }, "request_id", "UTF-8"},
		{"negative timeout", func(r *tandemv1.GenerateRequest) { r.Timeout = durationpb.New(-time.Second) }, "timeout", "must be positive, got -1s"},
		{"zero timeout", func(r *tandemv1.GenerateRequest) { r.Timeout = durationpb.New(0) }, "timeout", "must be positive"},
		{"invalid timeout", func(r *tandemv1.GenerateRequest) { r.Timeout = &durationpb.Duration{Seconds: 1, Nanos: -1} }, "timeout", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := validRequest()
			tt.edit(req)
			_, err := m.prepare(req, false)
			var fe *fieldError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want a *fieldError", err)
			}
			if fe.field != tt.field || !strings.HasPrefix(err.Error(), tt.field+": ") || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("err = %q (field %q), want field %q and %q", err, fe.field, tt.field, tt.msg)
			}
			if got := status.Code(err); got != codes.InvalidArgument {
				t.Errorf("status code = %v, want InvalidArgument", got)
			}
		})
	}
}

func TestPrepareAccepts(t *testing.T) {
	m := tinyModel(t)
	no := false
	tests := []struct {
		name  string
		edit  func(r *tandemv1.GenerateRequest)
		fill  bool
		check func(t *testing.T, p *prepared)
	}{
		{"text", func(*tandemv1.GenerateRequest) {}, false, func(t *testing.T, p *prepared) {
			if want := m.tok.Encode("Hello world", true); !slices.Equal(p.prompt, want) {
				t.Errorf("prompt = %v, want %v", p.prompt, want)
			}
		}},
		{"empty model selects the only one", func(r *tandemv1.GenerateRequest) { r.Model = "" }, false, func(*testing.T, *prepared) {}},
		{"no special tokens", func(r *tandemv1.GenerateRequest) { r.AddSpecialTokens = &no }, false, func(t *testing.T, p *prepared) {
			if want := m.tok.Encode("Hello world", false); !slices.Equal(p.prompt, want) {
				t.Errorf("prompt = %v, want %v", p.prompt, want)
			}
		}},
		{"token ids at the context limit", func(r *tandemv1.GenerateRequest) { r.Prompt, r.Sampling.MaxTokens = ids(2000), 48 }, false, func(t *testing.T, p *prepared) {
			if len(p.prompt) != 2000 || p.sampling.MaxTokens != 48 {
				t.Errorf("prompt %d tokens, max_tokens %d", len(p.prompt), p.sampling.MaxTokens)
			}
		}},
		{"max_tokens filled to the context", func(r *tandemv1.GenerateRequest) { r.Prompt, r.Sampling = ids(48), nil }, true, func(t *testing.T, p *prepared) {
			if p.sampling.MaxTokens != 2000 {
				t.Errorf("max_tokens = %d, want 2000", p.sampling.MaxTokens)
			}
		}},
		{"top_logprobs implies logprobs", func(r *tandemv1.GenerateRequest) { r.Sampling.TopLogprobs = 20 }, false, func(t *testing.T, p *prepared) {
			if !p.sampling.Logprobs {
				t.Error("logprobs not set")
			}
		}},
		{"timeout and id", func(r *tandemv1.GenerateRequest) {
			r.Timeout, r.RequestId = durationpb.New(1500*time.Millisecond), "req-é-1"
		}, false, func(t *testing.T, p *prepared) {
			if p.timeout != 1500*time.Millisecond || p.id != "req-é-1" {
				t.Errorf("timeout %v, id %q", p.timeout, p.id)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := validRequest()
			tt.edit(req)
			before := proto.Clone(req)
			p, err := m.prepare(req, tt.fill)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, p)
			if !proto.Equal(req, before) {
				t.Error("prepare changed the request")
			}
		})
	}
}
