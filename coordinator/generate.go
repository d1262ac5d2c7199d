package coordinator

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"sync"
	"time"

	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tandemllm/tandem/metrics"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
	"github.com/tandemllm/tandem/telemetry"
)

// abortTimeout bounds a Worker.Abort call, made on a fresh context since
// the request's own has usually ended.
const abortTimeout = 5 * time.Second

// errTimeout is the cause of a request's end when its
// GenerateRequest.timeout passes.
var errTimeout = errors.New("request timeout passed")

// generate runs one request from validation to its last message: the
// path both the gRPC and the HTTP APIs take. send receives the messages
// of GenerateResponse's stream. Errors are gRPC statuses; invalid
// requests are *fieldError, which are INVALID_ARGUMENT statuses too.
// fillMaxTokens: see modelInfo.prepare.
func (c *Coordinator) generate(ctx context.Context, req *tandemv1.GenerateRequest, fillMaxTokens bool, send func(*tandemv1.GenerateResponse) error) error {
	arrival := time.Now()
	ctx, span := c.tracer.Start(ctx, "tandem.request", trace.WithTimestamp(arrival), trace.WithAttributes(
		telemetry.Operation(telemetry.OperationTextCompletion), telemetry.ProviderName(telemetry.ProviderTandem)))
	defer span.End()
	c.metrics.RequestArrived()
	p, err := c.model.prepare(req, fillMaxTokens)
	if err != nil {
		c.metrics.Rejected(metrics.RejectInvalid)
		return spanError(span, err)
	}
	if p.id == "" {
		p.id = rand.Text()
	}
	span.SetAttributes(telemetry.RequestID(p.id), telemetry.ResponseID(p.id))
	span.SetAttributes(telemetry.RequestAttrs(c.model.name, int(p.sampling.GetMaxTokens()), p.sampling.GetTemperature(), p.sampling.GetTopP(), int(p.sampling.GetTopK()))...)
	span.SetAttributes(telemetry.UsageAttrs(len(p.prompt), 0)...)
	release, err := c.admit(p.id)
	if err != nil {
		c.metrics.Rejected(rejectReason(err))
		return spanError(span, err)
	}
	defer release()
	rt, err := c.pickRoute(p.prompt, nil, false)
	if err != nil {
		c.metrics.Rejected(metrics.RejectUnavailable)
		return spanError(span, err)
	}
	routed := time.Now()
	c.metrics.RequestStarted(routed.Sub(arrival))
	_, queue := c.tracer.Start(ctx, "queue", trace.WithTimestamp(arrival))
	queue.End(trace.WithTimestamp(routed))
	rec := &traceRecord{id: p.id, model: c.model.name, arrival: arrival, tokenize: p.tokenize, prompt: len(p.prompt)}
	rec.prefill, rec.decode = rt.names()
	c.history.add(rec)
	// A request that ends without its finish message (an error, a
	// cancelled client) is closed here; finish closes it first otherwise.
	refused := false // a group refused it before any token
	defer func() {
		rec.close(tandemv1.FinishReason_FINISH_REASON_ERROR)
		if refused {
			c.metrics.Refused(metrics.RejectOverloaded)
			return
		}
		c.finished(span, rec)
	}()
	if err := send(&tandemv1.GenerateResponse{RequestId: p.id, PromptTokenIds: p.prompt, TokenizeUs: p.tokenize.Microseconds()}); err != nil {
		return err
	}

	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if p.timeout > 0 {
		t := time.AfterFunc(time.Until(arrival.Add(p.timeout)), func() { cancel(errTimeout) })
		defer t.Stop()
	}
	// Workers leave stop strings to the coordinator (they do not
	// detokenize), so they do not get them. Every attempt of a request
	// samples with one seed (drawn here when the client gave none), so a
	// request that moves to other groups goes on as it would have.
	toWorker := proto.CloneOf(p.sampling)
	toWorker.Stop = nil
	if toWorker.Seed == nil {
		seed := mathrand.Uint64()
		toWorker.Seed = &seed
	}
	r := &request{
		c: c, p: p, sampling: toWorker, arrival: arrival, last: arrival,
		client: ctx, ctx: runCtx, cancel: cancel, send: send,
		text:  newTextStream(c.model.tok, p.sampling.Stop),
		trace: rec,
	}
	defer r.abortPending("request ended")
	err = r.run(rt)
	refused = status.Code(err) == codes.ResourceExhausted && len(r.output) == 0
	return spanError(span, err)
}

// finished records a request's end in the metrics and its span.
func (c *Coordinator) finished(span trace.Span, rec *traceRecord) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	n := len(rec.tokens)
	reason := finishName(rec.finish)
	c.metrics.RequestFinished(rec.end.Sub(rec.arrival), rec.prompt, n, reason, rec.tpot())
	span.SetAttributes(telemetry.UsageAttrs(rec.prompt, n)...)
	span.SetAttributes(telemetry.FinishReasons(reason))
}

// finishName is a finish reason as the metrics label it: its wire name,
// which the metrics package's Finish* labels spell the same way.
func finishName(r tandemv1.FinishReason) string {
	if r == tandemv1.FinishReason_FINISH_REASON_UNSPECIFIED {
		return metrics.FinishError
	}
	return r.Name()
}

// rejectReason names why admission refused a request.
func rejectReason(err error) string {
	if status.Code(err) == codes.AlreadyExists {
		return metrics.RejectDuplicate
	}
	return metrics.RejectQueueFull
}

// spanError marks span failed when err is not nil, and returns err.
func spanError(span trace.Span, err error) error {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(otelcodes.Error, err.Error())
	}
	return err
}

// admit counts a request in flight, refusing it when MaxInFlight are
// already admitted or its id is in use.
func (c *Coordinator) admit(id string) (release func(), err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, dup := c.inflight[id]; dup {
		return nil, status.Errorf(codes.AlreadyExists, "request_id: a request with id %q is in flight", id)
	}
	if len(c.inflight) >= c.opts.MaxInFlight {
		return nil, status.Errorf(codes.ResourceExhausted, "coordinator has %d requests in flight, its limit; retry later", len(c.inflight))
	}
	c.inflight[id] = struct{}{}
	return func() {
		c.mu.Lock()
		delete(c.inflight, id)
		c.mu.Unlock()
	}, nil
}

// request is one admitted request while it runs on workers.
type request struct {
	c        *Coordinator
	p        *prepared
	sampling *tandemv1.SamplingParams // what workers get, for the whole request
	arrival  time.Time
	last     time.Time // when the previous token reached the coordinator
	client   context.Context
	ctx      context.Context // the worker calls': ends with client, timeout or the request's end
	cancel   context.CancelCauseFunc
	send     func(*tandemv1.GenerateResponse) error
	text     *textStream
	trace    *traceRecord
	output   []int32  // tokens sent to the client, in order
	att      *attempt // the attempt running
	// Migration state (see migrate.go).
	migrations   int
	firstFailure time.Time
	failed       map[*groupState]bool // groups that failed the request: not tried again
}

// run runs the request on rt and, each time a group fails it, on other
// groups, until it ends.
func (r *request) run(rt route) error {
	for n := 1; ; n++ {
		err := r.runAttempt(n, rt)
		var f *groupFailure
		if !errors.As(err, &f) {
			return err
		}
		if rt, err = r.migrate(f, n+1); err != nil {
			return err
		}
	}
}

// runAttempt runs attempt n of the request on rt. A group failing it is
// returned as a *groupFailure.
func (r *request) runAttempt(n int, rt route) error {
	a := r.newAttempt(n, rt)
	defer a.stopLeaves()
	defer r.c.ended(rt)
	if q := r.c.opts.QueueTimeout; q > 0 && n == 1 {
		left := q - time.Since(r.arrival)
		if left <= 0 {
			return status.Errorf(codes.ResourceExhausted, "the request waited %v, past the coordinator's --queue-timeout, before reaching a group; retry later", q)
		}
		a.queueTimeout = durationpb.New(left)
	}
	if rt.whole != nil {
		return r.runWhole(a, rt.whole, rt.wholeSent)
	}
	return r.runDisaggregated(a, rt)
}

func (r *request) runWhole(a *attempt, g *groupState, s *sent) error {
	a.pending = []*groupState{g}
	ctx, span := r.c.tracer.Start(a.ctx, "generate", trace.WithAttributes(telemetry.Group(g.name)))
	defer span.End()
	stream, err := g.client.Generate(ctx, &tandemv1.WorkerGenerateRequest{
		RequestId: a.id, PromptTokenIds: a.prompt, Sampling: a.sampling, QueueTimeout: a.queueTimeout,
	})
	if err != nil {
		return r.fail(a, g, err)
	}
	running := sync.OnceFunc(func() { r.c.running(s) })
	return relay(r, a, g, func() (*tandemv1.WorkerGenerateResponse, error) {
		m, err := stream.Recv()
		if err == nil {
			running()
		}
		return m, err
	})
}

func (r *request) runDisaggregated(a *attempt, rt route) error {
	pre, dec := rt.prefill, rt.decode
	// The decode group may hold KV as soon as the prefill starts.
	a.pending = []*groupState{pre, dec}
	pctx, pspan := r.c.tracer.Start(a.ctx, "prefill", trace.WithAttributes(telemetry.Group(pre.name)))
	resp, err := pre.client.Prefill(pctx, &tandemv1.PrefillRequest{
		RequestId: a.id, PromptTokenIds: a.prompt, Sampling: a.sampling,
		Destination: rt.destination, Attempt: uint32(a.n), QueueTimeout: a.queueTimeout,
	})
	r.c.answered(rt.prefillSent)
	spanError(pspan, err)
	pspan.End()
	if err != nil {
		return r.fail(a, pre, err)
	}
	a.done(pre)
	var lps []*tandemv1.TokenLogprobs
	if resp.Logprobs != nil {
		lps = append(lps, resp.Logprobs)
	}
	msg, stopped := r.batch(pre, []int32{resp.TokenId}, lps, []*tandemv1.TokenTiming{resp.Timing})
	switch {
	case stopped:
		return r.finish(msg, tandemv1.FinishReason_FINISH_REASON_STOP, "")
	case resp.FinishReason != tandemv1.FinishReason_FINISH_REASON_UNSPECIFIED:
		// No Decode follows; the decode group is aborted to drop the KV
		// it received.
		return r.finish(msg, resp.FinishReason, "")
	}
	if err := r.emit(msg); err != nil {
		return err
	}
	dctx, dspan := r.c.tracer.Start(a.ctx, "decode", trace.WithAttributes(telemetry.Group(dec.name)))
	defer dspan.End()
	stream, err := dec.client.Decode(dctx, &tandemv1.DecodeRequest{
		RequestId: a.id, PromptTokenIds: a.prompt, FirstTokenId: resp.TokenId,
		Sampling: a.sampling, Kv: resp.Kv,
	})
	if err != nil {
		return r.fail(a, dec, err)
	}
	// Until the decode group's first message its KV may still be on its
	// way from the prefill group, which must not leave meanwhile: the
	// decode group would wait out its KV timeout. After it, the prefill
	// group has no part in the request any more.
	prefillDone := sync.OnceFunc(func() {
		a.stopLeave(pre)
		r.c.running(rt.decodeSent)
	})
	return relay(r, a, dec, func() (*tandemv1.DecodeResponse, error) {
		m, err := stream.Recv()
		if err == nil {
			prefillDone()
		}
		return m, err
	})
}

// workerMessage is what DecodeResponse and WorkerGenerateResponse share.
type workerMessage interface {
	GetTokenIds() []int32
	GetLogprobs() []*tandemv1.TokenLogprobs
	GetTimings() []*tandemv1.TokenTiming
	GetFinishReason() tandemv1.FinishReason
	GetErrorMessage() string
}

// relay passes a worker's token stream on to the client until the request
// ends or g fails it.
func relay[M workerMessage](r *request, a *attempt, g *groupState, recv func() (M, error)) error {
	for {
		m, err := recv()
		if err != nil {
			return r.fail(a, g, err)
		}
		msg, stopped := r.batch(g, m.GetTokenIds(), m.GetLogprobs(), m.GetTimings())
		fin := m.GetFinishReason()
		if fin != tandemv1.FinishReason_FINISH_REASON_UNSPECIFIED {
			a.done(g)
		}
		switch {
		case stopped:
			return r.finish(msg, tandemv1.FinishReason_FINISH_REASON_STOP, "")
		case fin != tandemv1.FinishReason_FINISH_REASON_UNSPECIFIED:
			return r.finish(msg, fin, m.GetErrorMessage())
		}
		if err := r.emit(msg); err != nil {
			return err
		}
	}
}

// batch turns tokens a worker sent into a client message, one token at a
// time so that a stop string ends the request at the token completing it.
func (r *request) batch(g *groupState, ids []int32, lps []*tandemv1.TokenLogprobs, timings []*tandemv1.TokenTiming) (msg *tandemv1.GenerateResponse, stopped bool) {
	now := time.Now()
	msg = &tandemv1.GenerateResponse{}
	for i, id := range ids {
		var step uint64
		if i < len(timings) {
			step = timings[i].GetStep()
		}
		r.trace.token(id, now, g.name, step)
		if len(r.output) == 0 {
			r.c.metrics.FirstToken(now.Sub(r.arrival))
		} else {
			r.c.metrics.Token(now.Sub(r.last))
		}
		delta, stop := r.text.add(id)
		msg.TokenIds = append(msg.TokenIds, id)
		msg.Text += delta
		msg.Timings = append(msg.Timings, &tandemv1.TokenTiming{
			SinceStartUs:    now.Sub(r.arrival).Microseconds(),
			SincePreviousUs: now.Sub(r.last).Microseconds(),
		})
		r.last = now
		if r.p.sampling.Logprobs && i < len(lps) {
			msg.Logprobs = append(msg.Logprobs, r.c.model.fillLogprobs(lps[i]))
		}
		r.output = append(r.output, id)
		if stop {
			return msg, true
		}
	}
	return msg, false
}

// emit sends msg unless it carries nothing.
func (r *request) emit(msg *tandemv1.GenerateResponse) error {
	if len(msg.TokenIds) == 0 && msg.Text == "" {
		return nil
	}
	return r.send(msg)
}

// finish ends the request with msg as its last message: the text held
// back is released, groups that still hold the request are aborted
// first, then the message goes out with the finish reason and usage.
func (r *request) finish(msg *tandemv1.GenerateResponse, reason tandemv1.FinishReason, errMsg string) error {
	delta, stopped := r.text.finish()
	msg.Text += delta
	if stopped {
		reason, errMsg = tandemv1.FinishReason_FINISH_REASON_STOP, ""
	}
	r.cancel(errors.New("request finished"))
	r.abortPending(reason.String())
	r.trace.close(reason)
	msg.RequestId = r.p.id
	msg.FinishReason = reason
	msg.ErrorMessage = errMsg
	msg.Usage = &tandemv1.Usage{PromptTokens: int32(len(r.p.prompt)), CompletionTokens: int32(len(r.output))}
	return r.send(msg)
}

// abortPending aborts the request on every group of its attempt that may
// still hold it, on a fresh context since the request's own has usually
// ended.
func (r *request) abortPending(reason string) {
	a := r.att
	if a == nil || len(a.pending) == 0 {
		return
	}
	r.cancel(errors.New("request ended"))
	r.c.abort(context.WithoutCancel(r.client), a.id, a.pending, reason)
	a.pending = nil
}

// abort calls Worker.Abort for request id on groups, at once, and waits
// for them (abortTimeout at most).
func (c *Coordinator) abort(ctx context.Context, id string, groups []*groupState, reason string) {
	ctx, cancel := context.WithTimeout(ctx, abortTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, g := range groups {
		wg.Go(func() {
			if _, err := g.client.Abort(ctx, &tandemv1.AbortRequest{RequestId: id, Reason: reason}); err != nil {
				c.log.Debug("abort failed", "request", id, "group", g.name, "err", err)
			}
		})
	}
	wg.Wait()
}

// fail handles a worker call on g of attempt a that returned err: the
// request ends when it was over anyway (client gone, timeout); a group
// that failed it is returned as a *groupFailure, for a migration; other
// errors end the request.
func (r *request) fail(a *attempt, g *groupState, err error) error {
	if r.ctx.Err() != nil {
		return r.ended()
	}
	var left *groupLeft
	if errors.As(context.Cause(a.ctx), &left) {
		return &groupFailure{g: left.g, reason: metrics.MigrationGroupLeft, err: left.cause}
	}
	if errors.Is(err, io.EOF) {
		return &groupFailure{g: g, reason: metrics.MigrationStreamEnded, err: errors.New("the worker ended the stream without a finish reason")}
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.Unavailable:
		// The worker process is gone (or unreachable), or its group's
		// step failed.
		return &groupFailure{g: g, reason: metrics.MigrationUnavailable, err: err}
	case codes.Canceled, codes.Aborted:
		return &groupFailure{g: g, reason: metrics.MigrationAborted, err: err}
	}
	if len(r.output) > 0 {
		return r.finish(&tandemv1.GenerateResponse{}, tandemv1.FinishReason_FINISH_REASON_ERROR,
			fmt.Sprintf("group %q: %s: %s", g.name, st.Code(), st.Message()))
	}
	return status.Errorf(workerCode(st.Code()), "group %q: %s", g.name, st.Message())
}

// workerCode is the code a client gets for a worker's error: the worker's
// own for what the client can act on (a bad request, a full group), and
// otherwise UNAVAILABLE or INTERNAL: a worker's NOT_FOUND or CANCELLED
// says nothing about the client's request.
func workerCode(c codes.Code) codes.Code {
	switch c {
	case codes.InvalidArgument, codes.ResourceExhausted, codes.Unavailable, codes.DeadlineExceeded:
		return c
	case codes.Canceled, codes.Aborted:
		return codes.Unavailable
	}
	return codes.Internal
}

// ended ends a request whose worker calls were cancelled: by its timeout
// (a normal end with the tokens so far) or by the client.
func (r *request) ended() error {
	cause := context.Cause(r.ctx)
	switch {
	case errors.Is(cause, errTimeout):
		return r.finish(&tandemv1.GenerateResponse{}, tandemv1.FinishReason_FINISH_REASON_TIMEOUT, "")
	case r.client.Err() != nil:
		return status.FromContextError(r.client.Err()).Err()
	}
	return status.Errorf(codes.Unavailable, "%v", cause)
}
