package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemllm/tandem/cluster"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// Faults of the coordinator and of etcd, with real processes: a killed
// coordinator strands no KV and a new one serves at once; etcd losing a
// member, or going away altogether, fails no request.

// lineWatch passes what a process writes on to w and reports the first
// line with a given first field.
type lineWatch struct {
	w     io.Writer
	field string
	found chan string

	mu   sync.Mutex
	line []byte
	done bool
}

func (l *lineWatch) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Through to w first: whoever the line wakes reads w with it (and
	// with the lines written together with it).
	n, err := l.w.Write(p)
	for _, b := range p[:n] {
		if b != '\n' {
			l.line = append(l.line, b)
			continue
		}
		if f := strings.Fields(string(l.line)); !l.done && len(f) >= 2 && f[0] == l.field {
			l.done = true
			l.found <- f[1]
		}
		l.line = l.line[:0]
	}
	return n, err
}

// process is a tandem subcommand a test runs and may kill; it dies with
// the test's process, and is killed when the test ends.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func startProcess(t testing.TB, args []string, out io.Writer) *process {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = diesWithParent()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	return p
}

// startCoordinatorProcess starts `tandem coordinator` with f's flags
// (on free ports) and returns it and its gRPC address once it serves.
func (tc *testCluster) startCoordinatorProcess(t testing.TB, f *coordinatorFlags) (*process, string) {
	t.Helper()
	lw := &lineWatch{w: tc.logs, field: "gRPC", found: make(chan string, 1)}
	p := startProcess(t, []string{"coordinator", "--etcd-endpoints", tc.endpoints, "--model", tc.dir, "--model-name", tc.name,
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--max-in-flight", fmt.Sprint(f.maxInFlight),
		"--queue-timeout", f.queueTimeout.String(), "--migration-limit", fmt.Sprint(f.migrationLimit)}, lw)
	select {
	case addr := <-lw.found:
		return p, addr
	case <-p.done:
		t.Fatalf("the coordinator exited: %v", p.err)
	case <-time.After(time.Minute):
		t.Fatal("the coordinator printed no gRPC address")
	}
	return nil, ""
}

// load runs n requests, at most conc at once, and returns their errors.
// started is closed when half have completed.
func (tc *testCluster) load(ctx context.Context, n, conc, maxTokens int, half chan<- struct{}) []error {
	errs := make([]error, n)
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := 0
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			prompt := []int32{int32(10 + i%500), 20, int32(30 + i%7)}
			g, err := tc.generate(ctx, prompt, greedyParams(maxTokens))
			if err == nil && (len(g.tokens) != maxTokens || g.finish != tandemv1.FinishReason_FINISH_REASON_LENGTH) {
				err = fmt.Errorf("%d tokens, finish %v", len(g.tokens), g.finish)
			}
			errs[i] = err
			mu.Lock()
			if done++; done == n/2 && half != nil {
				close(half)
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return errs
}

// failed lists the errors of errs that are not nil.
func failed(errs []error) []string {
	var out []string
	for i, err := range errs {
		if err != nil {
			out = append(out, fmt.Sprintf("request %d: %v", i, err))
		}
	}
	return out
}

// waitKVFree waits until every group's leader reports its whole KV pool
// free and no request running or waiting.
func (tc *testCluster) waitKVFree(t *testing.T, within time.Duration) {
	t.Helper()
	start := time.Now()
	leaders := map[string]tandemv1.WorkerClient{}
	for _, g := range tc.specs {
		leaders[g.name] = tc.leader(t, g.name)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var busy []string
		for name, l := range leaders {
			st, err := l.Stats(t.Context(), &tandemv1.StatsRequest{})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if st.GetKvBlocksFree() != st.GetKvBlocksTotal() || st.GetRunningRequests() != 0 || st.GetWaitingRequests() != 0 {
				busy = append(busy, fmt.Sprintf("%s: %d of %d blocks free, %d running, %d waiting", name,
					st.GetKvBlocksFree(), st.GetKvBlocksTotal(), st.GetRunningRequests(), st.GetWaitingRequests()))
			}
		}
		if len(busy) == 0 {
			return
		}
		if time.Since(start) > within {
			t.Fatalf("KV still held %v after the coordinator died: %s", within, strings.Join(busy, "; "))
		}
		<-tick.C
	}
}

// TestCoordinatorKilledStrandsNoKV: kill -9 of the coordinator while it
// streams requests through every group: each group aborts the requests
// whose coordinator is gone and frees every KV block within the KV
// timeout; a new coordinator started on the same etcd serves at once.
func TestCoordinatorKilledStrandsNoKV(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	tc := startClusterWith(t, "tiny", []groupSpec{
		{name: "prefill-0", role: cluster.RolePrefill, tp: 2},
		{name: "decode-0", role: cluster.RoleDecode, tp: 2},
		{name: "decode-1", role: cluster.RoleDecode, tp: 1},
	}, clusterOptions{coordinatorProcess: true})
	coord := tc.coordProc
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// Outputs far longer than the bound below takes to decode, so that
	// only aborts can free the KV within it; varied prompts.
	prompts := make([][]int32, 8)
	for i := range prompts {
		prompts[i] = make([]int32, 20+30*i)
		for j := range prompts[i] {
			prompts[i][j] = int32((i*131 + j*17) % 50000)
		}
	}
	results, progressed := tc.startStreams(ctx, prompts, func(int) *tandemv1.SamplingParams { return greedyParams(1800) }, 2)
	waitProgress(t, progressed, len(prompts))
	held := 0
	for _, g := range []string{"decode-0", "decode-1"} {
		st := tc.workerStats(t, g)
		held += int(st.GetKvBlocksTotal() - st.GetKvBlocksFree())
	}
	if held == 0 {
		t.Fatal("no decode group holds KV: the kill would test nothing")
	}
	killed := time.Now()
	if err := coord.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for _, r := range results() {
		if r.err == nil {
			t.Fatal("a request finished although its coordinator was killed")
		}
	}
	// The workers abort a request when its coordinator's stream breaks:
	// at once for a killed process (its sockets close), within their
	// keepalive (15 s) for a vanished host. The requests would need
	// longer than this to end by themselves.
	tc.waitKVFree(t, 5*time.Second)
	t.Logf("every KV block of every group free %v after the coordinator was killed", time.Since(killed))

	restarted := time.Now()
	_, addr := tc.startCoordinatorProcess(t, clusterOptions{}.coordinatorFlags())
	tc.connect(t, addr)
	g, err := tc.generate(t.Context(), []int32{1, 2, 3}, greedyParams(8))
	if err != nil || len(g.tokens) != 8 {
		t.Fatalf("first request to the new coordinator: %d tokens, %v", len(g.tokens), err)
	}
	t.Logf("the new coordinator answered its first request %v after its start", time.Since(restarted))
	tc.waitKVFree(t, 10*time.Second)
}

// TestEtcdMemberLossUnderLoad: of three etcd members the leader is
// stopped while requests stream; every process has all three endpoints,
// so for longer than the workers' leases no request fails, no process
// finds etcd unavailable, and every registration stays.
func TestEtcdMemberLossUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	// The coordinator's log goes with the workers' to tc.logs.
	tc := startClusterWith(t, "tiny", disaggregated(1, 2), clusterOptions{etcdMembers: 3, coordinatorProcess: true})
	half := make(chan struct{})
	errs := make(chan []error, 1)
	go func() { errs <- tc.load(t.Context(), 100, 16, 24, half) }()
	<-half
	leader := tc.etcd.Leader()
	stopped := time.Now()
	if err := tc.etcd.StopMember(leader); err != nil {
		t.Fatal(err)
	}
	if f := failed(<-errs); len(f) > 0 {
		t.Fatalf("%d requests failed after etcd member %d stopped:\n%s", len(f), leader, strings.Join(f, "\n"))
	}
	tc.loadUntil(t, stopped.Add(12*time.Second))
	if n := strings.Count(tc.logs.String(), "etcd does not answer"); n > 0 {
		t.Fatalf("%d times a process found etcd unavailable after losing one member of three", n)
	}
	if err := waitGroupsReady(t.Context(), tc.cli, tc.specs, 30*time.Second, tc.sup, io.Discard); err != nil {
		t.Fatal(err)
	}
	tc.waitServing(t, len(tc.specs))
}

// loadUntil keeps requests going until deadline; every one must succeed.
func (tc *testCluster) loadUntil(t *testing.T, deadline time.Time) int {
	t.Helper()
	start := time.Now()
	n := 0
	for time.Now().Before(deadline) {
		if f := failed(tc.load(t.Context(), 8, 8, 24, nil)); len(f) > 0 {
			t.Fatalf("%v into the fault: %s", time.Since(start), strings.Join(f, "\n"))
		}
		n += 8
	}
	return n
}

// TestEtcdOutageKeepsServing: etcd stopped altogether, for longer than
// the workers' leases: the coordinator serves the groups it knows (and
// says etcd is away), no worker leaves, no request fails; once etcd is
// back on the same data, registrations are renewed and serving goes on.
func TestEtcdOutageKeepsServing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	// The coordinator's log goes with the workers' to tc.logs.
	tc := startClusterWith(t, "tiny", disaggregated(1, 2), clusterOptions{coordinatorProcess: true})
	u, err := url.Parse(tc.etcd.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	half := make(chan struct{})
	errs := make(chan []error, 1)
	go func() { errs <- tc.load(t.Context(), 120, 8, 24, half) }()
	<-half
	outage := time.Now()
	if err := tc.etcd.StopMember(0); err != nil { // as a crash would
		t.Fatal(err)
	}
	// Every worker notices (its lease renewals go unanswered), which takes
	// up to two thirds of its 5 s lease; the coordinator within a second.
	workers := 0
	for _, g := range tc.specs {
		workers += g.tp
	}
	tc.waitLog(t, "etcd does not answer; serving on", workers, time.Minute)
	tc.waitLog(t, "etcd does not answer; serving the groups known", 1, time.Minute)
	if f := failed(<-errs); len(f) > 0 {
		t.Fatalf("%d requests failed while etcd was away:\n%s", len(f), strings.Join(f, "\n"))
	}
	// Requests go on being served until well past the workers' 5 s
	// leases, counted from the outage's start.
	n := tc.loadUntil(t, outage.Add(12*time.Second))
	t.Logf("%d more requests served in the outage's first %v", n, time.Since(outage))
	select {
	case f := <-tc.sup.Down():
		t.Fatalf("group %s went down during the outage: %v", f.Group, f.Err)
	default:
	}

	e, err := cluster.StartEmbedded(t.Context(), tc.etcdDir, cluster.EmbeddedOptions{ClientAddr: u.Host})
	if err != nil {
		t.Fatal(err)
	}
	tc.etcd = e
	tc.waitLog(t, "etcd answers again; the rank's registration is kept alive", workers, time.Minute)
	tc.waitLog(t, "etcd answers again; following the cluster's membership", 1, time.Minute)
	if err := waitGroupsReady(t.Context(), tc.cli, tc.specs, 30*time.Second, tc.sup, io.Discard); err != nil {
		t.Fatal(err)
	}
	if f := failed(tc.load(t.Context(), 20, 8, 8, nil)); len(f) > 0 {
		t.Fatalf("after etcd came back: %s", strings.Join(f, "\n"))
	}
}

// waitLog waits until the processes' logs hold n lines containing s.
func (tc *testCluster) waitLog(t *testing.T, s string, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for bytes.Count([]byte(tc.logs.String()), []byte(s)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d log lines with %q after %v, want %d", bytes.Count([]byte(tc.logs.String()), []byte(s)), s, within, n)
		}
		<-tick.C
	}
}
