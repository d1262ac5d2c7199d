package worker

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandemllm/tandem/compute/cpu"
	"github.com/tandemllm/tandem/engine"
	"github.com/tandemllm/tandem/metrics"
	"github.com/tandemllm/tandem/model/preset"
	"github.com/tandemllm/tandem/tracing"
)

// BenchmarkTracingOverhead measures what the flight recorder and metrics
// cost a decode step: llama-160m, batch 8, decode tokens/s with the
// per-step hooks on and off, interleaved rounds, medians compared. The
// limit it is held against: a cost of at most 2%.
func BenchmarkTracingOverhead(b *testing.B) {
	dir, err := preset.Ensure(b.Context(), "llama-160m", preset.DefaultCacheDir(), preset.Options{})
	if err != nil {
		b.Fatal(err)
	}
	be, err := cpu.New(cpu.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	m, err := engine.Open(dir, be, engine.Shard{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	hooks := newStepHooks()
	var on, off []float64
	for b.Loop() {
		for range 3 {
			off = append(off, decodeRate(b, m, nil))
			on = append(on, decodeRate(b, m, hooks))
		}
	}
	mOn, mOff := medianF(on), medianF(off)
	cost := 100 * (mOff - mOn) / mOff
	b.ReportMetric(mOn, "tok/s_traced")
	b.ReportMetric(mOff, "tok/s_untraced")
	b.ReportMetric(cost, "%_cost")
	b.Logf("tracing and metrics cost %.2f%% of decode tokens/s (%.1f traced vs %.1f untraced, llama-160m batch 8, %d rounds); limit 2%%", cost, mOn, mOff, len(on))
}

// newStepHooks is what a worker runs after every step.
func newStepHooks() func(*engine.StepRecord) {
	m := metrics.NewWorker(prometheus.NewRegistry(), metrics.WorkerLabels{Model: "llama-160m", Group: "bench", Role: "unified"})
	tracer := &stepTracer{rec: tracing.NewRecorder(0), metrics: m}
	return tracer.onStep
}

// decodeRate runs 8 sequences through their prompts, then times 32
// decode steps of all eight.
func decodeRate(b *testing.B, m *engine.Model, onStep func(*engine.StepRecord)) float64 {
	e, err := engine.New(m, engine.Options{KVCacheBytes: 128 << 20, OnStep: onStep})
	if err != nil {
		b.Fatal(err)
	}
	const batch, decode = 8, 32
	for i := range batch {
		prompt := make([]int32, 16)
		for j := range prompt {
			prompt[j] = int32(100 + i*31 + j)
		}
		if err := e.Add(engine.Request{ID: fmt.Sprint(i), Prompt: prompt, Params: engine.SamplingParams{MaxTokens: decode + 1, IgnoreEOS: true}}); err != nil {
			b.Fatal(err)
		}
	}
	ctx := context.Background()
	if _, err := e.Step(ctx); err != nil { // the prompts, in one step
		b.Fatal(err)
	}
	start := time.Now()
	tokens := 0
	for e.HasWork() {
		outs, err := e.Step(ctx)
		if err != nil {
			b.Fatal(err)
		}
		tokens += len(outs)
	}
	return float64(tokens) / time.Since(start).Seconds()
}

func medianF(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
