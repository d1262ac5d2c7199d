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
// registers with the widest kernel set available (plain loads, no
// arithmetic, no writes), timed from a common start until the last one
// finishes; the best of three passes is returned. The buffer is written
// once first so its pages are real memory, not the shared zero page. This is
// the bound a memory-bound decode step (weights streamed once) can reach.
// It takes about a quarter of a second.
func MeasureMemoryBandwidth(threads int) float64 {
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	words := make([]uint64, bandwidthBytes/8)
	for i := range words {
		words[i] = uint64(i)
	}
	buf := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), bandwidthBytes)
	read := kernelSets()[0].read
	if read == nil {
		read = goRead
	}
	part := bandwidthBytes / threads &^ 4095
	best := 0.0
	for range 3 {
		d := onAllThreads(threads, func(t int) { read(&buf[t*part], part) })
		best = max(best, float64(part*threads)/d.Seconds())
	}
	runtime.KeepAlive(words)
	return best
}

// MeasurePeakFLOPS measures the machine's peak float32 FLOP/s: threads
// goroutines (default runtime.NumCPU()) each run a loop of independent
// fused multiply-adds on the widest vectors available (12 chains, enough
// to hide FMA latency), counting 2 FLOPs per lane per FMA; the best of
// two timed runs of about 0.1 s is returned. Without assembly kernels it
// measures a scalar Go multiply-add loop instead. This is the bound a
// compute-bound GEMM (prefill) can reach.
func MeasurePeakFLOPS(threads int) float64 {
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	k := kernelSets()[0]
	fma, flopsPerIter := k.fma, float64(fmaChains*k.lanes*2)
	if fma == nil {
		fma, flopsPerIter = goFMA, 2*fmaChains
	}
	// Calibrate to about 0.1 s per run.
	iters := 1 << 16
	for {
		d := onAllThreads(threads, func(int) { fma(iters) })
		if d > 10*time.Millisecond || iters > 1<<28 {
			iters = int(float64(iters) * float64(100*time.Millisecond) / float64(max(d, time.Microsecond)))
			break
		}
		iters *= 8
	}
	best := 0.0
	for range 2 {
		d := onAllThreads(threads, func(int) { fma(iters) })
		best = max(best, float64(iters)*flopsPerIter*float64(threads)/d.Seconds())
	}
	return best
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
