package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/internal/proctest"
	"github.com/tandemllm/tandem/internal/scratch"
	"github.com/tandemllm/tandem/worker/supervisor"
)

// TestGroupRestartsAfterRankKilled: kill -9 of one rank of a decode group
// takes the whole group down; its supervisor starts it again as a new
// incarnation, and the coordinator routes to it once it is ready, within
// its backoff plus a start.
func TestGroupRestartsAfterRankKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	const backoff = 200 * time.Millisecond
	tc := startClusterWith(t, "tiny", disaggregated(1, 2), clusterOptions{restart: &restartFlags{backoff: backoff, limit: 3}})
	if _, err := tc.generate(t.Context(), []int32{1, 2, 3}, greedyParams(4)); err != nil {
		t.Fatal(err)
	}
	before, _ := tc.sup.Status("decode-0")
	killed := time.Now()
	tc.kill(t, "decode-0", 1)
	// The coordinator sees the group leave (its other rank was stopped
	// and deregistered) and come back.
	waitFor(t, 30*time.Second, "decode-0 to leave", func() bool {
		st, _ := tc.sup.Status("decode-0")
		return st.Incarnation > 0
	})
	tc.waitServing(t, 2)
	recovered := time.Since(killed)
	after, _ := tc.sup.Status("decode-0")
	if after.Incarnation != 1 || after.Down {
		t.Fatalf("decode-0 after the kill: %+v", after)
	}
	for _, pid := range before.PIDs {
		if slices.Contains(after.PIDs, pid) || !proctest.Exited(pid) {
			t.Errorf("pid %d of incarnation 0 still runs", pid)
		}
	}
	m, err := cluster.WatchMembership(t.Context(), tc.cli)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if g, _ := m.Group("decode-0"); !g.Ready() || g.Incarnation != 1 {
		t.Fatalf("decode-0 in etcd: %+v, want ready at incarnation 1", g)
	}
	for i := range 3 {
		if _, err := tc.generate(t.Context(), []int32{int32(i + 4), 5}, greedyParams(4)); err != nil {
			t.Fatalf("request after the restart: %v", err)
		}
	}
	if st := tc.workerStats(t, "decode-0"); st.GetKvBlocksFree() != st.GetKvBlocksTotal() {
		t.Fatalf("restarted decode-0 holds %d blocks after every request ended", st.GetKvBlocksTotal()-st.GetKvBlocksFree())
	}
	// A start of the tiny preset takes well under a second; 20 s leaves
	// room for a loaded machine.
	if recovered > backoff+20*time.Second {
		t.Errorf("decode-0 serving again %v after the kill, backoff %v", recovered, backoff)
	}
	t.Logf("decode-0 serving again %v after the kill (backoff %v)", recovered.Round(time.Millisecond), backoff)
}

// TestGroupCrashLoopStaysDown: a group killed again each time it starts
// hits its crash-loop limit and stays down, with a clear log; the other
// groups go on serving.
func TestGroupCrashLoopStaysDown(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	specs := []groupSpec{
		{name: "prefill-0", role: cluster.RolePrefill, tp: 1},
		{name: "decode-0", role: cluster.RoleDecode, tp: 1},
		{name: "decode-1", role: cluster.RoleDecode, tp: 2},
	}
	const limit = 3
	tc := startClusterWith(t, "tiny", specs, clusterOptions{restart: &restartFlags{backoff: 50 * time.Millisecond, window: time.Minute, limit: limit}})
	var failure supervisor.Failure
	for inc := 0; ; inc++ {
		var st supervisor.Status
		waitFor(t, 30*time.Second, fmt.Sprintf("decode-1 incarnation %d", inc), func() bool {
			st, _ = tc.sup.Status("decode-1")
			return st.Incarnation == inc && len(st.PIDs) == 2
		})
		tc.kill(t, "decode-1", inc%2)
		if inc == limit-1 {
			break
		}
	}
	select {
	case failure = <-tc.sup.Down():
	case <-time.After(30 * time.Second):
		t.Fatal("decode-1 not left down")
	}
	if failure.Group != "decode-1" || !errors.Is(failure.Err, supervisor.ErrCrashLoop) {
		t.Fatalf("failure %+v", failure)
	}
	if st, _ := tc.sup.Status("decode-1"); !st.Down || st.PIDs != nil || st.Restarts != limit-1 {
		t.Fatalf("decode-1: %+v", st)
	}
	if !strings.Contains(tc.logs.String(), `msg="group left down"`) {
		t.Fatalf("no log of the group left down:\n%s", tc.logs)
	}
	tc.waitServing(t, 2)
	if _, err := tc.generate(t.Context(), []int32{7, 8}, greedyParams(4)); err != nil {
		t.Fatalf("request with decode-1 down: %v", err)
	}
}

// TestKilledParentLeavesNoProcess: `tandem up` and `tandem generate
// --local --tp 2` killed with SIGKILL leave none of their worker
// processes running, and nothing in TMPDIR that the next start would not
// remove (etcd's data directory, about 128 MB, is there).
func TestKilledParentLeavesNoProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	for _, tc := range []struct {
		name string
		args []string
		// ready is text on stdout after which every worker runs ("":
		// any text).
		ready   string
		workers int
	}{
		{"up", []string{"up", "--preset", "tiny", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--threads", "1",
			"--prefill-tp", "1", "--decode-tp", "2", "--kv-cache-mb", "16"}, "tandem is up", 3},
		// The text streams to stdout while rank 1 follows.
		{"generate --local", []string{"generate", "--local", "--preset", "tiny", "--tp", "2", "--threads", "1",
			"--max-tokens", "400", "--ignore-eos", "--kv-cache-mb", "16", "Once upon a time"}, "", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			self, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			tmp := t.TempDir()
			cmd := exec.Command(self, tc.args...)
			cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			logs := &syncBuffer{}
			cmd.Stderr = logs
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				if t.Failed() {
					t.Logf("its stderr:\n%s", logs)
				}
			}()
			ready := make(chan struct{})
			go func() {
				var seen []byte
				buf := make([]byte, 4096)
				for {
					n, err := out.Read(buf)
					if seen = append(seen, buf[:n]...); len(seen) > 0 && strings.Contains(string(seen), tc.ready) {
						close(ready)
						_, _ = io.Copy(io.Discard, out)
						return
					}
					if err != nil {
						return
					}
				}
			}()
			select {
			case <-ready:
			case <-time.After(2 * time.Minute):
				t.Fatal("not ready")
			}
			pids := proctest.Children(t, cmd.Process.Pid)
			if len(pids) != tc.workers {
				t.Fatalf("%d worker processes (%v), want %d", len(pids), pids, tc.workers)
			}
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "the workers to die with their parent", func() bool {
				return !slices.ContainsFunc(pids, func(pid int) bool { return !proctest.Exited(pid) })
			})
			_ = cmd.Wait() // its files, and so its locks, are closed once it is gone
			stale := scratch.Reap(tmp, "tandem-")
			if !slices.ContainsFunc(stale, func(dir string) bool { return strings.Contains(dir, etcdScratch) }) {
				t.Errorf("no etcd directory left by the killed process to reap (reaped %v)", stale)
			}
			if left, _ := os.ReadDir(tmp); len(left) != 0 {
				t.Errorf("left in TMPDIR, which a later start would not remove: %v", left)
			}
		})
	}
}

// waitFor polls cond (every 20 ms) until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
	}
}
