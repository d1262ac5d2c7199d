package main

import "syscall"

// diesWithParent has a test's child process killed when the test's
// process dies, however it dies.
func diesWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
