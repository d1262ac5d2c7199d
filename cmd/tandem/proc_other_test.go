//go:build !linux

package main

import "syscall"

// diesWithParent: only Linux can have a child killed with its parent;
// elsewhere the test's cleanup kills it.
func diesWithParent() *syscall.SysProcAttr { return nil }
