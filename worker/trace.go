package worker

import (
	"context"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemllm/tandem/engine"
	"github.com/tandemllm/tandem/kvtransfer"
	"github.com/tandemllm/tandem/metrics"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
	"github.com/tandemllm/tandem/telemetry"
	"github.com/tandemllm/tandem/tracing"
)

// stepTracer copies every engine step into the rank's flight recorder.
// It runs on the step loop's goroutine, once per step, and reuses the
// recorder's slots so that it allocates nothing once they have grown.
type stepTracer struct {
	rec     *tracing.Recorder
	metrics *metrics.Worker
	gpu     *metrics.GPU // nil without one
	prevEnd time.Time
	// The GPU is sampled at most every gpuSampleEvery, not every step:
	// NVML queries cost more than a small decode step.
	gpuAt     time.Time
	gpuSample metrics.GPUSample
	// followerSpans, set on ranks other than 0 when spans are exported,
	// records each step as a span of this rank (rank 0's step spans, which
	// also link the requests, come from the leader).
	followerSpans trace.Tracer
	group         string
	rank          int
}

// gpuSampleEvery bounds how often step records sample the GPU.
const gpuSampleEvery = 100 * time.Millisecond

func (t *stepTracer) onStep(r *engine.StepRecord) {
	t.metrics.Step(r.PrefillTokens, r.DecodeTokens, r.Compute, r.Sample)
	for _, c := range r.Collectives {
		t.metrics.Collective(string(c.Kind), int64(c.Bytes), c.Dur)
	}
	if t.followerSpans != nil {
		span := telemetry.StepSpan(context.Background(), t.followerSpans, r.Start, nil, telemetry.StepAttrs(r.Step, r.PrefillTokens, r.DecodeTokens)...)
		span.SetAttributes(telemetry.Group(t.group), telemetry.Rank(t.rank))
		span.End(trace.WithTimestamp(r.Start.Add(r.Schedule + r.Compute + r.Sample)))
	}
	if t.gpu != nil && r.Start.Sub(t.gpuAt) >= gpuSampleEvery {
		if s, err := t.gpu.Sample(); err == nil {
			t.gpuSample, t.gpuAt = s, r.Start
		}
	}
	end := r.Start.Add(r.Schedule + r.Compute + r.Sample)
	var queue time.Duration
	if !t.prevEnd.IsZero() && r.Start.After(t.prevEnd) {
		queue = r.Start.Sub(t.prevEnd)
	}
	t.prevEnd = end
	t.rec.Record(func(s *tandemv1.StepTrace) {
		s.Step = r.Step
		s.StartUnixNanos = r.Start.UnixNano()
		s.ScheduleNanos = int64(r.Schedule)
		s.ComputeNanos = int64(r.Compute)
		s.SampleNanos = int64(r.Sample)
		s.QueueNanos = int64(queue)
		s.PrefillTokens = int32(r.PrefillTokens)
		s.DecodeTokens = int32(r.DecodeTokens)
		s.FreeBlocks = int32(r.FreeBlocks)
		for _, q := range r.Seqs {
			m := tracing.AddSeq(s)
			m.RequestId, m.Position, m.Tokens, m.Prefill, m.Sampled = q.RequestID, int32(q.Pos), int32(q.Tokens), q.Prefill, q.Sampled
		}
		for _, c := range r.Collectives {
			m := tracing.AddCollective(s)
			m.Kind, m.Bytes, m.DurationNanos, m.OffsetNanos = string(c.Kind), int64(c.Bytes), int64(c.Dur), int64(c.Start.Sub(r.Start))
		}
		for op, d := range r.Ops {
			if d > 0 {
				m := tracing.AddOp(s)
				m.Op, m.Nanos = engine.Op(op).String(), int64(d)
			}
		}
		if t.gpuAt.IsZero() {
			s.Gpu = nil
		} else {
			g := tracing.GPU(s)
			g.UtilizationPercent, g.MemoryUsedBytes = t.gpuSample.UtilizationPercent, t.gpuSample.MemoryUsedBytes
			g.PowerWatts, g.SmClockMhz = t.gpuSample.PowerWatts, t.gpuSample.SMClockMHz
		}
	})
}

// recordSend notes a push's layers, one record each, laid end to end
// from the push's start (the sender reads and sends layers in order).
func recordSend(rec *tracing.Recorder, id string, spec kvtransfer.SendSpec, start time.Time, st kvtransfer.Stats) {
	at := start
	for _, l := range st.PerLayer {
		rec.RecordKV(id, &tandemv1.KVTransferTrace{
			Layer: int32(l.Layer), SourceRank: int32(spec.SourceRank), DestRank: int32(spec.DestRank),
			Bytes: l.Bytes, StartUnixNanos: at.UnixNano(), DurationNanos: int64(l.Duration),
		})
		at = at.Add(l.Duration)
	}
}

func (r *rankServer) Steps(_ context.Context, req *tandemv1.StepsRequest) (*tandemv1.StepsResponse, error) {
	if req.GetRequestId() == "" && len(req.GetSteps()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "request_id or steps: one is required")
	}
	return &tandemv1.StepsResponse{
		Node:         r.node,
		Steps:        r.rec.Steps(req.GetRequestId(), req.GetSteps()),
		KvTransfers:  r.rec.KV(req.GetRequestId()),
		PeakRssBytes: peakRSSBytes(),
	}, nil
}

// peakRSSBytes is this process's peak resident set size (0 if unknown).
func peakRSSBytes() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Maxrss * 1024 // Linux reports KiB
}

func (r *rankServer) Clock(context.Context, *tandemv1.ClockRequest) (*tandemv1.ClockResponse, error) {
	return &tandemv1.ClockResponse{UnixNanos: time.Now().UnixNano()}, nil
}
