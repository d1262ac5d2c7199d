package bench

import (
	"context"
	"errors"
	"time"
)

// Errors a Target's Model wraps, so that callers word them rightly: the
// server could not be reached, or it answered but does not serve the
// asked model.
var (
	ErrUnreachable  = errors.New("unreachable")
	ErrUnknownModel = errors.New("model not served")
)

// Sampling holds the sampling parameters sent with every request
// (--temperature, --top-p, --top-k); a nil field is left to the server.
type Sampling struct {
	Temperature, TopP *float64
	TopK              *int
}

// Request is one request of a load test.
type Request struct {
	// ID is the request id to file the request under on the server, so
	// its trace can be found by it.
	ID string
	// Prompt is the text sent; PromptLen its length in tokens as the
	// workload counted it.
	Prompt    string
	PromptLen int
	// MaxTokens is the most tokens to generate.
	MaxTokens int
	// IgnoreEOS asks the server to generate MaxTokens tokens whatever it
	// samples.
	IgnoreEOS bool
	Sampling
}

// Output is what a Target measured of one request, as vllm bench serve's
// request functions measure it.
type Output struct {
	// Success is true when the request streamed at least one token and
	// ended without error.
	Success bool
	// Error says what failed ("" on success); Code is its class: a gRPC
	// status code name, "HTTP 429", or the finish reason that ended a
	// stream early.
	Error, Code string
	// RequestID is the id the server filed the request under.
	RequestID string
	// Start is when the request was sent.
	Start time.Time
	// PromptLen is the prompt's length as the server counted it (the
	// workload's count when the server does not say).
	PromptLen int
	// OutputTokens is the number of tokens generated.
	OutputTokens int
	// TTFT is the time from sending to the first chunk carrying output;
	// ITL the time between successive such chunks; Latency the time from
	// sending to the last one.
	TTFT    time.Duration
	ITL     []time.Duration
	Latency time.Duration
	// Text is the generated text.
	Text string
}

// Target serves requests. Implementations must be safe for concurrent
// use.
type Target interface {
	// Model names the model the target serves (the first when it serves
	// several); an error means the target cannot be reached or answers
	// wrongly.
	Model(ctx context.Context) (string, error)
	// Send runs one request to its end and reports what it measured;
	// failures are reported in the Output. A cancelled ctx ends the
	// request.
	Send(ctx context.Context, r Request) Output
}
