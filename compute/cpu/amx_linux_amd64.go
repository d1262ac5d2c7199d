package cpu

import "syscall"

// Linux's arch_prctl request for an extended state component, and AMX's
// tile data component (arch/x86/include/uapi/asm/prctl.h).
const (
	archReqXcompPerm  = 0x1023
	xfeatureXtiledata = 18
)

// amxPermitted asks Linux for the AMX tile state, which a process must
// request before its first tile instruction (Linux 5.16 and later). A
// kernel without it, or a sandbox refusing the call, leaves the AMX set
// out. The grant is for the whole process and asking again is harmless.
func amxPermitted() bool {
	_, _, errno := syscall.RawSyscall(syscall.SYS_ARCH_PRCTL, archReqXcompPerm, xfeatureXtiledata, 0)
	return errno == 0
}
