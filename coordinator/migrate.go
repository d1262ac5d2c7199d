package coordinator

import (
	"context"
	"fmt"
	"slices"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
	"github.com/tandemllm/tandem/telemetry"
)

// Migration: when a group fails a request (its process died, its step
// failed, it left the cluster, its stream broke), the request runs again
// on other groups with its prompt followed by the tokens the client
// already has, and max_tokens less those. Workers sample a token from the
// request's seed and the token's position only, so the text goes on as it
// would have; the coordinator's detokenizer, stop strings, logprobs and
// usage simply continue. Each run is an attempt with its own id on the
// workers, so a group still holding an earlier attempt (a prefill group
// pushing KV to a dead decode group) cannot confuse the two.

// migrationPoll is how often a migration looks again for a healthy
// group when none is ready.
const migrationPoll = 50 * time.Millisecond

// attempt is one run of a request on one route.
type attempt struct {
	n  int    // from 1
	id string // the request's id on the workers
	// ctx is the attempt's worker calls': it ends with the request, or
	// with a *groupLeft cause when one of its groups leaves the cluster.
	ctx    context.Context
	cancel context.CancelCauseFunc
	leaves map[*groupState]func() bool
	// pending are the groups that may still hold the attempt; they are
	// aborted when it ends before they report its end.
	pending  []*groupState
	prompt   []int32                  // the prompt, then the tokens output before the attempt
	sampling *tandemv1.SamplingParams // max_tokens less those tokens
	// queueTimeout is what is left of the request's queue timeout, for
	// the first group's call of the first attempt; nil: no limit.
	queueTimeout *durationpb.Duration
}

// groupLeft is the cause that ends an attempt whose group left.
type groupLeft struct {
	g     *groupState
	cause error
}

func (e *groupLeft) Error() string { return fmt.Sprintf("group %q left: %v", e.g.name, e.cause) }

// groupFailure is a group failing a request in a way another group may
// not: the request migrates.
type groupFailure struct {
	g      *groupState
	reason string // a metrics.Migration* reason
	err    error
}

func (f *groupFailure) Error() string {
	return fmt.Sprintf("group %q failed the request (%s): %v", f.g.name, f.reason, f.err)
}

// final is the error a client gets when the request cannot move.
func (f *groupFailure) final(why string) error {
	return status.Errorf(codes.Unavailable, "group %q is unavailable: %s; %s", f.g.name, status.Convert(f.err).Message(), why)
}

// attemptID is the id attempt n of request id has on the workers.
func attemptID(id string, n int) string {
	if n == 1 {
		return id
	}
	return fmt.Sprintf("%s#migration%d", id, n-1)
}

// newAttempt starts attempt n on rt: the prompt carries the tokens output
// so far, and a group of rt leaving the cluster ends the attempt.
func (r *request) newAttempt(n int, rt route) *attempt {
	a := &attempt{n: n, id: attemptID(r.p.id, n), prompt: r.p.prompt, sampling: r.sampling, leaves: map[*groupState]func() bool{}}
	if k := len(r.output); k > 0 {
		a.prompt = append(slices.Clip(r.p.prompt), r.output...)
		a.sampling = proto.CloneOf(r.sampling)
		a.sampling.MaxTokens -= int32(k)
	}
	a.ctx, a.cancel = context.WithCancelCause(r.ctx)
	for _, g := range rt.groups() {
		a.leaves[g] = context.AfterFunc(g.ctx, func() { a.cancel(&groupLeft{g: g, cause: context.Cause(g.ctx)}) })
	}
	r.att = a
	return a
}

// stopLeave stops g's leaving from ending the attempt.
func (a *attempt) stopLeave(g *groupState) {
	if stop := a.leaves[g]; stop != nil {
		stop()
	}
}

func (a *attempt) stopLeaves() {
	for _, stop := range a.leaves {
		stop()
	}
}

// done notes that g reported the attempt's end (or, for a prefill group,
// handed it on), so it need not be aborted.
func (a *attempt) done(g *groupState) {
	a.pending = slices.DeleteFunc(a.pending, func(p *groupState) bool { return p == g })
}

// migrate moves the request to other groups after f, for attempt next:
// within Options.MigrationLimit moves and Options.MigrationTimeout of its
// first failure. It returns the new route, or the error that ends the
// request.
func (r *request) migrate(f *groupFailure, next int) (route, error) {
	c := r.c
	failedAt := time.Now()
	if r.firstFailure.IsZero() {
		r.firstFailure = failedAt
	}
	if r.failed == nil {
		r.failed = map[*groupState]bool{}
	}
	r.failed[f.g] = true
	c.suspect(f.g, f.err)
	left := int(r.sampling.GetMaxTokens()) - len(r.output)
	switch {
	case !c.abortInBackground(r):
		return route{}, f.final("the coordinator is closing")
	case c.opts.MigrationLimit == 0:
		return route{}, f.final("requests do not migrate (--migration-limit 0)")
	case r.migrations >= c.opts.MigrationLimit:
		return route{}, f.final(fmt.Sprintf("the request already moved %d times, the --migration-limit", r.migrations))
	case left <= 0:
		// Every token was out; only the finish message was lost.
		return route{}, r.finish(&tandemv1.GenerateResponse{}, tandemv1.FinishReason_FINISH_REASON_LENGTH, "")
	}
	rt, err := c.migrationRoute(r.ctx, append(slices.Clip(r.p.prompt), r.output...), r.failed, r.firstFailure.Add(c.opts.MigrationTimeout))
	if err != nil {
		if r.ctx.Err() != nil {
			return route{}, r.ended()
		}
		return route{}, f.final(err.Error())
	}
	r.migrations++
	resumed := time.Now()
	pre, dec := rt.names()
	m := &tandemv1.Migration{
		UnixNanos: failedAt.UnixNano(), Reason: f.reason, FromGroup: f.g.name, ErrorMessage: f.err.Error(),
		TokensBefore: int32(len(r.output)), PrefillGroup: pre, DecodeGroup: dec,
		WorkerRequestId: attemptID(r.p.id, next), ResumedUnixNanos: resumed.UnixNano(),
	}
	r.trace.migrated(m)
	c.metrics.Migrated(f.reason)
	_, span := c.tracer.Start(r.ctx, "migration", trace.WithTimestamp(failedAt),
		trace.WithAttributes(telemetry.MigrationAttrs(f.reason, f.g.name, len(r.output), next)...))
	span.SetAttributes(telemetry.Group(dec))
	span.End(trace.WithTimestamp(resumed))
	c.log.Info("request migrated", "request", r.p.id, "reason", f.reason, "from", f.g.name,
		"prefill", pre, "decode", dec, "tokens_before", len(r.output), "attempt", next, "err", f.err)
	return rt, nil
}

// abortInBackground has the groups of r's failed attempt drop it in the
// background, so that a dead group's Abort does not hold up the move. It
// reports false, and leaves them to the request's end, once Close has
// begun.
func (c *Coordinator) abortInBackground(r *request) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	if old := r.att; old != nil && len(old.pending) > 0 {
		ctx, id, groups := context.WithoutCancel(r.client), old.id, old.pending
		c.wg.Go(func() { c.abort(ctx, id, groups, "request migrated") })
		old.pending = nil
	}
	return true
}

// migrationRoute picks groups for a migrated request whose prompt is now prompt,
// none of them in failed: a prefill and a decode group, else a unified
// group, else a decode group that recomputes the prompt. When none is
// ready it looks again until deadline or ctx ends.
func (c *Coordinator) migrationRoute(ctx context.Context, prompt []int32, failed map[*groupState]bool, deadline time.Time) (route, error) {
	t := time.NewTicker(migrationPoll)
	defer t.Stop()
	for {
		rt, err := c.pickRoute(prompt, failed, true)
		if err == nil {
			return rt, nil
		}
		if !time.Now().Before(deadline) {
			return route{}, fmt.Errorf("no healthy group took it within the migration timeout (%v): %s",
				c.opts.MigrationTimeout, status.Convert(err).Message())
		}
		select {
		case <-ctx.Done():
			return route{}, ctx.Err()
		case <-t.C:
		}
	}
}

// suspect stops routing new requests to g, which just failed one, until
// its Stats answer again.
func (c *Coordinator) suspect(g *groupState, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if g.ctx.Err() == nil && !g.failing {
		c.log.Warn("group failed a request; not routing to it until its stats answer", "group", g.name, "err", err)
		g.failing = true
	}
}
