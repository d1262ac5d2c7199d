//go:build !linux

package supervisor

import (
	"os"
	"syscall"
)

// sysProcAttr: outside Linux there is no parent-death signal; ranks are
// stopped by Stop only, so a supervisor killed outright leaves them.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// terminate asks a rank to stop.
func terminate(p *os.Process) { _ = p.Signal(os.Interrupt) }
