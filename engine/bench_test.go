package engine

import (
	"context"
	"fmt"
	"testing"

	"github.com/tandemllm/tandem/compute"
	"github.com/tandemllm/tandem/compute/cpu"
)

// The limits are measured right after each benchmark, on the same
// (shared, noisy) machine, so the ratio compares like with like: the
// memory read bandwidth decode is held against, the peak FMA rate prefill
// is.

var benchModels = []string{"llama-160m", "gpt2-124m"}

// weightBytes is what one decode step must read: every matrix once (the
// embedding only for its LM-head use when tied).
func weightBytes(m *Model) float64 {
	var n float64
	for _, w := range matrices(m) {
		n += float64(w.Rows() * w.Cols() * w.DType().Size())
	}
	return n + float64(m.w.lmHead.Rows()*m.w.lmHead.Cols()*m.w.lmHead.DType().Size())
}

// matmulFLOPs is the matrix-multiply work per token of prefill (LM head
// excluded: prefill computes logits for the last row only).
func matmulFLOPs(m *Model) float64 {
	var n float64
	for _, w := range matrices(m) {
		n += 2 * float64(w.Rows()*w.Cols())
	}
	return n
}

// matrices are the per-layer weight matrices of m.
func matrices(m *Model) []compute.Mat {
	var out []compute.Mat
	for _, l := range m.w.layers {
		out = append(out, l.q, l.k, l.v, l.o, l.up, l.down)
		if l.gate != nil {
			out = append(out, l.gate)
		}
	}
	return out
}

// BenchmarkDecode times decode steps at batch 1 and 8 and reports the
// weight bytes streamed per second against the measured memory bandwidth.
func BenchmarkDecode(b *testing.B) {
	for _, name := range benchModels {
		for _, dt := range []string{"f32", "bf16"} {
			for _, batch := range []int{1, 8} {
				b.Run(fmt.Sprintf("%s/%s/batch-%d", name, dt, batch), func(b *testing.B) {
					benchDecode(b, testModel(b, name, dt, "auto"), batch, 256<<20, cpuBandwidth)
				})
			}
		}
	}
}

// cpuBandwidth and cpuPeak are the host's limits, measured when called.
func cpuBandwidth() float64 { return cpu.MeasureMemoryBandwidth(0) }
func cpuPeak() float64      { return cpu.MeasurePeakFLOPS(0) }

// benchDecode times decode steps of batch sequences (prompts of 32
// tokens, then up to 512 generated) with a KV cache of kvBytes, and
// reports tokens/s and the weight bytes streamed per second against the
// memory bandwidth bandwidth returns (%bw: the model bandwidth
// utilisation, MBU, counting weights only).
func benchDecode(b *testing.B, m *Model, batch int, kvBytes int64, bandwidth func() float64) {
	ctx := context.Background()
	const promptLen = 32
	// The whole batch is prefilled in one step, so every timed step
	// decodes.
	e, err := New(m, Options{KVCacheBytes: kvBytes, MaxBatchTokens: max(512, batch*promptLen)})
	if err != nil {
		b.Fatal(err)
	}
	maxTokens := min(m.cfg.MaxPositions-promptLen, 512)
	refill := func() {
		for e.HasWork() {
			for id := range e.byID {
				_ = e.Abort(id)
			}
		}
		for i := range batch {
			r := Request{ID: fmt.Sprint(i), Prompt: testPrompt(promptLen, m.cfg.VocabSize, i), Params: SamplingParams{MaxTokens: maxTokens, IgnoreEOS: true}}
			if err := e.Add(r); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := e.Step(ctx); err != nil { // the prefill step
			b.Fatal(err)
		}
	}
	refill()
	left := maxTokens - 1
	b.ResetTimer()
	for range b.N {
		if left == 0 {
			b.StopTimer()
			refill()
			left = maxTokens - 1
			b.StartTimer()
		}
		if _, err := e.Step(ctx); err != nil {
			b.Fatal(err)
		}
		left--
	}
	b.StopTimer()
	bw := bandwidth()
	stepsPerS := float64(b.N) / b.Elapsed().Seconds()
	achieved := weightBytes(m) * stepsPerS
	b.ReportMetric(stepsPerS*float64(batch), "tok/s")
	b.ReportMetric(achieved/1e9, "weightGB/s")
	b.ReportMetric(bw/1e9, "bwGB/s")
	b.ReportMetric(100*achieved/bw, "%bw")
}

// BenchmarkPrefill times a 512-token prefill and reports the
// matrix-multiply FLOP/s against the measured peak FMA rate.
func BenchmarkPrefill(b *testing.B) {
	for _, name := range benchModels {
		for _, dt := range []string{"f32", "bf16"} {
			b.Run(fmt.Sprintf("%s/%s/512", name, dt), func(b *testing.B) {
				benchPrefill(b, testModel(b, name, dt, "auto"), 512, cpuPeak)
			})
		}
	}
}

// benchPrefill times the prefill of one n-token prompt in one step and
// reports tokens/s and the matrix-multiply FLOP/s (weights only:
// attention's own products are left out) against the rate peak returns.
func benchPrefill(b *testing.B, m *Model, n int, peak func() float64) {
	// 128 KiB of KV a token is more than any preset needs.
	e, err := New(m, Options{MaxBatchTokens: n, KVCacheBytes: max(256<<20, int64(n)<<17)})
	if err != nil {
		b.Fatal(err)
	}
	prompt := testPrompt(n, m.cfg.VocabSize, 0)
	b.ResetTimer()
	for i := range b.N {
		id := fmt.Sprint(i)
		if err := e.Add(Request{ID: id, Prompt: prompt, Params: SamplingParams{MaxTokens: 1}}); err != nil {
			b.Fatal(err)
		}
		if _, err := e.Step(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	pk := peak()
	tokPerS := float64(b.N*n) / b.Elapsed().Seconds()
	flops := matmulFLOPs(m) * tokPerS
	b.ReportMetric(tokPerS, "tok/s")
	b.ReportMetric(flops/1e9, "GFLOP/s")
	b.ReportMetric(pk/1e9, "peakGFLOP/s")
	b.ReportMetric(100*flops/pk, "%peak")
}
