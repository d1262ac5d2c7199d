package netshapetest

import (
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tandemllm/tandem/internal/proctest"
	"github.com/tandemllm/tandem/netshape"
)

// RequireEnv, when set, turns a missing root or iproute2 into a test
// failure instead of a skip (CI sets it, in .ci/run).
const RequireEnv = "TANDEM_REQUIRE_NETSHAPE"

// Require skips t when this process cannot build networks (not root, no
// iproute2), saying why, unless RequireEnv is set, when it fails t.
func Require(t testing.TB) {
	t.Helper()
	err := netshape.Check()
	if err == nil {
		return
	}
	if os.Getenv(RequireEnv) != "" {
		t.Fatalf("%v (%s is set)", err, RequireEnv)
	}
	t.Skipf("%v; set %s=1 to make this a failure", err, RequireEnv)
}

// State lists what a network could leave behind on this machine: the
// named network namespaces ("netns NAME") and the links of this
// namespace ("link NAME"), sorted.
func State(t testing.TB) []string {
	t.Helper()
	var s []string
	for _, argv := range [][]string{{"ip", "netns", "list"}, {"ip", "-o", "link", "show"}} {
		out, err := exec.Command(argv[0], argv[1:]...).Output()
		if err != nil {
			t.Fatalf("%v: %v", argv, err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			switch {
			case argv[1] == "netns" && len(f) > 0:
				s = append(s, "netns "+f[0])
			case argv[1] == "-o" && len(f) > 1:
				s = append(s, "link "+strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
			}
		}
	}
	slices.Sort(s)
	return s
}

// Owned lists the entries of State that belong to networks process pid
// built: other processes' networks come and go meanwhile, so tests look
// at their own.
func Owned(t testing.TB, pid int) []string {
	t.Helper()
	var mine []string
	for _, e := range State(t) {
		if owner, ok := ownerPid(e); ok && owner == pid {
			mine = append(mine, e)
		}
	}
	return mine
}

// ownerPid is the process id in the name of a State entry ("tdm", pid, a
// letter, ...).
func ownerPid(entry string) (int, bool) {
	name := strings.Fields(entry)[1]
	rest, ok := strings.CutPrefix(name, "tdm")
	if !ok {
		return 0, false
	}
	after := strings.TrimLeft(rest, "0123456789")
	if len(after) == len(rest) || after == "" || after[0] < 'a' || after[0] > 'z' {
		return 0, false
	}
	pid, err := strconv.Atoi(rest[:len(rest)-len(after)])
	return pid, err == nil
}

// WaitNoLeftovers waits until nothing is left of the networks built since
// before was taken whose owner has exited (a network of a live process,
// another test's or another user's, is not a leftover), and fails t if
// something is after the time given. It is for tests whose networks are
// built by processes they start, whose ids they do not know.
func WaitNoLeftovers(t testing.TB, before []string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var left []string
		for _, e := range State(t) {
			if pid, ok := ownerPid(e); ok && !slices.Contains(before, e) && proctest.Exited(pid) {
				left = append(left, e)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind after %v by processes that exited: %v", within, left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitGone waits until process pid owns no namespace or link, and fails t
// if some are left after the time given (a namespace's processes may
// take a moment to go after their owner was killed).
func WaitGone(t testing.TB, pid int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		left := Owned(t, pid)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind after %v: %v", within, left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitExited waits until none of pids runs, and fails t if one still does
// after the time given.
func WaitExited(t testing.TB, within time.Duration, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(within)
	for _, pid := range pids {
		for !proctest.Exited(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d still runs after %v", pid, within)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
