//go:build !linux

package main

import "syscall"

// childAttr has no parent-death signal outside Linux; `tandem up` still
// stops its children on a clean exit.
func childAttr() *syscall.SysProcAttr { return nil }
