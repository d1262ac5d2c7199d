package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/engine"
	"github.com/tandemllm/tandem/metrics"
	"github.com/tandemllm/tandem/nccl"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
	"github.com/tandemllm/tandem/telemetry"
)

// errGroupDown ends every request in flight when the group's step fails
// (a rank died, a collective broke): the coordinator sees UNAVAILABLE.
var errGroupDown = errors.New("worker: group is down")

// live is a request the leader's loop is running. The loop owns it; the
// RPC goroutine reads out until it is closed, then err.
type live struct {
	out   chan engine.Output // capacity: every output the request can have
	err   error              // why out was closed early, if it was
	start time.Time          // first step that scheduled the request
	done  time.Time          // when its last (or, on prefill, only) output came
	// queueBy is when the request, not yet scheduled, is dropped with
	// RESOURCE_EXHAUSTED; zero: never.
	queueBy time.Time
	span    trace.SpanContext // the request's span here, which step spans link to
	// send, on a prefill, is where its KV goes; the push starts when the
	// step computing the prompt's last chunk is scheduled.
	send *tandemv1.SendKVRequest
}

// leader is rank 0's side of a group: the scheduler loop and the Worker
// service.
type leader struct {
	tandemv1.UnimplementedWorkerServer
	w    *Worker
	e    *engine.Engine
	cmds chan func()
	dead chan struct{} // closed when the loop ends
	err  error         // why it ended; read after dead is closed
	reqs map[string]*live
	// ranks are this group's ranks, by rank ([0] is local). Set before
	// the loop starts and read only by code the loop runs or calls after
	// a command went through it.
	ranks []rankAPI

	metrics *metrics.Worker
	events  *kvEvents
	loadMu  sync.Mutex
	load    groupLoad
	tracer  trace.Tracer
	spans   bool // spans are exported: worth building step spans and links

	mu      sync.Mutex
	sending map[string]context.CancelFunc // KV pushes in flight, by request
	loading map[string]context.CancelFunc // KV waits in flight, by request
}

func newLeader(w *Worker, e *engine.Engine) *leader {
	return &leader{
		w: w, e: e, cmds: make(chan func()), dead: make(chan struct{}),
		reqs: map[string]*live{}, sending: map[string]context.CancelFunc{}, loading: map[string]context.CancelFunc{},
	}
}

// onStep notes when each request was first scheduled (its queue wait)
// and, when spans are exported, records
// the step as a span linked to every request it served.
func (l *leader) onStep(rec *engine.StepRecord) {
	var links []trace.Link
	for _, s := range rec.Seqs {
		lv := l.reqs[s.RequestID]
		if lv == nil {
			continue
		}
		if lv.start.IsZero() {
			lv.start = rec.Start
		}
		if l.spans && lv.span.IsValid() {
			links = append(links, telemetry.LinkTo(lv.span))
		}
	}
	if !l.spans {
		return
	}
	span := telemetry.StepSpan(context.Background(), l.tracer, rec.Start, links, telemetry.StepAttrs(rec.Step, rec.PrefillTokens, rec.DecodeTokens)...)
	var n, bytes int
	for _, c := range rec.Collectives {
		if c.Kind == nccl.KindAllReduce {
			n, bytes = n+1, bytes+c.Bytes
		}
	}
	span.SetAttributes(telemetry.AllreduceAttrs(n, int64(bytes))...)
	span.SetAttributes(telemetry.Group(l.w.opts.Group), telemetry.Rank(0))
	span.End(trace.WithTimestamp(rec.Start.Add(rec.Schedule + rec.Compute + rec.Sample)))
}

// pastSpan records a span of ctx's request that has already ended.
func (l *leader) pastSpan(ctx context.Context, name string, from, to time.Time, attrs ...attribute.KeyValue) {
	if !l.spans {
		return
	}
	_, s := l.tracer.Start(ctx, name, trace.WithTimestamp(from), trace.WithAttributes(attrs...))
	s.End(trace.WithTimestamp(to))
}

// run is the scheduler loop: commands between steps, steps while there is
// work. It returns when ctx ends or a step fails, failing every request.
func (l *leader) run(ctx context.Context) error {
	defer close(l.dead)
	for {
		l.publishLoad()
		if !l.e.HasWork() {
			select {
			case f := <-l.cmds:
				f()
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			l.err = ctx.Err()
			l.failAll()
			return nil
		}
		for drained := false; !drained; {
			select {
			case f := <-l.cmds:
				f()
			default:
				drained = true
			}
		}
		l.expireQueued(time.Now())
		if !l.e.HasWork() {
			continue
		}
		// A step runs to its end even when ctx ends meanwhile, so the
		// other ranks, in the same step, are not left mid-collective.
		outs, err := l.e.Step(context.WithoutCancel(ctx))
		if err != nil {
			l.err = fmt.Errorf("%w: group %s step failed: %v", errGroupDown, l.w.opts.Group, err)
			l.failAll()
			return l.err
		}
		now := time.Now()
		for _, o := range outs {
			lv := l.reqs[o.RequestID]
			if lv == nil {
				continue
			}
			lv.done = now
			lv.out <- o
			if o.FinishReason != "" {
				delete(l.reqs, o.RequestID)
				close(lv.out)
			}
		}
	}
}

// expireQueued drops the requests still waiting for their first step
// past their queue deadline: their callers get RESOURCE_EXHAUSTED, as for
// a request the group cannot take. It runs on the loop before every step.
func (l *leader) expireQueued(now time.Time) {
	for id, lv := range l.reqs {
		if lv.queueBy.IsZero() || !lv.start.IsZero() || now.Before(lv.queueBy) {
			continue
		}
		delete(l.reqs, id)
		lv.err = status.Errorf(codes.ResourceExhausted, "group %s is overloaded: the request waited past its queue timeout for its first step", l.w.opts.Group)
		close(lv.out)
		_ = l.e.Abort(id)
	}
}

// queueDeadline is when a request received at recv is dropped if it is
// still queued (zero when d is unset).
func queueDeadline(recv time.Time, d *durationpb.Duration) (time.Time, error) {
	if d == nil {
		return time.Time{}, nil
	}
	if err := d.CheckValid(); err != nil || d.AsDuration() <= 0 {
		return time.Time{}, status.Errorf(codes.InvalidArgument, "queue_timeout %v: must be a positive duration", d.AsDuration())
	}
	return recv.Add(d.AsDuration()), nil
}

// groupLoad is the group's load as Stats reports it, published by the
// loop so Stats need not wait for a long step to end.
type groupLoad struct {
	free, total, running, waiting, pendingPrefill int
	prefix                                        engine.PrefixStats
}

// publishLoad runs on the loop once per turn (so once per step): it
// updates the load Stats reports and the group's load metrics, and
// publishes the prefix cache's events.
func (l *leader) publishLoad() {
	free, total := l.e.KVBlocks()
	ld := l.e.Load()
	ps := l.e.PrefixStats()
	l.loadMu.Lock()
	l.load = groupLoad{free: free, total: total, running: ld.Running, waiting: ld.Waiting, pendingPrefill: ld.PendingPrefillTokens, prefix: ps}
	l.loadMu.Unlock()
	l.metrics.Requests(ld.Running, ld.Waiting)
	l.metrics.KVCache(free, total)
	l.metrics.PrefixCache(ps.Queries, ps.Hits, ps.CachedBlocks)
	l.events.publish(l.e.TakeKVEvents())
}

func (l *leader) failAll() {
	if l.err == nil || errors.Is(l.err, context.Canceled) {
		l.err = fmt.Errorf("%w: worker %s shutting down", errGroupDown, l.w.opts.Group)
	}
	for id, lv := range l.reqs {
		lv.err = l.err
		close(lv.out)
		delete(l.reqs, id)
	}
}

// do runs f on the loop between steps and returns its error.
func (l *leader) do(ctx context.Context, f func(e *engine.Engine) error) error {
	done := make(chan error, 1)
	select {
	case l.cmds <- func() { done <- f(l.e) }:
	case <-l.dead:
		return l.err
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-l.dead:
		return l.err
	}
}

// add queues a request on the loop with its live state.
func (l *leader) add(ctx context.Context, id string, lv *live, add func(e *engine.Engine) error) error {
	return l.do(ctx, func(e *engine.Engine) error {
		if err := add(e); err != nil {
			return err
		}
		l.reqs[id] = lv
		return nil
	})
}

// abort ends a request on the loop; it survives the caller's context.
// While the request's KV is being moved (pushed from a prefill, loaded
// into a decode's reserved blocks), the move is stopped instead and its
// goroutine releases the blocks once no rank touches them any more.
func (l *leader) abort(id string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	aborted := false
	_ = l.do(ctx, func(e *engine.Engine) error {
		if lv := l.reqs[id]; lv != nil {
			delete(l.reqs, id)
			lv.err = status.Error(codes.Aborted, "request aborted")
			close(lv.out)
		}
		if l.cancelKV(id) {
			aborted = true
			return nil
		}
		aborted = e.Abort(id) == nil
		return nil
	})
	return aborted
}

// cancelKV stops any KV push or wait of a request and reports whether
// there was one. It does not block: stopping a wait calls the ranks on
// another goroutine.
func (l *leader) cancelKV(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	found := false
	for _, m := range []map[string]context.CancelFunc{l.sending, l.loading} {
		if c, ok := m[id]; ok {
			c()
			found = true
		}
	}
	return found
}

func (l *leader) track(m map[string]context.CancelFunc, id string, cancel context.CancelFunc) {
	l.mu.Lock()
	m[id] = cancel
	l.mu.Unlock()
}

func (l *leader) untrack(m map[string]context.CancelFunc, id string) {
	l.mu.Lock()
	delete(m, id)
	l.mu.Unlock()
}

func (l *leader) requireRole(role cluster.Role) error {
	if l.w.opts.Role != role {
		return status.Errorf(codes.FailedPrecondition, "group %s has role %s, not %s", l.w.opts.Group, l.w.opts.Role, role)
	}
	return nil
}

func checkRequest(id string, prompt []int32) error {
	switch {
	case id == "":
		return status.Error(codes.InvalidArgument, "request_id: required")
	case len(prompt) == 0:
		return status.Error(codes.InvalidArgument, "prompt_token_ids: empty")
	}
	return nil
}

// admitErr maps an error adding a request; a duplicate id is
// ALREADY_EXISTS.
func admitErr(err error) error {
	if errors.Is(err, engine.ErrDuplicateID) {
		return status.Error(codes.AlreadyExists, err.Error())
	}
	return statusOf(err)
}

func (l *leader) Prefill(ctx context.Context, req *tandemv1.PrefillRequest) (*tandemv1.PrefillResponse, error) {
	recv := time.Now()
	if err := l.requireRole(cluster.RolePrefill); err != nil {
		return nil, err
	}
	if err := checkRequest(req.GetRequestId(), req.GetPromptTokenIds()); err != nil {
		return nil, err
	}
	if err := checkDestination(req.GetDestination()); err != nil {
		return nil, err
	}
	if skip := req.GetDestination().GetSkipTokens(); skip < 0 || int(skip) >= len(req.GetPromptTokenIds()) {
		return nil, status.Errorf(codes.InvalidArgument, "destination.skip_tokens %d: must be in [0, %d), the prompt's length", skip, len(req.GetPromptTokenIds()))
	}
	params, err := samplingParams(req.GetSampling())
	if err != nil {
		return nil, err
	}
	id := req.GetRequestId()
	first := params
	first.MaxTokens = 1
	cfg := l.e.Model().Config()
	kv := &tandemv1.KVHandle{
		RequestId: id, Attempt: max(req.GetAttempt(), 1), SourceGroup: l.w.opts.Group,
		SourceTp: int32(l.e.Model().Plan().TP), NumTokens: int32(len(req.GetPromptTokenIds())),
		NumLayers: int32(cfg.Layers), Dtype: kvWireDType(l.e.KVCacheDType()),
		SkipTokens: req.GetDestination().GetSkipTokens(),
	}
	queueBy, err := queueDeadline(recv, req.GetQueueTimeout())
	if err != nil {
		return nil, err
	}
	lv := &live{
		out: make(chan engine.Output, 1), span: trace.SpanContextFromContext(ctx), queueBy: queueBy,
		send: &tandemv1.SendKVRequest{Kv: kv, Destination: req.GetDestination()},
	}
	err = l.add(ctx, id, lv, func(e *engine.Engine) error {
		return e.Add(engine.Request{ID: id, Prompt: req.GetPromptTokenIds(), Params: first, HoldKV: true})
	})
	if err != nil {
		return nil, admitErr(err)
	}
	var o engine.Output
	select {
	case got, ok := <-lv.out:
		if !ok {
			return nil, statusOf(lv.err)
		}
		o = got
	case <-ctx.Done():
		l.abort(id)
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	l.pastSpan(ctx, "queue", recv, lv.start, telemetry.RequestID(id))
	l.pastSpan(ctx, "prefill", lv.start, lv.done, telemetry.RequestID(id), telemetry.StepAttrs(o.Step, len(req.GetPromptTokenIds()), 0)[0])
	resp := &tandemv1.PrefillResponse{
		RequestId: id, TokenId: o.Token, Logprobs: tokenLogprobs(&o),
		Timing:    &tandemv1.TokenTiming{SinceStartUs: lv.done.Sub(recv).Microseconds(), SincePreviousUs: lv.done.Sub(recv).Microseconds(), Step: o.Step},
		QueueUs:   lv.start.Sub(recv).Microseconds(),
		ComputeUs: lv.done.Sub(lv.start).Microseconds(),
		Kv:        kv,
	}
	switch {
	case o.FinishReason == engine.FinishStop:
		resp.FinishReason = tandemv1.FinishReason_FINISH_REASON_STOP
	case params.MaxTokens == 1:
		resp.FinishReason = tandemv1.FinishReason_FINISH_REASON_LENGTH
	}
	if resp.FinishReason != tandemv1.FinishReason_FINISH_REASON_UNSPECIFIED {
		// Nothing follows: stop the push that began with the step; the
		// held KV is released once it has stopped.
		l.abort(id)
	}
	return resp, nil
}

// outputs bounds what a request can emit, for its channel: max_tokens,
// which the engine checks against the context length later, so a huge
// value is capped here first.
func (l *leader) outputs(p engine.SamplingParams) int {
	return min(p.MaxTokens, l.e.Model().Config().MaxPositions) + 1
}

// beforeForward starts the KV push of every prefill whose last prompt
// chunk the step computes: the ranks send each layer as soon as they have
// computed it, overlapping the rest of the forward pass.
func (l *leader) beforeForward(rec *engine.StepRecord) {
	for _, q := range rec.Seqs {
		lv := l.reqs[q.RequestID]
		if lv == nil || lv.send == nil || !q.Prefill || !q.Sampled {
			continue
		}
		blocks, ok := l.e.Blocks(q.RequestID)
		if !ok {
			continue
		}
		send := lv.send
		lv.send = nil
		send.Blocks, send.Step = blocks, rec.Step
		l.startSend(lv.span, send)
	}
}

// startSend pushes a held prefill's KV from every rank of the group to
// the decode group, then releases the blocks. It outlives the Prefill
// call, which returns at the first token.
func (l *leader) startSend(parent trace.SpanContext, send *tandemv1.SendKVRequest) {
	kv, dest := send.GetKv(), send.GetDestination()
	id := kv.GetRequestId()
	ctx, cancel := context.WithTimeout(trace.ContextWithSpanContext(context.Background(), parent), l.w.opts.KVTimeout)
	l.track(l.sending, id, cancel)
	go func() {
		defer cancel()
		sctx, span := l.tracer.Start(ctx, "kv_transfer", trace.WithAttributes(telemetry.RequestID(id), telemetry.Group(dest.GetGroup())))
		var bytes atomic.Int64
		err := forEachRank(sctx, l.ranks, func(ctx context.Context, r rankAPI) error {
			resp, err := r.SendKV(ctx, send)
			bytes.Add(resp.GetBytes())
			return err
		})
		span.SetAttributes(telemetry.KVAttrs(bytes.Load(), int(kv.GetNumLayers()))...)
		if err != nil {
			span.SetStatus(otelcodes.Error, err.Error())
		}
		span.End()
		// A push stopped by an abort needs nothing more; one that failed
		// or ran out of time leaves the decode group waiting.
		if err != nil && !errors.Is(ctx.Err(), context.Canceled) {
			l.w.log.Warn("KV transfer failed; the decode group will recompute the prompt", "request", id, "err", err)
			l.dropAt(dest, id)
		}
		l.untrack(l.sending, id)
		l.abort(id) // releases the held blocks, now that no rank reads them
	}()
}

// dropAt tells every rank of the decode group to forget the request's KV,
// which ends their wait for it at once: the group recomputes the prompt
// instead of waiting out its KV timeout.
func (l *leader) dropAt(dest *tandemv1.KVDestination, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, addr := range dest.GetRankAddresses() {
		wg.Go(func() {
			cc, err := grpc.NewClient(addr, l.w.opts.dialOptions()...)
			if err != nil {
				return
			}
			defer cc.Close()
			if _, err := tandemv1.NewRankClient(cc).DropKV(ctx, &tandemv1.DropKVRequest{RequestId: id}); err != nil {
				l.w.log.Debug("dropping KV at the decode group", "addr", addr, "err", err)
			}
		})
	}
	wg.Wait()
}

// forEachRank calls f on every rank at once and joins their errors.
func forEachRank(ctx context.Context, ranks []rankAPI, f func(context.Context, rankAPI) error) error {
	errs := make([]error, len(ranks))
	var wg sync.WaitGroup
	for i, r := range ranks {
		wg.Go(func() {
			if err := f(ctx, r); err != nil {
				errs[i] = fmt.Errorf("rank %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (l *leader) Decode(req *tandemv1.DecodeRequest, stream tandemv1.Worker_DecodeServer) error {
	recv := time.Now()
	ctx := stream.Context()
	if err := l.requireRole(cluster.RoleDecode); err != nil {
		return err
	}
	id, prompt := req.GetRequestId(), req.GetPromptTokenIds()
	if err := checkRequest(id, prompt); err != nil {
		return err
	}
	cfg := l.e.Model().Config()
	if err := checkHandle(req.GetKv(), len(prompt), cfg.Layers); err != nil {
		return err
	}
	params, err := samplingParams(req.GetSampling())
	if err != nil {
		return err
	}
	if params.MaxTokens < 2 {
		return status.Errorf(codes.InvalidArgument, "sampling.max_tokens %d: a decode needs at least 2 (the first token came from prefill)", params.MaxTokens)
	}
	loaded, err := l.receiveKV(ctx, id, prompt, req.GetKv())
	if err != nil {
		return err
	}
	kvWait := time.Since(recv)
	l.pastSpan(ctx, "kv_wait", recv, recv.Add(kvWait), telemetry.RequestID(id), attribute.Bool("tandem.kv.loaded", loaded))
	lv := &live{out: make(chan engine.Output, l.outputs(params)), span: trace.SpanContextFromContext(ctx)}
	ereq := engine.Request{ID: id, Prompt: prompt, Params: params}
	err = l.add(ctx, id, lv, func(e *engine.Engine) error {
		err := e.AddPrefilled(ereq, req.GetFirstTokenId(), loaded)
		if err != nil && loaded {
			_ = e.Release(id)
		}
		return err
	})
	if err != nil {
		if loaded && ctx.Err() != nil {
			l.abort(id)
		}
		return admitErr(err)
	}
	first := true
	return l.stream(ctx, id, lv, len(prompt), 1, recv, func(o *engine.Output, t *tandemv1.TokenTiming, fin bool, usage *tandemv1.Usage) error {
		msg := &tandemv1.DecodeResponse{}
		msg.TokenIds, msg.Timings, msg.Logprobs, msg.FinishReason = tokenFields(o, t)
		if first {
			msg.RequestId, msg.KvWaitUs, first = id, kvWait.Microseconds(), false
		}
		if fin {
			msg.RequestId, msg.Usage = id, usage
		}
		return stream.Send(msg)
	})
}

// receiveKV reserves blocks for a request's KV and has every rank load its
// share as it arrives; the first kv.skip_tokens positions come from the
// prefix cache. It reports false (recompute the prompt, from whatever
// prefix is cached) when the pool has no room, the prefix to skip was
// evicted or the transfer failed; errors are for the caller.
func (l *leader) receiveKV(ctx context.Context, id string, prompt []int32, kv *tandemv1.KVHandle) (bool, error) {
	var held engine.HeldKV
	err := l.do(ctx, func(e *engine.Engine) error {
		h, err := e.Reserve(id, prompt, int(kv.GetSkipTokens()))
		held = h
		return err
	})
	switch {
	case errors.Is(err, engine.ErrOutOfBlocks), errors.Is(err, engine.ErrPrefixEvicted):
		l.w.log.Debug("not loading KV; recomputing the prompt", "request", id, "err", err)
		l.dropKV(id)
		return false, nil
	case err != nil:
		return false, admitErr(err)
	}
	// The loads are not cancelled with the caller: a rank cut off in the
	// middle of writing would write into blocks released meanwhile.
	// DropKV wakes their waits instead, and the blocks are released only
	// once every rank has returned.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.w.opts.KVTimeout)
	defer cancel()
	wake := sync.OnceFunc(func() { go l.dropKV(id) })
	l.track(l.loading, id, wake)
	defer l.untrack(l.loading, id)
	defer context.AfterFunc(ctx, wake)()
	load := &tandemv1.LoadKVRequest{Kv: kv, Blocks: held.Blocks}
	err = forEachRank(lctx, l.ranks, func(ctx context.Context, r rankAPI) error {
		_, err := r.LoadKV(ctx, load)
		return err
	})
	if err == nil {
		return true, nil
	}
	l.dropKV(id)
	_ = l.do(context.Background(), func(e *engine.Engine) error { return e.Release(id) })
	if ctx.Err() != nil {
		return false, status.FromContextError(ctx.Err()).Err()
	}
	l.w.log.Warn("KV did not arrive; recomputing the prompt", "request", id, "err", err)
	return false, nil
}

func (l *leader) dropKV(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = forEachRank(ctx, l.ranks, func(ctx context.Context, r rankAPI) error {
		_, err := r.DropKV(ctx, &tandemv1.DropKVRequest{RequestId: id})
		return err
	})
}

func (l *leader) Generate(req *tandemv1.WorkerGenerateRequest, stream tandemv1.Worker_GenerateServer) error {
	recv := time.Now()
	ctx := stream.Context()
	// A decode group runs whole requests too: the coordinator moves a
	// request there, prompt recomputed, when no prefill group can take it.
	if l.w.opts.Role == cluster.RolePrefill {
		return l.requireRole(cluster.RoleUnified)
	}
	id, prompt := req.GetRequestId(), req.GetPromptTokenIds()
	if err := checkRequest(id, prompt); err != nil {
		return err
	}
	params, err := samplingParams(req.GetSampling())
	if err != nil {
		return err
	}
	queueBy, err := queueDeadline(recv, req.GetQueueTimeout())
	if err != nil {
		return err
	}
	lv := &live{out: make(chan engine.Output, l.outputs(params)), span: trace.SpanContextFromContext(ctx), queueBy: queueBy}
	err = l.add(ctx, id, lv, func(e *engine.Engine) error {
		return e.Add(engine.Request{ID: id, Prompt: prompt, Params: params})
	})
	if err != nil {
		return admitErr(err)
	}
	first := true
	return l.stream(ctx, id, lv, len(prompt), 0, recv, func(o *engine.Output, t *tandemv1.TokenTiming, fin bool, usage *tandemv1.Usage) error {
		msg := &tandemv1.WorkerGenerateResponse{}
		msg.TokenIds, msg.Timings, msg.Logprobs, msg.FinishReason = tokenFields(o, t)
		if first {
			msg.RequestId, first = id, false
		}
		if fin {
			msg.RequestId, msg.Usage = id, usage
		}
		return stream.Send(msg)
	})
}

// tokenFields are the fields of a token message that DecodeResponse and
// WorkerGenerateResponse share.
func tokenFields(o *engine.Output, t *tandemv1.TokenTiming) ([]int32, []*tandemv1.TokenTiming, []*tandemv1.TokenLogprobs, tandemv1.FinishReason) {
	var lps []*tandemv1.TokenLogprobs
	if lp := tokenLogprobs(o); lp != nil {
		lps = []*tandemv1.TokenLogprobs{lp}
	}
	return []int32{o.Token}, []*tandemv1.TokenTiming{t}, lps, finishReason(o.FinishReason)
}

// stream forwards a request's outputs until it finishes, the client goes
// away (abort) or the group fails (UNAVAILABLE). before counts tokens
// generated elsewhere (the prefill's first token).
func (l *leader) stream(ctx context.Context, id string, lv *live, prompt, before int, recv time.Time,
	send func(o *engine.Output, t *tandemv1.TokenTiming, fin bool, usage *tandemv1.Usage) error) error {
	t := timing{start: recv, prev: recv}
	for {
		select {
		case o, ok := <-lv.out:
			if !ok {
				return statusOf(lv.err)
			}
			fin := o.FinishReason != ""
			usage := &tandemv1.Usage{PromptTokens: int32(prompt), CompletionTokens: int32(o.Index + 1)}
			tt := t.next(time.Now())
			tt.Step = o.Step
			if err := send(&o, tt, fin, usage); err != nil {
				l.abort(id)
				return err
			}
			if fin {
				return nil
			}
		case <-ctx.Done():
			l.abort(id)
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

func (l *leader) Abort(_ context.Context, req *tandemv1.AbortRequest) (*tandemv1.AbortResponse, error) {
	id := req.GetRequestId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "request_id: required")
	}
	aborted := l.abort(id)
	l.dropKV(id)
	if aborted {
		l.w.log.Debug("aborted", "request", id, "reason", req.GetReason())
	}
	return &tandemv1.AbortResponse{Aborted: aborted}, nil
}

func (l *leader) Stats(context.Context, *tandemv1.StatsRequest) (*tandemv1.StatsResponse, error) {
	l.loadMu.Lock()
	ld := l.load // published before the server starts
	l.loadMu.Unlock()
	return &tandemv1.StatsResponse{
		Group: l.w.opts.Group, Role: l.w.opts.Role.Proto(), Tp: int32(l.e.Model().Plan().TP), Model: l.w.opts.ModelName,
		KvBlockSize: int32(l.e.BlockSize()), KvBlocksFree: int32(ld.free), KvBlocksTotal: int32(ld.total),
		RunningRequests: int32(ld.running), WaitingRequests: int32(ld.waiting), PendingPrefillTokens: int64(ld.pendingPrefill),
		PrefixCaching: !l.w.opts.Engine.DisablePrefixCaching, KvBlocksCached: int32(ld.prefix.CachedBlocks),
		PrefixCacheQueries: ld.prefix.Queries, PrefixCacheHits: ld.prefix.Hits,
	}, nil
}
