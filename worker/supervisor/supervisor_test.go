package supervisor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/internal/proctest"
)

// The tests run real processes: this test binary re-executed as a rank
// ("rank MODE ...") or as a supervisor of its own ("supervise N").
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "rank" {
		os.Exit(fakeRank(os.Args[2], os.Args[3:]))
	}
	if len(os.Args) > 2 && os.Args[1] == "supervise" {
		os.Exit(superviseChild(os.Args[2]))
	}
	code := m.Run()
	if code == 0 {
		// Every test stops its supervisor: nothing may be left running.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// fakeRank behaves as MODE says:
//
//	serve            run until SIGTERM, then exit 0
//	crash            exit 1 at once
//	stubborn         ignore SIGTERM
//	register E G R I register rank R of incarnation I of group G (TP 2)
//	                 in etcd at E under a 1 s lease, then serve
func fakeRank(mode string, args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	switch mode {
	case "crash":
		return 1
	case "stubborn":
		signal.Ignore(syscall.SIGTERM)
		select {}
	case "register":
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{args[0]}, DialTimeout: 5 * time.Second})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		defer cli.Close()
		rank, _ := strconv.Atoi(args[2])
		inc, _ := strconv.Atoi(args[3])
		r, err := cluster.Register(ctx, cli, cluster.Registration{Role: cluster.RoleDecode, Group: args[1], Rank: rank, TP: 2,
			Addr: "127.0.0.1:1", Model: "m", KVBlockSize: 16, Incarnation: inc}, time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		defer r.Close(context.Background())
	}
	<-ctx.Done()
	return 0
}

// superviseChild runs a supervisor of one group of n serving ranks, prints
// the ranks' pids on stdout, and runs until killed.
func superviseChild(n string) int {
	ranks, _ := strconv.Atoi(n)
	s, err := Start(context.Background(), Options{}, Group{Name: "g", Ranks: seq(ranks), Args: argsOf("serve")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	st, _ := s.Status("g")
	fmt.Println(strings.Trim(fmt.Sprint(st.PIDs), "[]"))
	select {}
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func argsOf(mode string, extra ...string) func(rank, inc int) []string {
	return func(rank, inc int) []string {
		return append([]string{"rank", mode}, extra...)
	}
}

// logBuffer collects the supervisor's logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func start(t *testing.T, opts Options, groups ...Group) (*Supervisor, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	if opts.Output == nil {
		opts.Output = logs
	}
	s, err := Start(t.Context(), opts, groups...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("supervisor logs:\n%s", logs)
		}
	})
	return s, logs
}

// waitFor polls cond (every 10 ms) until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tick.C
	}
}

// ignoresSIGTERM reads the process's ignored-signals mask in /proc.
func ignoresSIGTERM(pid int) bool {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(status)) {
		if mask, ok := strings.CutPrefix(line, "SigIgn:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(mask), 16, 64)
			return err == nil && m&(1<<(syscall.SIGTERM-1)) != 0
		}
	}
	return false
}

// A rank killed with SIGKILL takes its whole group down; the group comes
// back as a new incarnation of every rank within its backoff, with the
// incarnation number passed to each rank's command line.
func TestRestartsGroupAsUnit(t *testing.T) {
	proctest.Require(t)
	var mu sync.Mutex
	var calls []string
	args := func(rank, inc int) []string {
		mu.Lock()
		calls = append(calls, fmt.Sprintf("%d@%d", rank, inc))
		mu.Unlock()
		return []string{"rank", "serve"}
	}
	const backoff = 200 * time.Millisecond
	s, _ := start(t, Options{Backoff: backoff, StopTimeout: 5 * time.Second}, Group{Name: "g", Ranks: seq(3), Args: args},
		Group{Name: "other", Ranks: seq(1), Args: argsOf("serve")})
	st, _ := s.Status("g")
	other, _ := s.Status("other")
	if len(st.PIDs) != 3 || st.Incarnation != 0 {
		t.Fatalf("status %+v", st)
	}
	killed := time.Now()
	if err := syscall.Kill(st.PIDs[1], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var next Status
	waitFor(t, 5*time.Second, "incarnation 1", func() bool {
		next, _ = s.Status("g")
		return next.Incarnation == 1 && len(next.PIDs) == 3
	})
	// Ranks 0 and 2 were stopped with SIGTERM, so the restart comes right
	// after the backoff, not after StopTimeout.
	if d := time.Since(killed); d < backoff || d > backoff+2*time.Second {
		t.Errorf("restarted %v after the kill, want about the backoff %v", d, backoff)
	}
	for _, pid := range st.PIDs {
		if !proctest.Exited(pid) || slices.Contains(next.PIDs, pid) {
			t.Errorf("rank pid %d of incarnation 0 still runs", pid)
		}
	}
	mu.Lock()
	want := []string{"0@0", "1@0", "2@0", "0@1", "1@1", "2@1"}
	if !slices.Equal(calls, want) {
		t.Errorf("Args calls %v, want %v", calls, want)
	}
	mu.Unlock()
	if next.Restarts != 1 || next.Down {
		t.Errorf("status %+v", next)
	}
	if o, _ := s.Status("other"); !slices.Equal(o.PIDs, other.PIDs) || o.Incarnation != 0 {
		t.Errorf("the other group was touched: %+v, was %+v", o, other)
	}
	s.Stop()
	for _, pid := range append(next.PIDs, other.PIDs...) {
		if !proctest.Exited(pid) {
			t.Errorf("pid %d runs after Stop", pid)
		}
	}
}

// A group that keeps dying right after its start is left down after
// CrashLoopLimit tries, with a clear log and a Failure on Down.
func TestCrashLoopLimit(t *testing.T) {
	s, logs := start(t, Options{Backoff: 10 * time.Millisecond, CrashLoopLimit: 3}, Group{Name: "bad", Ranks: seq(2), Args: argsOf("crash")})
	select {
	case f := <-s.Down():
		if f.Group != "bad" || !errors.Is(f.Err, ErrCrashLoop) || !strings.Contains(f.Err.Error(), "exit status 1") {
			t.Fatalf("failure %+v, want a crash loop of bad naming the exit status", f)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no crash-loop failure")
	}
	st, _ := s.Status("bad")
	if !st.Down || st.Restarts != 2 || st.PIDs != nil {
		t.Fatalf("status %+v, want down after 3 incarnations", st)
	}
	if !strings.Contains(logs.String(), "group left down") {
		t.Fatalf("no log of the group left down:\n%s", logs)
	}
}

// With restarts off, the first death stops the other ranks and leaves
// the group down.
func TestNoRestart(t *testing.T) {
	proctest.Require(t)
	s, _ := start(t, Options{CrashLoopLimit: -1}, Group{Name: "g", Ranks: []int{1, 2}, Args: argsOf("serve")})
	st, _ := s.Status("g")
	if err := syscall.Kill(st.PIDs[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-s.Down():
		if !strings.Contains(f.Err.Error(), "rank 1 exited: signal: killed") {
			t.Fatalf("failure %v", f.Err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("group not reported down")
	}
	if !proctest.Exited(st.PIDs[1]) {
		t.Fatal("rank 2 runs on after rank 1 died")
	}
}

// A rank that ignores SIGTERM is killed after StopTimeout.
func TestStopKillsStubbornRank(t *testing.T) {
	proctest.Require(t)
	s, logs := start(t, Options{StopTimeout: 300 * time.Millisecond}, Group{Name: "g", Ranks: seq(2), Args: argsOf("stubborn")})
	st, _ := s.Status("g")
	for _, pid := range st.PIDs {
		waitFor(t, 10*time.Second, "the rank to ignore SIGTERM", func() bool { return ignoresSIGTERM(pid) })
	}
	begin := time.Now()
	s.Stop()
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("Stop took %v", d)
	}
	for _, pid := range st.PIDs {
		if !proctest.Exited(pid) {
			t.Errorf("pid %d runs after Stop", pid)
		}
	}
	if !strings.Contains(logs.String(), "did not stop in time") {
		t.Errorf("no log of the kill:\n%s", logs)
	}
}

// A supervisor killed with SIGKILL leaves no rank behind: the kernel
// kills them (parent-death signal).
func TestParentKilledLeavesNoRank(t *testing.T) {
	proctest.Require(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "supervise", "3")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(line) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("pids line %q", line)
		}
		pids = append(pids, pid)
	}
	if len(pids) != 3 {
		t.Fatalf("pids %v", pids)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the ranks to die with their supervisor", func() bool {
		for _, pid := range pids {
			if !proctest.Exited(pid) {
				return false
			}
		}
		return true
	})
}

// With etcd: a rank that stops answering (SIGSTOP) while its process
// lives loses its registration; the group is restarted as a whole, and
// the new incarnation registers the same ranks at once (the paused rank's
// lease would otherwise hold its key) and becomes ready.
func TestLapsedRegistrationRestartsGroup(t *testing.T) {
	proctest.Require(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	etcd, err := cluster.StartEmbedded(ctx, t.TempDir(), cluster.EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close) // after the supervisor's Stop
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcd.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	args := func(rank, inc int) []string {
		return []string{"rank", "register", etcd.Endpoints()[0], "g", strconv.Itoa(rank), strconv.Itoa(inc)}
	}
	s, logs := start(t, Options{Etcd: cli, Backoff: 10 * time.Millisecond, StopTimeout: 5 * time.Second}, Group{Name: "g", Ranks: seq(2), Args: args})
	var st Status
	waitFor(t, 20*time.Second, "incarnation 0 ready", func() bool { st, _ = s.Status("g"); return st.Ready })
	if err := syscall.Kill(st.PIDs[1], syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "incarnation 1 ready", func() bool {
		next, _ := s.Status("g")
		return next.Incarnation == 1 && next.Ready
	})
	for _, pid := range st.PIDs {
		if !proctest.Exited(pid) {
			t.Errorf("pid %d of incarnation 0 still runs", pid)
		}
	}
	if !strings.Contains(logs.String(), "lapsed") {
		t.Errorf("the restart's reason is not the lapsed registration:\n%s", logs)
	}
}
