package coordinator

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemllm/tandem/metrics"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// testRequest is an admitted request with no group holding it, whose
// messages are collected.
func testRequest(t *testing.T, m *modelInfo, s *tandemv1.SamplingParams) (*request, *[]*tandemv1.GenerateResponse) {
	var sent []*tandemv1.GenerateResponse
	ctx, cancel := context.WithCancelCause(t.Context())
	t.Cleanup(func() { cancel(nil) })
	arrival := time.Now().Add(-time.Second)
	r := &request{
		c: &Coordinator{model: m, metrics: metrics.NewCoordinator(prometheus.NewRegistry(), m.name)}, p: &prepared{id: "req", prompt: []int32{1, 2, 3}, sampling: s}, sampling: s,
		arrival: arrival, last: arrival, client: t.Context(), ctx: ctx, cancel: cancel,
		send:  func(m *tandemv1.GenerateResponse) error { sent = append(sent, m); return nil },
		text:  newTextStream(m.tok, s.Stop),
		trace: &traceRecord{id: "req"},
	}
	return r, &sent
}

// testGroup is the group the tests' tokens come from.
var testGroup = &groupState{name: "decode-0"}

func TestRequestStopString(t *testing.T) {
	m := tinyModel(t)
	ids := m.tok.Encode("Hello world again", false)
	if len(ids) != 3 {
		t.Fatalf("tokens %v", ids)
	}
	r, sent := testRequest(t, m, &tandemv1.SamplingParams{Stop: []string{" wor"}, Logprobs: true})
	lps := make([]*tandemv1.TokenLogprobs, len(ids))
	for i, id := range ids {
		lps[i] = &tandemv1.TokenLogprobs{Chosen: &tandemv1.Logprob{TokenId: id, Logprob: -1}}
	}
	msg, stopped := r.batch(testGroup, ids, lps, nil)
	if !stopped || !slices.Equal(msg.TokenIds, ids[:2]) || msg.Text != "Hello" || len(msg.Timings) != 2 || len(msg.Logprobs) != 2 {
		t.Fatalf("batch: stopped %v, %v", stopped, msg)
	}
	if tm := msg.Timings[0]; tm.SinceStartUs < 1e6 || tm.SincePreviousUs != tm.SinceStartUs || msg.Timings[1].SincePreviousUs != 0 {
		t.Errorf("timings %v", msg.Timings)
	}
	if lp := msg.Logprobs[1].Chosen; lp.Text != " world" || string(lp.TokenBytes) != " world" {
		t.Errorf("logprob text %q bytes %q", lp.Text, lp.TokenBytes)
	}
	if err := r.finish(msg, tandemv1.FinishReason_FINISH_REASON_STOP, ""); err != nil {
		t.Fatal(err)
	}
	last := (*sent)[0]
	if last.RequestId != "req" || last.FinishReason != tandemv1.FinishReason_FINISH_REASON_STOP || last.Text != "Hello" ||
		last.Usage.GetPromptTokens() != 3 || last.Usage.GetCompletionTokens() != 2 {
		t.Errorf("last message %v", last)
	}
}

func TestRequestFinishReleasesHeldText(t *testing.T) {
	m := tinyModel(t)
	r, sent := testRequest(t, m, &tandemv1.SamplingParams{Stop: []string{"again and"}})
	msg, stopped := r.batch(testGroup, m.tok.Encode("Hello world again", false), nil, nil)
	if stopped || msg.Text != "Hello world " || msg.Logprobs != nil {
		t.Fatalf("batch: %v", msg)
	}
	if err := r.finish(&tandemv1.GenerateResponse{}, tandemv1.FinishReason_FINISH_REASON_LENGTH, ""); err != nil {
		t.Fatal(err)
	}
	if last := (*sent)[0]; last.Text != "again" || last.FinishReason != tandemv1.FinishReason_FINISH_REASON_LENGTH || last.Usage.GetCompletionTokens() != 3 {
		t.Errorf("last message %v", last)
	}
}

func TestRequestEnds(t *testing.T) {
	m := tinyModel(t)
	tests := []struct {
		name    string
		tokens  bool
		cancel  func(r *request, g *groupState, clientCancel context.CancelFunc)
		err     error
		migrate string // the failure moves the request, for this reason
		code    codes.Code
		msg     string
		finish  tandemv1.FinishReason
		lastMsg string
	}{
		{name: "worker died", err: status.Error(codes.Unavailable, "connection refused"), migrate: metrics.MigrationUnavailable},
		{name: "worker died after tokens", tokens: true, err: status.Error(codes.Unavailable, "eof"), migrate: metrics.MigrationUnavailable},
		{name: "worker aborted it", tokens: true, err: status.Error(codes.Aborted, "request aborted"), migrate: metrics.MigrationAborted},
		{name: "worker refused", err: status.Error(codes.ResourceExhausted, "queue full"), code: codes.ResourceExhausted, msg: `group "d": queue full`},
		{name: "worker failed after tokens", tokens: true, err: status.Error(codes.Internal, "boom"),
			finish: tandemv1.FinishReason_FINISH_REASON_ERROR, lastMsg: `group "d": Internal: boom`},
		{name: "stream ended early", err: io.EOF, migrate: metrics.MigrationStreamEnded},
		{name: "timeout", tokens: true, cancel: func(r *request, _ *groupState, _ context.CancelFunc) { r.cancel(errTimeout) }, err: status.Error(codes.Canceled, "x"),
			finish: tandemv1.FinishReason_FINISH_REASON_TIMEOUT},
		{name: "client cancelled", cancel: func(r *request, _ *groupState, cc context.CancelFunc) { cc(); r.cancel(context.Canceled) }, err: status.Error(codes.Canceled, "x"), code: codes.Canceled},
		{name: "group left", cancel: func(r *request, g *groupState, _ context.CancelFunc) {
			g.leave(errors.New(`group "d" left the cluster`))
			<-r.att.ctx.Done() // the worker call returns once the attempt has ended
		},
			err: status.Error(codes.Canceled, "x"), migrate: metrics.MigrationGroupLeft},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, sent := testRequest(t, m, &tandemv1.SamplingParams{})
			client, clientCancel := context.WithCancel(t.Context())
			defer clientCancel()
			r.client = client
			g := testGroupState(t, "d")
			a := r.newAttempt(1, route{whole: g})
			if tt.tokens {
				r.batch(testGroup, m.tok.Encode("Hi", false), nil, nil)
			}
			if tt.cancel != nil {
				tt.cancel(r, g, clientCancel)
			}
			err := r.fail(a, g, tt.err)
			var f *groupFailure
			switch {
			case tt.migrate != "":
				if !errors.As(err, &f) || f.reason != tt.migrate || f.g != g {
					t.Fatalf("err %v, want a failure of group d for migration (%s)", err, tt.migrate)
				}
			case tt.finish != tandemv1.FinishReason_FINISH_REASON_UNSPECIFIED:
				if err != nil || len(*sent) != 1 {
					t.Fatalf("err %v, sent %v", err, *sent)
				}
				last := (*sent)[0]
				if last.FinishReason != tt.finish || last.ErrorMessage != tt.lastMsg || last.Text != "" || last.RequestId != "req" {
					t.Errorf("last message %v", last)
				}
			case status.Code(err) != tt.code || !strings.Contains(status.Convert(err).Message(), tt.msg) || len(*sent) != 0:
				t.Errorf("err %v, sent %v; want %v %q", err, *sent, tt.code, tt.msg)
			}
		})
	}
}

// testGroupState is a group that stays in the cluster until the test ends
// or it is made to leave.
func testGroupState(t *testing.T, name string) *groupState {
	g := &groupState{name: name}
	g.ctx, g.leave = context.WithCancelCause(t.Context())
	t.Cleanup(func() { g.leave(nil) })
	return g
}

func TestWorkerCode(t *testing.T) {
	for in, want := range map[codes.Code]codes.Code{
		codes.InvalidArgument: codes.InvalidArgument, codes.ResourceExhausted: codes.ResourceExhausted,
		codes.Unavailable: codes.Unavailable, codes.DeadlineExceeded: codes.DeadlineExceeded,
		codes.Canceled: codes.Unavailable, codes.Aborted: codes.Unavailable,
		codes.NotFound: codes.Internal, codes.AlreadyExists: codes.Internal, codes.FailedPrecondition: codes.Internal,
	} {
		if got := workerCode(in); got != want {
			t.Errorf("worker %v: client gets %v, want %v", in, got, want)
		}
	}
}
