package chaos

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/tandemllm/tandem/bench"
)

// outcome is when a request ran, and whether its deadline passed first.
type outcome struct {
	start, end time.Time
	hung       bool
}

// recordingTarget gives every request a deadline and records when it ran.
type recordingTarget struct {
	inner   bench.Target
	timeout time.Duration

	mu       sync.Mutex
	outcomes map[string]outcome
}

func newRecordingTarget(inner bench.Target, timeout time.Duration) *recordingTarget {
	return &recordingTarget{inner: inner, timeout: timeout, outcomes: map[string]outcome{}}
}

func (t *recordingTarget) Model(ctx context.Context) (string, error) { return t.inner.Model(ctx) }

func (t *recordingTarget) Send(ctx context.Context, r bench.Request) bench.Output {
	rctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	start := time.Now()
	out := t.inner.Send(rctx, r)
	o := outcome{start: start, end: time.Now()}
	// The request's own deadline, not the run's end, cut it short.
	o.hung = errors.Is(rctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil && !(out.Success && out.OutputTokens == r.MaxTokens)
	t.mu.Lock()
	t.outcomes[r.ID] = o
	t.mu.Unlock()
	return out
}

func (t *recordingTarget) outcome(id string) (outcome, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	o, ok := t.outcomes[id]
	return o, ok
}

// Request classes of the report.
const (
	noOutput = "NO_OUTPUT" // the bench target's code for a stream that ended without a token
	// Why a failure is excused: the coordinator was killed under it, or
	// no healthy group of some role was there when it failed.
	excuseCoordinator = "coordinator down"
	excuseNoGroup     = "no healthy group of a role"
)

// classify files every request of run into r; the faults must be in r.
func classify(r *Report, run *bench.Run, t *recordingTarget, m *monitor) {
	var outages []window
	for _, f := range r.Faults {
		if f.Kind == KillCoordinator {
			outages = append(outages, f.outage())
		}
	}
	for i, out := range run.Outputs {
		want := run.Workload[i].OutputLen
		r.Requests++
		o, sent := t.outcome(run.IDPrefix + strconv.Itoa(i))
		switch {
		case !sent:
			r.Lost++ // never reached the target: nothing answered it
		case o.hung:
			r.Hung++
		case out.Success && out.OutputTokens == want:
			r.Completed++
		case out.Code == "" || out.Code == noOutput:
			r.Lost++ // ended without its tokens and without an error
		default:
			r.Failed[out.Code]++
			coordDown, servable := m.judge(o.start, o.end, outages)
			switch {
			case coordDown:
				r.FailedExcused[excuseCoordinator]++
			case !servable:
				r.FailedExcused[excuseNoGroup]++
			default:
				r.FailedWhileHealthy++
				if len(r.FailureSamples) < 10 {
					r.FailureSamples = append(r.FailureSamples, out.RequestID+": "+out.Code+": "+out.Error)
				}
			}
		}
	}
}
