package cpu

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/tandemllm/tandem/compute"
)

// benchKernels picks the kernel set of benchBackend's backends, so that
// one binary times a set against another.
var benchKernels = flag.String("kernels", "auto", "kernel set of the benchmarks: auto, amx, avx512bf16, avx512, avx2 or go")

func benchBackend(b *testing.B) *Backend {
	be, err := New(Options{Kernels: *benchKernels})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { be.Close() })
	return be
}

// benchMats loads enough copies of an n×k matrix to cover 256 MiB, so that
// cycling through them streams weights from memory as a decode step over
// all layers does, instead of from the last-level cache.
func benchMats(b *testing.B, be *Backend, dt compute.DType, n, k int) []compute.Mat {
	r := rand.New(rand.NewPCG(1, 1))
	raw, _ := encode(dt, randVec(r, n*k))
	copies := max(1, (256<<20)/len(raw))
	mats := make([]compute.Mat, copies)
	for i := range mats {
		data := make([]byte, len(raw))
		copy(data, raw)
		m, err := be.LoadMat(dt, n, k, data)
		if err != nil {
			b.Fatal(err)
		}
		mats[i] = m
	}
	return mats
}

// BenchmarkGEMV measures decode-sized MatMul (m ≤ 32 rows) at llama-160m
// shapes, reporting weight bytes streamed per second, the fraction of the
// measured memory bandwidth and the time of one MatMul. One iteration is a
// sweep over 256 MiB of copies of the matrix, so even -benchtime 3x
// streams from memory and is timed over hundreds of calls.
func BenchmarkGEMV(b *testing.B) {
	shapes := []struct{ n, k int }{{1024, 1024}, {512, 1024}, {2048, 1024}, {1024, 2048}, {768, 768}, {3072, 768}, {768, 3072}}
	for _, dt := range []compute.DType{compute.F32, compute.BF16, compute.F16} {
		for _, m := range []int{1, 4, 8, 32} {
			for _, s := range shapes {
				b.Run(fmt.Sprintf("%v/m%d/n%d_k%d", dt, m, s.n, s.k), func(b *testing.B) {
					be := benchBackend(b)
					mats := benchMats(b, be, dt, s.n, s.k)
					x := bufOf(be, randVec(rand.New(rand.NewPCG(2, 2)), m*s.k))
					dst := be.Alloc(m * s.n)
					bytes := float64(s.n*s.k*dt.Size()) * float64(len(mats))
					// The limit is measured next to the figure: on a shared
					// machine both move with the load.
					bw := MeasureMemoryBandwidth(be.Threads())
					b.ResetTimer()
					for b.Loop() {
						for _, w := range mats {
							be.MatMul(dst, x, w, m)
						}
					}
					sec := b.Elapsed().Seconds()
					gbs := bytes * float64(b.N) / sec
					b.ReportMetric(gbs/1e9, "GB/s")
					b.ReportMetric(100*gbs/bw, "%bw")
					b.ReportMetric(sec/float64(b.N*len(mats))*1e6, "µs/matmul")
				})
			}
		}
	}
}

// BenchmarkGEMM measures prefill-sized MatMul, reporting GFLOP/s and the
// fraction of the measured FMA peak, and on the AMX and pairs paths of
// the tile products' or VDPBF16PS's peak too.
func BenchmarkGEMM(b *testing.B) {
	shapes := []struct{ m, n, k int }{
		{512, 1024, 1024}, {512, 512, 1024}, {512, 2048, 1024}, // llama-160m
		{512, 768, 768}, {512, 2304, 768}, {512, 3072, 768}, // gpt2
		{16, 50257, 1024}, {64, 50257, 1024}, // LM head
		{32, 2304, 768}, {32, 768, 768}, {32, 3072, 768}, {32, 768, 3072}, {32, 50257, 768},
		{8, 2304, 768}, {8, 1024, 1024}, {8, 3072, 768},
	}
	for _, dt := range []compute.DType{compute.F32, compute.BF16, compute.F16} {
		for _, s := range shapes {
			b.Run(fmt.Sprintf("%v/m%d/n%d_k%d", dt, s.m, s.n, s.k), func(b *testing.B) {
				be := benchBackend(b)
				r := rand.New(rand.NewPCG(3, 3))
				raw, _ := encode(dt, randVec(r, s.n*s.k))
				w, err := be.LoadMat(dt, s.n, s.k, raw)
				if err != nil {
					b.Fatal(err)
				}
				x := bufOf(be, randVec(r, s.m*s.k))
				dst := be.Alloc(s.m * s.n)
				peak := MeasurePeakFLOPS(be.Threads())
				// On the AMX and pairs paths the bound is those units' peak.
				unitsPeak, units := 0.0, ""
				switch t := (&matmulTask{k: be.k, w: matOf(w), m: s.m}); {
				case t.useAMX():
					unitsPeak, units = MeasurePeakTileFLOPS(be.Threads()), "%tilepeak"
				case t.onPairs():
					unitsPeak, units = MeasurePeakPairFLOPS(be.Threads()), "%pairspeak"
				}
				b.ResetTimer()
				for b.Loop() {
					be.MatMul(dst, x, w, s.m)
				}
				flops := 2 * float64(s.m*s.n*s.k) * float64(b.N) / b.Elapsed().Seconds()
				b.ReportMetric(flops/1e9, "GFLOP/s")
				b.ReportMetric(100*flops/peak, "%peak")
				if unitsPeak > 0 {
					b.ReportMetric(100*flops/unitsPeak, units)
				}
			})
		}
	}
}

// BenchmarkDispatch measures the cost of one small parallel op: the pool's
// wake-up and join dominate.
func BenchmarkDispatch(b *testing.B) {
	be := benchBackend(b)
	raw, _ := encode(compute.F32, randVec(rand.New(rand.NewPCG(4, 4)), 64*64))
	w, err := be.LoadMat(compute.F32, 64, 64, raw)
	if err != nil {
		b.Fatal(err)
	}
	x, dst := be.Alloc(64), be.Alloc(64)
	for b.Loop() {
		be.MatMul(dst, x, w, 1)
	}
}

// BenchmarkAttentionDecode is one decode step of attention for a batch of
// sequences over an F32, a BF16 and an F16 cache: 4 sequences of 512 cached
// positions (12 heads of 64), and 8 of 40 with llama-160m's 16 query
// heads on 8 KV heads (the engine's decode benchmark's first steps, where
// each tile's fixed costs weigh most), both from the caches; and 8
// sequences of 512 over 8 layers (gpt2-124m's heads), 200 MiB of F32 KV
// that streams from memory as a decode step's does, and 8 of 64 over 48
// layers with llama-160m's heads (48 MiB in BF16), the short contexts of
// the engine's decode benchmark from memory, both with %bw against the
// read bandwidth measured beside them. GB/s counts the cache bytes read.
func BenchmarkAttentionDecode(b *testing.B) {
	const hd, bs = 64, 16
	for _, sh := range []struct{ batch, ctx, heads, kvHeads, layers int }{{4, 512, 12, 12, 1}, {8, 40, 16, 8, 1}, {8, 512, 12, 12, 8}, {8, 64, 16, 8, 48}} {
		for _, dt := range []compute.DType{compute.F32, compute.BF16, compute.F16} {
			name := fmt.Sprintf("batch-%d/ctx-%d/%v", sh.batch, sh.ctx, dt)
			if sh.layers > 1 {
				name = fmt.Sprintf("batch-%d/ctx-%d/layers-%d/%v", sh.batch, sh.ctx, sh.layers, dt)
			}
			b.Run(name, func(b *testing.B) {
				be := benchBackend(b)
				blocks := (sh.ctx + bs - 1) / bs
				c, err := be.NewKVCache(compute.KVSpec{Layers: sh.layers, NumBlocks: sh.batch * blocks, BlockSize: bs, KVHeads: sh.kvHeads, HeadDim: hd, DType: dt})
				if err != nil {
					b.Fatal(err)
				}
				// Written, so the cache is real memory rather than the zero page.
				r := rand.New(rand.NewPCG(5, 5))
				slots := make([]int32, sh.batch*blocks*bs)
				for i := range slots {
					slots[i] = int32(i)
				}
				kv := len(slots) * sh.kvHeads * hd
				k, v := bufOf(be, randVec(r, kv)), bufOf(be, randVec(r, kv))
				for l := range sh.layers {
					be.KVWrite(c, l, k, v, slots)
				}
				var seqs []compute.AttnSeq
				for s := range sh.batch {
					as := compute.AttnSeq{QRow: s, QLen: 1, Pos: sh.ctx - 1}
					for i := range blocks {
						as.Blocks = append(as.Blocks, int32(i*sh.batch+s))
					}
					seqs = append(seqs, as)
				}
				q, dst := bufOf(be, randVec(r, sh.batch*sh.heads*hd)), be.Alloc(sh.batch*sh.heads*hd)
				spec := compute.AttnSpec{Heads: sh.heads, KVHeads: sh.kvHeads, HeadDim: hd, Scale: 0.125}
				var bw float64
				if sh.layers > 1 {
					bw = MeasureMemoryBandwidth(be.Threads())
				}
				for b.Loop() {
					for l := range sh.layers {
						be.Attention(dst, q, c, l, seqs, spec)
					}
				}
				gbs := float64(2*sh.layers*sh.batch*sh.kvHeads*sh.ctx*hd*dt.Size()) * float64(b.N) / b.Elapsed().Seconds()
				b.ReportMetric(gbs/1e9, "GB/s")
				if bw > 0 {
					b.ReportMetric(100*gbs/bw, "%bw")
				}
				b.ReportMetric(b.Elapsed().Seconds()/float64(b.N*sh.layers)*1e6, "µs/call")
			})
		}
	}
}

func TestMeasurements(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the machine")
	}
	bw, peak := MeasureMemoryBandwidth(0), MeasurePeakFLOPS(0)
	t.Logf("memory read bandwidth %.1f GB/s, peak fp32 %.1f GFLOP/s", bw/1e9, peak/1e9)
	// Plausibility bounds for any machine this runs on.
	if bw < 1e9 || bw > 1e13 || peak < 1e9 || peak > 1e14 {
		t.Fatalf("implausible: bandwidth %g B/s, peak %g FLOP/s", bw, peak)
	}
}

// BenchmarkAttentionPrefill is causal attention of a 512- and a 2048-token
// prompt in one layer (16 query heads, 8 KV heads of 64, llama-160m's
// geometry) over an F32 and a BF16 cache (the pairs path, AMX or
// VDPBF16PS, where there is one), reported as GFLOP/s of q·k and p·v
// over the causal half.
func BenchmarkAttentionPrefill(b *testing.B) {
	const heads, kvHeads, hd, bs = 16, 8, 64, 16
	for _, n := range []int{512, 2048} {
		for _, dt := range []compute.DType{compute.F32, compute.BF16} {
			b.Run(fmt.Sprintf("%d/%v", n, dt), func(b *testing.B) {
				be := benchBackend(b)
				c, err := be.NewKVCache(compute.KVSpec{Layers: 1, NumBlocks: n / bs, BlockSize: bs, KVHeads: kvHeads, HeadDim: hd, DType: dt})
				if err != nil {
					b.Fatal(err)
				}
				r := rand.New(rand.NewPCG(6, 6))
				seq := compute.AttnSeq{QRow: 0, QLen: n, Pos: 0}
				slots := make([]int32, n)
				for i := range n / bs {
					seq.Blocks = append(seq.Blocks, int32(i))
				}
				for i := range slots {
					slots[i] = int32(i)
				}
				be.KVWrite(c, 0, bufOf(be, randVec(r, n*kvHeads*hd)), bufOf(be, randVec(r, n*kvHeads*hd)), slots)
				q, dst := bufOf(be, randVec(r, n*heads*hd)), be.Alloc(n*heads*hd)
				spec := compute.AttnSpec{Heads: heads, KVHeads: kvHeads, HeadDim: hd, Scale: 0.125}
				for b.Loop() {
					be.Attention(dst, q, c, 0, []compute.AttnSeq{seq}, spec)
				}
				flops := 2 * 2 * float64(heads*hd) * float64(n*(n+1)/2)
				b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
