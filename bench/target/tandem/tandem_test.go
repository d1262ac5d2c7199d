package tandem

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tandemllm/tandem/bench"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// scripted is a Generation server over a real socket that answers each
// prompt with the messages scripted for it, then ends the stream with
// the scripted error (nil: a clean end). It stands for a coordinator
// misbehaving in ways a real one cannot be made to on demand.
type scripted struct {
	tandemv1.UnimplementedGenerationServer
	streams map[string][]*tandemv1.GenerateResponse
	ends    map[string]error
	key     string // the API key asked of every call; "" for none
	got     chan *tandemv1.GenerateRequest
}

func (s *scripted) ListModels(ctx context.Context, _ *tandemv1.ListModelsRequest) (*tandemv1.ListModelsResponse, error) {
	if err := s.auth(ctx); err != nil {
		return nil, err
	}
	return &tandemv1.ListModelsResponse{Models: []*tandemv1.Model{{Id: "tiny"}, {Id: "other"}}}, nil
}

func (s *scripted) Generate(req *tandemv1.GenerateRequest, stream grpc.ServerStreamingServer[tandemv1.GenerateResponse]) error {
	if err := s.auth(stream.Context()); err != nil {
		return err
	}
	if s.got != nil {
		s.got <- req
	}
	for _, m := range s.streams[req.GetText()] {
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	return s.ends[req.GetText()]
}

func (s *scripted) auth(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if s.key != "" && strings.Join(md.Get("authorization"), "") != "Bearer "+s.key {
		return status.Error(codes.Unauthenticated, "no valid API key")
	}
	return nil
}

func serve(t *testing.T, s *scripted) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	tandemv1.RegisterGenerationServer(srv, s)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func token(text string) *tandemv1.GenerateResponse {
	return &tandemv1.GenerateResponse{TokenIds: []int32{1}, Text: text}
}

func final(fr tandemv1.FinishReason, msg string) *tandemv1.GenerateResponse {
	return &tandemv1.GenerateResponse{FinishReason: fr, ErrorMessage: msg}
}

// TestSend: a stream succeeds only when it streamed tokens and ended
// with a finish reason of stop or length; a stream that ends without a
// finish reason, or with another, or with an error status, fails with
// its code.
func TestSend(t *testing.T) {
	stop := tandemv1.FinishReason_FINISH_REASON_STOP
	s := &scripted{
		streams: map[string][]*tandemv1.GenerateResponse{
			"ok":        {token("a"), token("b"), final(stop, "")},
			"length":    {token("a"), {TokenIds: []int32{2}, Text: "b", FinishReason: tandemv1.FinishReason_FINISH_REASON_LENGTH}},
			"no finish": {token("a"), token("b")},
			"abort":     {token("a"), final(tandemv1.FinishReason_FINISH_REASON_ABORT, "worker lost")},
			"mid error": {token("a")},
			"empty":     {final(stop, "")},
		},
		ends: map[string]error{"mid error": status.Error(codes.Internal, "rank 1 died")},
	}
	tg, err := New(serve(t, s), "tiny")
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	tests := []struct {
		prompt string
		ok     bool
		code   string
		tokens int
	}{
		{"ok", true, "", 2},
		{"length", true, "", 2},
		{"no finish", false, "INCOMPLETE", 2},
		{"abort", false, "FINISH_REASON_ABORT", 1},
		{"mid error", false, "INTERNAL", 1},
		{"empty", false, "NO_OUTPUT", 0},
	}
	for _, tt := range tests {
		t.Run(tt.prompt, func(t *testing.T) {
			out := tg.Send(t.Context(), bench.Request{ID: "r", Prompt: tt.prompt, MaxTokens: 2})
			if out.Success != tt.ok || out.Code != tt.code || (!tt.ok && out.Error == "") {
				t.Fatalf("success %v, code %q, error %q; want %v, %q", out.Success, out.Code, out.Error, tt.ok, tt.code)
			}
			if tt.ok && (out.OutputTokens != tt.tokens || out.TTFT > out.Latency || len(out.ITL) != tt.tokens-1) {
				t.Fatalf("%d tokens, TTFT %v, E2E %v, %d ITLs", out.OutputTokens, out.TTFT, out.Latency, len(out.ITL))
			}
		})
	}
}

// TestModel: an unknown model, a missing key and a silent address each
// get their own error, naming the flag.
func TestModel(t *testing.T) {
	addr := serve(t, &scripted{key: "k"})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	tests := []struct {
		name, addr, model string
		dial              []grpc.DialOption
		want              string
		is                error
	}{
		{"served", addr, "other", []grpc.DialOption{grpc.WithPerRPCCredentials(bearer("k"))}, "", nil},
		{"unknown model", addr, "nosuch", []grpc.DialOption{grpc.WithPerRPCCredentials(bearer("k"))}, `--model "nosuch"`, bench.ErrUnknownModel},
		{"no key", addr, "", nil, "--api-key", nil},
		{"nothing listens", dead, "", nil, "--addr " + dead, bench.ErrUnreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg, err := New(tt.addr, tt.model, tt.dial...)
			if err != nil {
				t.Fatal(err)
			}
			defer tg.Close()
			_, err = tg.Model(t.Context())
			switch {
			case tt.want == "" && err != nil:
				t.Fatal(err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want one holding %q", err, tt.want)
			case tt.is != nil && !errors.Is(err, tt.is):
				t.Fatalf("error %v is not %v", err, tt.is)
			}
		})
	}
}

// TestSampling: the sampling flags reach the request; vLLM's top-k -1
// (all) becomes the proto's 0.
func TestSampling(t *testing.T) {
	s := &scripted{streams: map[string][]*tandemv1.GenerateResponse{"p": {token("a"), final(tandemv1.FinishReason_FINISH_REASON_STOP, "")}},
		got: make(chan *tandemv1.GenerateRequest, 2)}
	tg, err := New(serve(t, s), "tiny")
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	temp, topP, all, k := 0.7, 0.95, -1, 5
	tg.Send(t.Context(), bench.Request{ID: "r1", Prompt: "p", MaxTokens: 3, IgnoreEOS: true, Sampling: bench.Sampling{Temperature: &temp, TopP: &topP, TopK: &all}})
	tg.Send(t.Context(), bench.Request{ID: "r2", Prompt: "p", MaxTokens: 3, Sampling: bench.Sampling{TopK: &k}})
	a, b := (<-s.got).GetSampling(), (<-s.got).GetSampling()
	if a.GetTemperature() != 0.7 || a.GetTopP() != 0.95 || a.GetTopK() != 0 || a.GetMaxTokens() != 3 || !a.GetIgnoreEos() || b.GetTopK() != 5 {
		t.Fatalf("sampling sent: %v; %v", a, b)
	}
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return false }
