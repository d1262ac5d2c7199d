package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemllm/tandem/cluster"
)

// Overload: admission stays bounded. A request past --max-in-flight, or
// still queued at a group past --queue-timeout, gets RESOURCE_EXHAUSTED
// at once; the others complete; nothing is left held.

// longPrompt is a prompt of n tokens that differ per i.
func longPrompt(i, n int) []int32 {
	p := make([]int32, n)
	for j := range p {
		p[j] = int32((i*131 + j*17) % 50000)
	}
	return p
}

// outcome is how one request of an overload ended and when.
type outcome struct {
	err  error
	took time.Duration
}

// TestOverloadRejectsAtOnce: ten times --max-in-flight requests at once,
// of long prompts the single prefill group computes one chunk at a time:
// those past the limit are refused at once, those left queued past the
// queue timeout are refused just past it, the rest complete, and every KV
// block is free afterwards.
func TestOverloadRejectsAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	const inFlight, queueTimeout = 12, 400 * time.Millisecond
	tc := startClusterWith(t, "tiny", disaggregated(1, 1), clusterOptions{maxInFlight: inFlight, queueTimeout: queueTimeout})
	const n = 10 * inFlight
	out := make([]outcome, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			t0 := time.Now()
			g, err := tc.generate(t.Context(), longPrompt(i, 1500), greedyParams(4))
			if err == nil && len(g.tokens) != 4 {
				err = fmt.Errorf("%d tokens, want 4", len(g.tokens))
			}
			out[i] = outcome{err: err, took: time.Since(t0)}
		})
	}
	close(start)
	wg.Wait()
	var done, full, queued int
	var fullWorst, queuedWorst time.Duration
	for i, o := range out {
		msg := status.Convert(o.err).Message()
		switch {
		case o.err == nil:
			done++
		case status.Code(o.err) == codes.ResourceExhausted && strings.Contains(msg, "requests in flight"):
			full++
			fullWorst = max(fullWorst, o.took)
		case status.Code(o.err) == codes.ResourceExhausted && strings.Contains(msg, "queue timeout"):
			queued++
			queuedWorst = max(queuedWorst, o.took)
		default:
			t.Errorf("request %d: %v after %v", i, o.err, o.took)
		}
	}
	t.Logf("%d requests: %d completed, %d refused at the in-flight limit (slowest answer %v), %d past the queue timeout (slowest %v)",
		n, done, full, fullWorst, queued, queuedWorst)
	switch {
	case done == 0 || full == 0 || queued == 0:
		t.Fatalf("want some of each: %d completed, %d at the limit, %d past the queue timeout", done, full, queued)
	case fullWorst > time.Second:
		t.Errorf("a request past the in-flight limit waited %v for its refusal", fullWorst)
	case queuedWorst > queueTimeout+2*time.Second:
		t.Errorf("a request past its queue timeout waited %v for its refusal (timeout %v)", queuedWorst, queueTimeout)
	}
	tc.waitKVFree(t, 10*time.Second)
}

// procMemory is a process's resident set now and at its peak, from
// /proc/PID/status (kB there).
func procMemory(pid int) (rss, peak int64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v << 10
		case "VmHWM:":
			peak = v << 10
		}
	}
	return rss, peak, nil
}

// overloadPhase is what one load phase measured.
type overloadPhase struct {
	clients             int
	completed, refused  int64
	coordPeak, workPeak int64   // peak RSS: the coordinator's, the largest worker's
	refusal             []int64 // ns to each refusal
}

// BenchmarkOverloadMemory drives a cluster whose coordinator admits 32
// requests at once with 32 closed-loop clients (1×) and then, on a fresh
// coordinator process, with 320 (10×), each for the same time, and
// reports the coordinator's peak resident memory of each phase, the
// workers' peak, and how fast refusals come. The limit it is held
// against: the 10× peak within 1.5 times the 1× peak (admission bounds
// what the coordinator holds; a refusal costs no more than its message).
func BenchmarkOverloadMemory(b *testing.B) {
	if _, _, err := procMemory(os.Getpid()); err != nil {
		b.Skip("no /proc to read memory from")
	}
	const inFlight, phase = 32, 10 * time.Second
	tc := startClusterWith(b, "tiny", []groupSpec{
		{name: "prefill-0", role: cluster.RolePrefill, tp: 1},
		{name: "decode-0", role: cluster.RoleDecode, tp: 1},
	}, clusterOptions{maxInFlight: inFlight, coordinatorProcess: true})
	b.ResetTimer()
	var one, ten overloadPhase
	for b.Loop() {
		one = tc.overloadPhase(b, inFlight, 1, phase)
		ten = tc.overloadPhase(b, inFlight, 10, phase)
	}
	b.StopTimer()
	ratio := float64(ten.coordPeak) / float64(one.coordPeak)
	mib := func(n int64) float64 { return float64(n) / (1 << 20) }
	b.ReportMetric(mib(one.coordPeak), "coord_peak_rss_1x_MiB")
	b.ReportMetric(mib(ten.coordPeak), "coord_peak_rss_10x_MiB")
	b.ReportMetric(ratio, "coord_peak_ratio")
	b.ReportMetric(mib(ten.workPeak), "worker_peak_rss_MiB")
	slices.Sort(ten.refusal)
	p := func(q float64) float64 {
		if len(ten.refusal) == 0 {
			return 0
		}
		return float64(ten.refusal[int(q*float64(len(ten.refusal)-1))]) / 1e6
	}
	b.ReportMetric(p(0.5), "refusal_ms_p50")
	b.ReportMetric(p(0.99), "refusal_ms_p99")
	b.Logf("1×: %d clients, %d completed, %d refused; coordinator peak RSS %.1f MiB, largest worker %.1f MiB",
		one.clients, one.completed, one.refused, mib(one.coordPeak), mib(one.workPeak))
	b.Logf("10×: %d clients, %d completed, %d refused (P50 %.2f ms, P99 %.2f ms to the refusal); coordinator peak RSS %.1f MiB (%.2f× the 1× figure; limit 1.5×), largest worker %.1f MiB",
		ten.clients, ten.completed, ten.refused, p(0.5), p(0.99), mib(ten.coordPeak), ratio, mib(ten.workPeak))
	if ratio > 1.5 {
		b.Errorf("the coordinator's peak RSS grew %.2f× under 10× overload (limit 1.5×)", ratio)
	}
}

// overloadPhase starts a fresh coordinator process (so that its peak RSS
// is this phase's), runs factor×inFlight closed-loop clients for d and
// measures. A refused client tries again after 5 ms, as a client honouring
// a short Retry-After would.
func (tc *testCluster) overloadPhase(b *testing.B, inFlight, factor int, d time.Duration) overloadPhase {
	proc, addr := tc.startCoordinatorProcess(b, clusterOptions{maxInFlight: inFlight}.coordinatorFlags())
	tc.connect(b, addr)
	tc.waitServing(b, len(tc.specs))
	ph := overloadPhase{clients: factor * inFlight}
	ctx, cancel := context.WithTimeout(b.Context(), d)
	defer cancel()
	var completed, refused atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for c := range ph.clients {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				t0 := time.Now()
				_, err := tc.generate(ctx, longPrompt(c*1000+i, 200), greedyParams(16))
				switch {
				case err == nil:
					completed.Add(1)
				case status.Code(err) == codes.ResourceExhausted:
					refused.Add(1)
					mu.Lock()
					ph.refusal = append(ph.refusal, int64(time.Since(t0)))
					mu.Unlock()
					select {
					case <-time.After(5 * time.Millisecond):
					case <-ctx.Done():
					}
				case ctx.Err() != nil || status.Code(err) == codes.DeadlineExceeded:
					// The phase ended (gRPC's timer may fire before ctx's).
				default:
					b.Errorf("client %d: %v", c, err)
					return
				}
			}
		})
	}
	wg.Wait()
	ph.completed, ph.refused = completed.Load(), refused.Load()
	var err error
	if _, ph.coordPeak, err = procMemory(proc.cmd.Process.Pid); err != nil {
		b.Fatal(err)
	}
	for _, g := range tc.specs {
		st, _ := tc.sup.Status(g.name)
		for _, pid := range st.PIDs {
			if _, peak, err := procMemory(pid); err == nil {
				ph.workPeak = max(ph.workPeak, peak)
			}
		}
	}
	_ = proc.cmd.Process.Kill()
	<-proc.done
	return ph
}
