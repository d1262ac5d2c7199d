package proctest

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// stat returns a process's state and parent from /proc/PID/stat.
func stat(pid string) (state string, ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return "", 0, false
	}
	// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return "", 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	return f[0], ppid, err == nil
}

// Exited reports whether pid no longer runs: absent, or a zombie.
func Exited(pid int) bool {
	state, _, ok := stat(strconv.Itoa(pid))
	return !ok || state == "Z"
}

// Children lists the pids of pid's living children. Without /proc the
// test is skipped.
func Children(tb testing.TB, pid int) []int {
	tb.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		tb.Skip("no /proc to look for processes in")
	}
	var kids []int
	for _, e := range entries {
		state, ppid, ok := stat(e.Name())
		if ok && ppid == pid && state != "Z" {
			if k, err := strconv.Atoi(e.Name()); err == nil {
				kids = append(kids, k)
			}
		}
	}
	return kids
}

// Require skips the test where there is no /proc.
func Require(tb testing.TB) {
	tb.Helper()
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		tb.Skipf("needs /proc: %v", err)
	}
}
