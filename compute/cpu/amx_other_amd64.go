//go:build !linux

package cpu

// amxPermitted: only Linux's grant of the AMX tile state is asked for
// here; elsewhere the AMX set stays out.
func amxPermitted() bool { return false }
