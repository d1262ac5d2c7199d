package engine

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemllm/tandem/compute/cuda"
	"github.com/tandemllm/tandem/model/preset"
)

// The GPU benchmarks run one model on GPU 0 with the CUDA backend and
// hold each figure against a ceiling measured on that GPU in the same
// run: decode against a device-to-device copy's bandwidth, prefill
// against the BF16 rate of the backend's own MatMul. They skip where
// CUDA cannot be opened. scripts/gpu-check runs them on a lent GPU:
//
//	engine.test -test.run '^$' -test.bench GPU -test.benchtime 64x -engine.model DIR

var gpuBenchModel = flag.String("engine.model", "", "model directory for the GPU benchmarks (default: the llama-1b preset, made in the cache on first use)")

// openGPUBenchModel opens the benchmark model on GPU 0, or skips the
// benchmark where there is no CUDA; it returns the model's name too.
func openGPUBenchModel(b *testing.B) (*Model, *cuda.Backend, string) {
	be, err := cuda.New(cuda.Options{})
	if errors.Is(err, cuda.ErrNoCUDA) {
		first, _, _ := strings.Cut(err.Error(), "\n")
		b.Skipf("no CUDA here: %s", first)
	}
	if err != nil {
		b.Fatal(err)
	}
	libs, ci := be.Libraries(), be.Compile()
	b.Logf("%s: driver %s, cuBLAS %s, NVRTC %s %s (%s)", be.Name(), libs.Driver, libs.Cublas, ci.NVRTC, libs.NVRTC, ci.Target)
	dir := *gpuBenchModel
	if dir == "" {
		if dir, err = preset.Ensure(context.Background(), "llama-1b", preset.DefaultCacheDir(), preset.Options{}); err != nil {
			be.Close()
			b.Fatal(err)
		}
	}
	m, err := Open(dir, be, Shard{})
	if err != nil {
		be.Close()
		b.Fatal(err)
	}
	b.Cleanup(func() {
		m.Close()
		be.Close()
	})
	return m, be, filepath.Base(dir)
}

// BenchmarkGPUDecode: decode tokens/s at batch 1, 8 and 32, and MBU
// (%bw) against the device copy bandwidth.
func BenchmarkGPUDecode(b *testing.B) {
	m, be, name := openGPUBenchModel(b)
	bw, err := be.MeasureCopyBandwidth(0)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("device copy bandwidth %.0f GB/s (read + write)", bw/1e9)
	for _, batch := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("%s/batch-%d", name, batch), func(b *testing.B) {
			benchDecode(b, m, batch, fixedLimits{bw: bw})
		})
	}
}

// BenchmarkGPUPrefill: one 2048-token prompt per step, matrix-multiply
// FLOP/s as %peak of the backend's BF16 MatMul at 8192³.
func BenchmarkGPUPrefill(b *testing.B) {
	m, be, name := openGPUBenchModel(b)
	peak, err := be.MeasureMatMulFLOPS(0)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("BF16 MatMul 8192³ %.1f TFLOP/s", peak/1e12)
	b.Run(fmt.Sprintf("%s/2048", name), func(b *testing.B) {
		benchPrefill(b, m, 2048, fixedLimits{flops: peak})
	})
}

// The GPU benchmarks' harness on the CPU backend and the tiny preset: a
// batch of 32 runs, and each figure comes with its limit.
func TestBenchHarnessOnCPU(t *testing.T) {
	m := testModel(t, "tiny", "f32", "auto")
	res := testing.Benchmark(func(b *testing.B) { benchDecode(b, m, 32, fixedLimits{bw: 1e9}) })
	if res.N == 0 || res.Extra["tok/s"] <= 0 || res.Extra["bwGB/s"] != 1 || res.Extra["%bw"] <= 0 {
		t.Errorf("decode: N %d, figures %v; want a run, tok/s and %%bw against 1 GB/s", res.N, res.Extra)
	}
	res = testing.Benchmark(func(b *testing.B) { benchPrefill(b, m, 64, fixedLimits{flops: 1e12}) })
	if res.N == 0 || res.Extra["tok/s"] <= 0 || res.Extra["peakGFLOP/s"] != 1000 || res.Extra["%peak"] <= 0 {
		t.Errorf("prefill: N %d, figures %v; want a run, tok/s and %%peak against 1000 GFLOP/s", res.N, res.Extra)
	}
	res = testing.Benchmark(func(b *testing.B) { benchDecode(b, m, 8, fixedLimits{bw: 1e9, flops: 1e12}) })
	if res.N == 0 || res.Extra["peakGFLOP/s"] != 1000 || res.Extra["%roof"] <= 0 || res.Extra["kvMB/step"] <= 0 {
		t.Errorf("decode at batch 8: N %d, figures %v; want %%roof against 1 GB/s and 1000 GFLOP/s", res.N, res.Extra)
	}
	// The CPU's probes sum what each one measured.
	lim := newProbeLimits(1, true, true)
	lim.between(time.Millisecond)
	lim.between(time.Millisecond)
	if bw, pk := lim.bandwidth(), lim.peak(); !(bw > 1e7 && bw < 1e13 && pk > 1e7 && pk < 1e14) {
		t.Errorf("probed bandwidth %g B/s, peak %g FLOP/s: implausible", bw, pk)
	}
}
