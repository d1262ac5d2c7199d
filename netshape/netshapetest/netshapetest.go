// Package netshapetest holds the test helpers of netshape: tests that
// build networks call Require first, and check with Owned and WaitGone
// that what they built is gone.
package netshapetest

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

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
// built (named "tdm", pid, a letter, ...): other processes' networks come
// and go meanwhile, so tests look at their own.
func Owned(t testing.TB, pid int) []string {
	t.Helper()
	var mine []string
	for _, e := range State(t) {
		name := strings.Fields(e)[1]
		digits := strings.TrimLeft(strings.TrimPrefix(name, "tdm"), "0123456789")
		if strings.HasPrefix(name, "tdm") && name[3:len(name)-len(digits)] == strconv.Itoa(pid) && digits != "" && digits[0] >= 'a' && digits[0] <= 'z' {
			mine = append(mine, e)
		}
	}
	return mine
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

// Running reports whether pid is a process that has not exited (a zombie
// waiting for its parent has).
func Running(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z"
}

// WaitExited waits until none of pids runs, and fails t if one still does
// after the time given.
func WaitExited(t testing.TB, within time.Duration, pids ...int) {
	t.Helper()
	deadline := time.Now().Add(within)
	for _, pid := range pids {
		for Running(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d still runs after %v", pid, within)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
