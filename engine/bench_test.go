package engine

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/tandemllm/tandem/compute"
	"github.com/tandemllm/tandem/compute/cpu"
	"github.com/tandemllm/tandem/model/preset"
)

// Every figure is held against a limit measured in the same run. On the
// CPU the limits are probed between the timed steps (cpu.Probe), so that
// on a shared machine, whose free bandwidth and FLOP rate move within
// seconds, the figure and its limit are averages over the same stretch
// of time.

// benchLimits are the limits a benchmark's figures are held against.
type benchLimits interface {
	// between runs after each timed step (timer stopped); probes measure
	// here. step is how long that step took.
	between(step time.Duration)
	// bandwidth is the memory read bandwidth in bytes/s, peak the FLOP/s.
	bandwidth() float64
	peak() float64
}

// fixedLimits are limits measured once (the GPU's).
type fixedLimits struct{ bw, flops float64 }

func (fixedLimits) between(time.Duration) {}
func (l fixedLimits) bandwidth() float64  { return l.bw }
func (l fixedLimits) peak() float64       { return l.flops }

// probeLimits probe the CPU after every step: a pass over 256 MiB for the
// bandwidth, FMA loops for a quarter of the step's time (at least 10 ms)
// for the peak, as asked. Each limit is the sum of work over the sum of
// time of its probes.
type probeLimits struct {
	p            *cpu.Probe
	bw, fl       bool
	bytes, flops float64
	bwT, flT     time.Duration
	// bf16 also probes the peak of the units a BF16 model's matrix
	// products run on (see bf16Units), as long as the FMA loops.
	bf16      string
	bf16Flops float64
	bf16T     time.Duration
}

func newProbeLimits(threads int, bw, flops bool) *probeLimits {
	return &probeLimits{p: cpu.NewProbe(threads), bw: bw, fl: flops}
}

// between probes after a step. The tile and FMA loops go first and the
// pass over memory last: a step right after the tile loop ran slower
// (BF16 batch-8 decode, medians of six runs: gpt2-124m 538 tokens/s with
// the tile loop last, 574 with it first, 590 with no FLOP probes at all;
// llama-160m 482, 496 and 521; F32 steps were unaffected). What is left
// of it is in the BF16 figures of batch 8 and 32.
func (l *probeLimits) between(step time.Duration) {
	if l.bf16 != "" {
		probe := l.p.TileFLOPs
		if l.bf16 == "pairs" {
			probe = l.p.PairFLOPs
		}
		n, d := probe(max(10*time.Millisecond, step/4))
		l.bf16Flops += n
		l.bf16T += d
	}
	if l.fl {
		n, d := l.p.FLOPs(max(10*time.Millisecond, step/4))
		l.flops += n
		l.flT += d
	}
	if l.bw {
		n, d := l.p.Bandwidth()
		l.bytes += float64(n)
		l.bwT += d
	}
}

func (l *probeLimits) bandwidth() float64 { return l.bytes / l.bwT.Seconds() }
func (l *probeLimits) peak() float64      { return l.flops / l.flT.Seconds() }

// bf16Peak is the FLOP/s of the BF16 units probed, or 0 when not probed.
func (l *probeLimits) bf16Peak() float64 {
	if l.bf16 == "" || l.bf16T <= 0 {
		return 0
	}
	return l.bf16Flops / l.bf16T.Seconds()
}

// reportBF16Peak reports the BF16 units' probed peak, named for them
// (tilepeakGFLOP/s, pairspeakGFLOP/s), if they were probed, and returns it.
func reportBF16Peak(b *testing.B, lim benchLimits) float64 {
	pl, ok := lim.(*probeLimits)
	if !ok || pl.bf16Peak() <= 0 {
		return 0
	}
	b.ReportMetric(pl.bf16Peak()/1e9, pl.bf16+"peakGFLOP/s")
	return pl.bf16Peak()
}

// bf16Units names the units m's matrix products of batch rows run on
// where they are not the FMAs: "tile" for the AMX tiles (a BF16 model on
// the amx kernels, two rows or more), "pairs" for AVX512_BF16's
// VDPBF16PS (on the avx512bf16 kernels, which take the benchmarks'
// batches of 8 and 32 and their prefills: every preset's rows are whole
// 32-wide steps; batches of 9–13 rows would not), "" otherwise.
func bf16Units(m *Model, batch int) string {
	if batch < 2 || m.wdtype != compute.BF16 {
		return ""
	}
	switch m.Backend().Name() {
	case "cpu/amx":
		return "tile"
	case "cpu/avx512bf16":
		return "pairs"
	}
	return ""
}

// benchKernels picks the CPU kernel set of the benchmarks' backends, so
// that one binary times a set against another (-kernels avx512 against
// the default, amx where the CPU has it).
var benchKernels = flag.String("kernels", "auto", "CPU kernel set of the benchmarks: auto, amx, avx512bf16, avx512, avx2 or go")

// benchModel loads a preset of dtype on a fresh CPU backend of threads
// threads (0: every core).
func benchModel(b *testing.B, name, dtype string, threads int) *Model {
	b.Helper()
	dt, err := preset.ParseDType(dtype)
	if err != nil {
		b.Fatal(err)
	}
	dir, err := preset.Ensure(context.Background(), name, preset.DefaultCacheDir(), preset.Options{DType: dt})
	if err != nil {
		b.Fatal(err)
	}
	be, err := cpu.New(cpu.Options{Threads: threads, Kernels: *benchKernels})
	if err != nil {
		b.Fatal(err)
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
	return m
}

// weightBytes is what one decode step must read: every matrix once (the
// embedding only for its LM-head use when tied).
func weightBytes(m *Model) float64 {
	var n float64
	for _, w := range matrices(m) {
		n += float64(w.Rows() * w.Cols() * w.DType().Size())
	}
	return n + lmHeadBytes(m)
}

func lmHeadBytes(m *Model) float64 {
	return float64(m.w.lmHead.Rows() * m.w.lmHead.Cols() * m.w.lmHead.DType().Size())
}

// benchOps adds every op's time per step to each engine benchmark's
// figures (the four groups are reported either way).
var benchOps = flag.Bool("ops", false, "report the time per step of every op of the forward pass")

// benchOpTimes is whether a benchmark times the ops of m's steps: always
// on a backend that runs them as they are issued; on one that queues them
// (compute/cuda) only with -ops, as each op's time there waits for the
// queue, which would slow the very steps being measured.
func benchOpTimes(m *Model) bool {
	_, queues := m.be.(syncer)
	return !queues || *benchOps
}

// projOps are the layers' matrix products.
var projOps = []Op{OpQProj, OpKProj, OpVProj, OpOProj, OpUpProj, OpGateProj, OpDownProj}

// opTotals sums the op times (Options.OpTimes) of a benchmark's timed
// steps, to say where a step's time goes: the per-op timers the CPU
// figures of docs/benchmarking.md are read against.
type opTotals struct {
	t     OpTimes
	steps int
}

func (o *opTotals) add(r *StepRecord) {
	for i, d := range r.Ops {
		o.t[i] += d
	}
	o.steps++
}

// seconds is the total time of ops.
func (o *opTotals) seconds(ops ...Op) float64 {
	var d time.Duration
	for _, op := range ops {
		d += o.t[op]
	}
	return d.Seconds()
}

// report gives the time per step of the projections, attention, the LM
// head with the logits' way to the host, and everything else, in ms.
func (o *opTotals) report(b *testing.B) {
	if o.steps == 0 {
		return
	}
	ms := func(sec float64) float64 { return 1e3 * sec / float64(o.steps) }
	proj, attn, head := o.seconds(projOps...), o.seconds(OpAttention), o.seconds(OpLMHead, OpLogits)
	b.ReportMetric(ms(proj), "proj-ms/step")
	b.ReportMetric(ms(attn), "attn-ms/step")
	b.ReportMetric(ms(head), "head-ms/step")
	b.ReportMetric(ms(o.t.Total().Seconds()-proj-attn-head), "other-ms/step")
	if *benchOps {
		for op := range numOps {
			if d := o.t[op].Seconds(); d > 0 {
				b.ReportMetric(ms(d), op.String()+"-ms/step")
			}
		}
	}
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

// attnFLOPs is attention's own work (q·k and p·v) for one query row that
// attends to ctx positions.
func attnFLOPs(m *Model, ctx float64) float64 {
	s := m.attnSpec
	return 2 * 2 * float64(s.Heads*s.HeadDim) * ctx * float64(len(m.w.layers))
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

// benchThreads are the thread counts the CPU benchmarks run at: one, and
// every core.
func benchThreads() []int {
	if n := runtime.NumCPU(); n > 1 {
		return []int{1, n}
	}
	return []int{1}
}

// BenchmarkDecode times decode steps of every preset model and weight
// dtype at batch 1, 8 and 32 on one thread and on every core
// (BenchmarkDecode/MODEL/DTYPE/batch-B/threads-T). %bw is the weight bytes
// streamed per second against the memory bandwidth probed in the same
// run (the MBU); %roof holds the step time against the roofline: the
// weights and the KV read once at that bandwidth, or the FLOPs at the
// probed peak (a BF16 model's matrix products on the AMX tiles or
// VDPBF16PS at those units' peak, probed too: see bf16Units), whichever
// takes longer.
func BenchmarkDecode(b *testing.B) {
	for _, name := range []string{"gpt2-124m", "llama-160m", "llama-1b"} {
		for _, dt := range []string{"f32", "bf16", "f16"} {
			for _, batch := range []int{1, 8, 32} {
				for _, threads := range benchThreads() {
					b.Run(fmt.Sprintf("%s/%s/batch-%d/threads-%d", name, dt, batch, threads), func(b *testing.B) {
						m := benchModel(b, name, dt, threads)
						lim := newProbeLimits(threads, true, batch > 1)
						lim.bf16 = bf16Units(m, batch)
						benchDecode(b, m, batch, lim)
					})
				}
			}
		}
	}
}

// decodePrompt and decodeTokens shape the decode benchmarks: prompts of
// 32 tokens, then up to 512 generated, so the KV read per step grows
// from 32 to 544 positions.
const (
	decodePrompt = 32
	decodeTokens = 512
)

// benchDecode times decode steps of batch sequences (prompts of
// decodePrompt tokens, then up to decodeTokens generated) and reports
// tokens/s, the weight bytes streamed per second against the bandwidth
// (%bw: the model bandwidth utilisation, MBU, counting weights only), and
// %roof, the roofline's time (weights and KV at the bandwidth, or the
// FLOPs at the peak, whichever is longer) over the measured time.
func benchDecode(b *testing.B, m *Model, batch int, lim benchLimits) {
	ctx := context.Background()
	maxTokens := min(m.cfg.MaxPositions-decodePrompt, decodeTokens)
	kvPerPos := float64(len(m.w.layers)) * float64(2*m.attnSpec.KVHeads*m.attnSpec.HeadDim*4)
	// The whole batch is prefilled in one step, so every timed step
	// decodes. The cache holds every sequence at full length.
	e, err := New(m, Options{KVCacheBytes: int64(float64(batch*(decodePrompt+maxTokens+DefaultBlockSize)) * kvPerPos),
		MaxBatchTokens: max(512, batch*decodePrompt), MaxSeqs: batch, DisablePrefixCaching: true, OpTimes: benchOpTimes(m)})
	if err != nil {
		b.Fatal(err)
	}
	kvPerPos = float64(len(m.w.layers)) * float64(compute.KVSpec{KVHeads: e.kv.KVHeads(), HeadDim: e.kv.HeadDim(), DType: e.kv.DType()}.Bytes())
	refill := func() {
		for e.HasWork() {
			for id := range e.byID {
				_ = e.Abort(id)
			}
		}
		for i := range batch {
			r := Request{ID: fmt.Sprint(i), Prompt: testPrompt(decodePrompt, m.cfg.VocabSize, i), Params: SamplingParams{MaxTokens: maxTokens, IgnoreEOS: true}}
			if err := e.Add(r); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := e.Step(ctx); err != nil { // the prefill step
			b.Fatal(err)
		}
	}
	refill()
	left, pos := maxTokens-1, decodePrompt
	var busy time.Duration
	var kvBytes, attn float64
	var ops opTotals
	b.ResetTimer()
	for range b.N {
		if left == 0 {
			b.StopTimer()
			refill()
			left, pos = maxTokens-1, decodePrompt
			b.StartTimer()
		}
		start := time.Now()
		if _, err := e.Step(ctx); err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		busy += d
		ops.add(&e.rec)
		pos++ // this step's row attends to pos positions
		kvBytes += float64(batch*pos) * kvPerPos
		attn += float64(batch) * attnFLOPs(m, float64(pos))
		left--
		b.StopTimer()
		lim.between(d)
		b.StartTimer()
	}
	b.StopTimer()
	bw, steps := lim.bandwidth(), float64(b.N)
	sec := busy.Seconds()
	wb := weightBytes(m)
	b.ReportMetric(steps*float64(batch)/sec, "tok/s")
	b.ReportMetric(wb*steps/sec/1e9, "weightGB/s")
	b.ReportMetric(bw/1e9, "bwGB/s")
	b.ReportMetric(100*wb*steps/sec/bw, "%bw")
	if proj := ops.seconds(projOps...); proj > 0 {
		// The projections' own streaming rate: the MBU of the matrix
		// kernels, without attention and the small ops between them.
		b.ReportMetric(100*(wb-lmHeadBytes(m))*steps/proj/bw, "%bwproj")
	}
	ops.report(b)
	if pk := lim.peak(); batch > 1 && pk > 0 {
		// matmulFLOPs leaves the LM head out (prefill computes one logit
		// row); decode computes logits for every row.
		head := 2 * float64(m.w.lmHead.Rows()*m.w.lmHead.Cols())
		products := steps * float64(batch) * (matmulFLOPs(m) + head)
		compute := (products + attn) / pk
		if bp := reportBF16Peak(b, lim); bp > 0 {
			// The matrix products run on the BF16 units, attention on the FMAs.
			compute = products/bp + attn/pk
		}
		roof := max((wb*steps+kvBytes)/bw, compute)
		b.ReportMetric(pk/1e9, "peakGFLOP/s")
		b.ReportMetric(kvBytes/steps/1e6, "kvMB/step")
		b.ReportMetric(100*roof/sec, "%roof")
	}
}

// BenchmarkArgmax times greedy sampling's scan of one row of gpt2-124m's
// 50257 logits (a batch-32 step makes 32) on one thread, against the
// read bandwidth of one thread measured beside it (the row itself is in
// L2, so the probe's memory rate is a floor, not a ceiling).
func BenchmarkArgmax(b *testing.B) {
	l := randomLogits(50257, 5)
	bw := cpu.MeasureMemoryBandwidth(1)
	for b.Loop() {
		argmax(l)
	}
	gbs := float64(4*len(l)) * float64(b.N) / b.Elapsed().Seconds() / 1e9
	b.ReportMetric(gbs, "GB/s")
	b.ReportMetric(100*gbs*1e9/bw, "%bw1")
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N)*1e6, "µs/row")
}

// BenchmarkPrefill times 512- and 2048-token prefills (gpt2-124m only
// 512: its positions end at 1024) on every core and reports the
// matrix-multiply FLOP/s against the peak FMA rate probed in the same run
// (%peak), and the same counting attention's own products too (%peakall);
// a BF16 model whose products run on the AMX tiles or VDPBF16PS also
// against those units' peak probed in the same run (%tilepeak,
// %pairspeak; see bf16Units), and counting attention's products, which
// run on them too (%tilepeakall, %pairspeakall).
func BenchmarkPrefill(b *testing.B) {
	for _, name := range []string{"llama-160m", "gpt2-124m"} {
		for _, dt := range []string{"f32", "bf16", "f16"} {
			for _, n := range []int{512, 2048} {
				if name == "gpt2-124m" && n > 512 {
					continue
				}
				b.Run(fmt.Sprintf("%s/%s/%d", name, dt, n), func(b *testing.B) {
					m := benchModel(b, name, dt, 0)
					lim := newProbeLimits(0, false, true)
					lim.bf16 = bf16Units(m, n)
					benchPrefill(b, m, n, lim)
				})
			}
		}
	}
}

// benchPrefill times the prefill of one n-token prompt in one step and
// reports tokens/s and the matrix-multiply FLOP/s (weights only, %peak;
// with attention's q·k and p·v over the causal half, %peakall) against
// the rate lim gives.
func benchPrefill(b *testing.B, m *Model, n int, lim benchLimits) {
	// 128 KiB of KV a token is more than any preset needs. The same prompt
	// runs every time, so the prefix cache is off: each step computes it all.
	e, err := New(m, Options{MaxBatchTokens: n, KVCacheBytes: max(256<<20, int64(n)<<17), DisablePrefixCaching: true, OpTimes: benchOpTimes(m)})
	if err != nil {
		b.Fatal(err)
	}
	prompt := testPrompt(n, m.cfg.VocabSize, 0)
	var busy time.Duration
	var ops opTotals
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if err := e.Add(Request{ID: fmt.Sprint(i), Prompt: prompt, Params: SamplingParams{MaxTokens: 1}}); err != nil {
			b.Fatal(err)
		}
		if _, err := e.Step(context.Background()); err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		busy += d
		ops.add(&e.rec)
		b.StopTimer()
		lim.between(d)
		b.StartTimer()
	}
	b.StopTimer()
	ops.report(b)
	pk := lim.peak()
	tokPerS := float64(b.N*n) / busy.Seconds()
	flops := matmulFLOPs(m) * tokPerS
	all := flops + attnFLOPs(m, float64(n+1)/2)*tokPerS // a row attends to (n+1)/2 positions on average
	b.ReportMetric(tokPerS, "tok/s")
	b.ReportMetric(flops/1e9, "GFLOP/s")
	b.ReportMetric(pk/1e9, "peakGFLOP/s")
	b.ReportMetric(100*flops/pk, "%peak")
	b.ReportMetric(100*all/pk, "%peakall")
	if bp := reportBF16Peak(b, lim); bp > 0 {
		units := "%" + lim.(*probeLimits).bf16 + "peak"
		b.ReportMetric(100*flops/bp, units)
		// Attention's products, over the bfloat16 cache BF16 weights get
		// by default, run on the same units (see compute/cpu's tilePairs).
		b.ReportMetric(100*all/bp, units+"all")
	}
}
