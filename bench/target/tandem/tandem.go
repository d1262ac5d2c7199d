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
		return "", t.modelsError(err)
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
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.GetId()
	}
	return "", fmt.Errorf("--model %q: %w by the cluster at %s, which serves %s", t.model, bench.ErrUnknownModel, t.addr, strings.Join(ids, ", "))
}

// modelsError words a failed ListModels: unreachable (nothing answered
// in time), a refused key, or another status.
func (t *Target) modelsError(err error) error {
	s := status.Convert(err)
	switch s.Code() {
	case codes.Unavailable, codes.DeadlineExceeded:
		return fmt.Errorf("--addr %s: %w: %s: %s", t.addr, bench.ErrUnreachable, codeName(s.Code()), s.Message())
	case codes.Unauthenticated, codes.PermissionDenied:
		return fmt.Errorf("--addr %s: %s: %s (give the cluster's key with --api-key or $TANDEM_API_KEY)", t.addr, codeName(s.Code()), s.Message())
	}
	return fmt.Errorf("--addr %s: %s: %s", t.addr, codeName(s.Code()), s.Message())
}

// Send runs one Generate stream.
func (t *Target) Send(ctx context.Context, r bench.Request) bench.Output {
	out := bench.Output{RequestID: r.ID, PromptLen: r.PromptLen, Start: time.Now()}
	stream, err := t.gen.Generate(ctx, &tandemv1.GenerateRequest{
		Model: t.model, Prompt: &tandemv1.GenerateRequest_Text{Text: r.Prompt}, RequestId: r.ID,
		Sampling: sampling(r),
	})
	if err != nil {
		return fail(out, err)
	}
	last := out.Start
	var text []byte
	finished := false // a message with a finish reason came
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
		case tandemv1.FinishReason_FINISH_REASON_UNSPECIFIED:
		case tandemv1.FinishReason_FINISH_REASON_STOP, tandemv1.FinishReason_FINISH_REASON_LENGTH:
			finished = true
		default:
			finished = true
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
	case !finished:
		out.Code, out.Error = "INCOMPLETE", fmt.Sprintf("the stream ended after %d tokens without a finish reason", out.OutputTokens)
	default:
		out.Success = true
	}
	return out
}

// sampling is the request's sampling parameters; those not given keep
// the proto's zero values, the cluster's defaults.
func sampling(r bench.Request) *tandemv1.SamplingParams {
	p := &tandemv1.SamplingParams{MaxTokens: int32(r.MaxTokens), IgnoreEos: r.IgnoreEOS}
	if r.Temperature != nil {
		p.Temperature = *r.Temperature
	}
	if r.TopP != nil {
		p.TopP = *r.TopP
	}
	if r.TopK != nil && *r.TopK > 0 {
		p.TopK = int32(*r.TopK) // vLLM's -1 (all) is the proto's 0
	}
	return p
}

func fail(out bench.Output, err error) bench.Output {
	s := status.Convert(err)
	out.Code, out.Error = codeName(s.Code()), s.Message()
	return out
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
