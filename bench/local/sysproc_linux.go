package local

import "syscall"

// childAttr puts the child in its own process group and makes it receive
// SIGTERM when this process dies.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
