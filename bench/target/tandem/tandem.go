// Package tandem is a bench.Target for a Tandem coordinator's gRPC
// Generation API: each request streams its tokens, is filed under the
// bench's request id (so its trace can be fetched by it), and reports the
// prompt length the coordinator tokenized.
//
// It imports bench and the generated proto package; never the
// coordinator, worker or engine.
package tandem

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tandemllm/tandem/bench"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// Target sends requests to one coordinator.
type Target struct {
	addr  string
	model string
	conn  *grpc.ClientConn
	gen   tandemv1.GenerationClient
}

var _ bench.Target = (*Target)(nil)

// New connects (lazily) to the coordinator's gRPC address; model is the
// model requests name ("" for the cluster's only model). dial is added to
// the connection's options: TLS credentials replace plain TCP, per-call
// credentials carry an API key.
func New(addr, model string, dial ...grpc.DialOption) (*Target, error) {
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, dial...)...)
	if err != nil {
		return nil, fmt.Errorf("--addr %q: %w", addr, err)
	}
	return &Target{addr: addr, model: model, conn: conn, gen: tandemv1.NewGenerationClient(conn)}, nil
}

// Conn is the connection, for the coordinator's other services (traces).
func (t *Target) Conn() *grpc.ClientConn { return t.conn }

// Close closes the connection.
func (t *Target) Close() error { return t.conn.Close() }

// Model lists the cluster's models and returns the asked one, or the
// first, which later requests then name; it fails when the coordinator
// cannot be reached within 10 s. Call it before Send.
func (t *Target) Model(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := t.gen.ListModels(ctx, &tandemv1.ListModelsRequest{}, grpc.WaitForReady(false))
	if err != nil {
		return "", fmt.Errorf("--addr %s: %w", t.addr, statusError(err))
	}
	ms := resp.GetModels()
	if len(ms) == 0 {
		return "", fmt.Errorf("--addr %s: the cluster serves no model", t.addr)
	}
	if t.model == "" {
		t.model = ms[0].GetId()
		return t.model, nil
	}
	for _, m := range ms {
		if m.GetId() == t.model {
			return t.model, nil
		}
	}
	return "", fmt.Errorf("--model %q: the cluster at %s serves %s", t.model, t.addr, ms[0].GetId())
}

// Send runs one Generate stream.
func (t *Target) Send(ctx context.Context, r bench.Request) bench.Output {
	out := bench.Output{RequestID: r.ID, PromptLen: r.PromptLen, Start: time.Now()}
	stream, err := t.gen.Generate(ctx, &tandemv1.GenerateRequest{
		Model: t.model, Prompt: &tandemv1.GenerateRequest_Text{Text: r.Prompt}, RequestId: r.ID,
		Sampling: &tandemv1.SamplingParams{MaxTokens: int32(r.MaxTokens), IgnoreEos: r.IgnoreEOS},
	})
	if err != nil {
		return fail(out, err)
	}
	last := out.Start
	var text []byte
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fail(out, err)
		}
		now := time.Now()
		if id := msg.GetRequestId(); id != "" {
			out.RequestID = id
		}
		if ids := msg.GetPromptTokenIds(); len(ids) > 0 {
			out.PromptLen = len(ids)
		}
		text = append(text, msg.GetText()...)
		if n := len(msg.GetTokenIds()); n > 0 {
			if out.OutputTokens == 0 {
				out.TTFT = now.Sub(out.Start)
			} else {
				out.ITL = append(out.ITL, now.Sub(last))
			}
			out.OutputTokens += n
			last = now
		}
		switch fr := msg.GetFinishReason(); fr {
		case tandemv1.FinishReason_FINISH_REASON_UNSPECIFIED, tandemv1.FinishReason_FINISH_REASON_STOP, tandemv1.FinishReason_FINISH_REASON_LENGTH:
		default:
			out.Code = fr.String()
			out.Error = fmt.Sprintf("finished with %s: %s", fr, msg.GetErrorMessage())
		}
		if u := msg.GetUsage(); u != nil && u.GetCompletionTokens() > 0 {
			out.OutputTokens = int(u.GetCompletionTokens())
		}
	}
	out.Text = string(text)
	out.Latency = last.Sub(out.Start)
	switch {
	case out.Code != "":
	case out.OutputTokens == 0:
		out.Code, out.Error = "NO_OUTPUT", "the stream ended without a token"
	default:
		out.Success = true
	}
	return out
}

func fail(out bench.Output, err error) bench.Output {
	s := status.Convert(err)
	out.Code, out.Error = codeName(s.Code()), s.Message()
	return out
}

// statusError words a gRPC error with its code.
func statusError(err error) error {
	s := status.Convert(err)
	return fmt.Errorf("%s: %s", codeName(s.Code()), s.Message())
}

// codeName is a status code's canonical name, RESOURCE_EXHAUSTED for
// codes.ResourceExhausted (whose String is "ResourceExhausted").
func codeName(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if unicode.IsUpper(r) && i > 0 {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}
