package main

import "syscall"

// childAttr makes a child receive SIGTERM when its parent dies.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
