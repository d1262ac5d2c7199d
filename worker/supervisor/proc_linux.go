package supervisor

import (
	"os"
	"syscall"
)

// sysProcAttr puts a rank in a process group of its own (a terminal's
// Ctrl-C reaches only the supervisor, which stops the ranks in order) and
// has the kernel kill it when the supervisor's process dies, however it
// dies. The parent-death signal fires when the thread that started the
// child exits; Go ends a thread only when a goroutine locked to it exits,
// and nothing here locks one.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// terminate asks a rank to stop: SIGTERM, then SIGCONT so that a paused
// (SIGSTOP) rank wakes up to act on it.
func terminate(p *os.Process) {
	_ = p.Signal(syscall.SIGTERM)
	_ = p.Signal(syscall.SIGCONT)
}
