package cpu

import (
	"runtime"
	"sync"
	"time"
	"unsafe"
)

// bandwidthBytes is the buffer MeasureMemoryBandwidth streams: far larger
// than any last-level cache, so the figure is DRAM bandwidth.
const bandwidthBytes = 256 << 20

// MeasureMemoryBandwidth measures the machine's memory read bandwidth in
// bytes per second: threads goroutines (default runtime.NumCPU() when
// threads ≤ 0) each load their share of a 256 MiB buffer into vector
// registers with the widest kernel set available (plain loads as four
// streams with prefetches, as a decode tile kernel reads four weight rows;
// no arithmetic, no writes), timed from a common start until the last one
// finishes; the best of three passes is returned. The buffer is written
// once first so its pages are real memory, not the shared zero page. This is
// the bound a memory-bound decode step (weights streamed once) can reach.
// It takes about a quarter of a second.
func MeasureMemoryBandwidth(threads int) float64 {
	p := NewProbe(threads)
	best := 0.0
	for range 3 {
		n, d := p.Bandwidth()
		best = max(best, float64(n)/d.Seconds())
	}
	return best
}

// MeasurePeakFLOPS measures the machine's peak float32 FLOP/s: threads
// goroutines (default runtime.NumCPU()) each run a loop of independent
// fused multiply-adds on the widest vectors available (12 chains, enough
// to hide FMA latency), counting 2 FLOPs per lane per FMA; the best of
// two timed runs of about 0.1 s is returned. Without assembly kernels it
// measures a scalar Go multiply-add loop instead. This is the bound a
// compute-bound GEMM (prefill) can reach.
func MeasurePeakFLOPS(threads int) float64 { return bestRate(NewProbe(threads).FLOPs) }

// MeasurePeakTileFLOPS is MeasurePeakFLOPS for the AMX tile products of
// BF16 (16×16×32 multiply-adds each, 2 FLOPs apiece) where the machine
// has them and the AMX kernel set is usable, 0 where not. This is the
// bound the AMX path's BF16 GEMMs can reach.
func MeasurePeakTileFLOPS(threads int) float64 { return bestRate(NewProbe(threads).TileFLOPs) }

// MeasurePeakPairFLOPS is MeasurePeakFLOPS for AVX512_BF16's VDPBF16PS
// (16 lanes of two multiply-adds each) where the machine has it, 0 where
// not. This is the bound the pairs kernels' BF16 GEMMs can reach.
func MeasurePeakPairFLOPS(threads int) float64 { return bestRate(NewProbe(threads).PairFLOPs) }

// bestRate is the best of two runs of about 0.1 s of a Probe's compute
// loop, in FLOP/s; 0 for a loop the machine does not have.
func bestRate(loop func(time.Duration) (float64, time.Duration)) float64 {
	best := 0.0
	for range 2 {
		if n, d := loop(100 * time.Millisecond); d > 0 {
			best = max(best, n/d.Seconds())
		}
	}
	return best
}

// A Probe measures the machine's limits in short passes, so that a
// benchmark can interleave them with the work it times: on a machine
// shared with other work, the bandwidth and FLOP rate available move
// within seconds, and a limit measured once before or after the timed
// work is compared with different conditions. Summing the probes' bytes
// (or FLOPs) and times over the same stretch as the work gives a limit
// and a figure measured under the same load. A Probe holds a 256 MiB
// buffer; it is not safe for concurrent use.
type Probe struct {
	threads int
	words   []uint64
	read    func(p *byte, n int)
	fma     loopProbe
	tile    loopProbe // run is nil without AMX
	pairs   loopProbe // run is nil without AVX512_BF16
}

// loopProbe is a compute loop of a Probe's.
type loopProbe struct {
	run          func(iters int)
	flopsPerIter float64
	iters        int // iterations of about 10 ms, once calibrated
}

// NewProbe makes a probe that runs on threads goroutines (default
// runtime.NumCPU() when threads ≤ 0), each locked to an OS thread, with
// the widest kernel set available. It writes its buffer once, so that
// its pages are real memory (about 0.1 s).
func NewProbe(threads int) *Probe {
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	k := kernelSets()[0]
	p := &Probe{threads: threads, words: make([]uint64, bandwidthBytes/8), read: k.read,
		fma:   loopProbe{run: k.fma, flopsPerIter: float64(fmaChains * k.lanes * 2)},
		tile:  loopProbe{run: k.tilePeak, flopsPerIter: 4 * 16 * 16 * 32 * 2},
		pairs: loopProbe{run: k.pairsPeak, flopsPerIter: fmaChains * 16 * 2 * 2}}
	if p.read == nil {
		p.read = goRead
	}
	if p.fma.run == nil {
		p.fma = loopProbe{run: goFMA, flopsPerIter: 2 * fmaChains}
	}
	for i := range p.words {
		p.words[i] = uint64(i)
	}
	return p
}

// Bandwidth reads the probe's 256 MiB once, each thread its share (see
// MeasureMemoryBandwidth), and returns the bytes read and the time from
// the threads' common start to the last one's finish.
func (p *Probe) Bandwidth() (int64, time.Duration) {
	buf := unsafe.Slice((*byte)(unsafe.Pointer(&p.words[0])), bandwidthBytes)
	part := bandwidthBytes / p.threads &^ 4095
	d := onAllThreads(p.threads, func(t int) { p.read(&buf[t*part], part) })
	return int64(part * p.threads), d
}

// FLOPs runs independent FMA chains on every thread for about d (see
// MeasurePeakFLOPS) and returns the FLOPs done and the time they took.
func (p *Probe) FLOPs(d time.Duration) (float64, time.Duration) { return p.loop(&p.fma, d) }

// TileFLOPs is FLOPs for the AMX tile products (see
// MeasurePeakTileFLOPS); it returns 0, 0 where there are none.
func (p *Probe) TileFLOPs(d time.Duration) (float64, time.Duration) {
	if p.tile.run == nil {
		return 0, 0
	}
	return p.loop(&p.tile, d)
}

// PairFLOPs is FLOPs for VDPBF16PS (see MeasurePeakPairFLOPS); it
// returns 0, 0 where there is none.
func (p *Probe) PairFLOPs(d time.Duration) (float64, time.Duration) {
	if p.pairs.run == nil {
		return 0, 0
	}
	return p.loop(&p.pairs, d)
}

// loop runs l on every thread for about d.
func (p *Probe) loop(l *loopProbe, d time.Duration) (float64, time.Duration) {
	if l.iters == 0 {
		// Calibrate to about 10 ms.
		iters := 1 << 8
		for {
			t := onAllThreads(p.threads, func(int) { l.run(iters) })
			if t > 2*time.Millisecond || iters > 1<<28 {
				l.iters = max(1, int(float64(iters)*float64(10*time.Millisecond)/float64(t)))
				break
			}
			iters *= 4
		}
	}
	iters := max(1, int(float64(l.iters)*float64(d)/float64(10*time.Millisecond)))
	t := onAllThreads(p.threads, func(int) { l.run(iters) })
	return float64(iters) * l.flopsPerIter * float64(p.threads), t
}

// onAllThreads runs f(0..threads-1) on as many goroutines, each locked to
// an OS thread, and returns the time from their common start to the last
// finish.
func onAllThreads(threads int, f func(t int)) time.Duration {
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	ready.Add(threads)
	done.Add(threads)
	for t := range threads {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			ready.Done()
			<-start
			f(t)
			done.Done()
		}()
	}
	ready.Wait()
	t0 := time.Now()
	close(start)
	done.Wait()
	return time.Since(t0)
}

// fmaChains is the number of independent multiply-add chains of the FLOP/s
// loops; the assembly generator uses the same number.
const fmaChains = 12

// goRead sums n bytes at p as uint64 words.
func goRead(p *byte, n int) {
	words := unsafe.Slice((*uint64)(unsafe.Pointer(p)), n/8)
	var s0, s1, s2, s3 uint64
	for i := 0; i+4 <= len(words); i += 4 {
		s0 += words[i]
		s1 += words[i+1]
		s2 += words[i+2]
		s3 += words[i+3]
	}
	sink(s0 + s1 + s2 + s3)
}

// goFMA runs iters rounds of fmaChains independent float32 multiply-adds.
func goFMA(iters int) {
	var a [fmaChains]float32
	x, y := float32(0.999), float32(1e-3)
	for range iters {
		for c := range a {
			a[c] = a[c]*x + y
		}
	}
	var s float32
	for _, v := range a {
		s += v
	}
	sink(uint64(s))
}

//go:noinline
func sink(uint64) {}
