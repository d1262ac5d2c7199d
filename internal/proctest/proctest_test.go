package proctest

import (
	"os"
	"os/exec"
	"slices"
	"testing"
)

// A child shows among this process's children while it runs, and as
// exited once it has (a zombie until reaped, then gone).
func TestChildren(t *testing.T) {
	Require(t)
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep command:", err)
	}
	pid := cmd.Process.Pid
	if !slices.Contains(Children(t, os.Getpid()), pid) || Exited(pid) {
		t.Fatalf("running child %d: children %v, exited %v", pid, Children(t, os.Getpid()), Exited(pid))
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if slices.Contains(Children(t, os.Getpid()), pid) || !Exited(pid) {
		t.Fatalf("reaped child %d still listed", pid)
	}
	if !Exited(-1) {
		t.Fatal("pid -1 runs")
	}
}
