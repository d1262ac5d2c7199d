package ring

import (
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// shmSupported: ranks on one Linux host can share a memfd.
const shmSupported = true

// createShm makes an anonymous shared segment of size bytes and maps it.
// The returned descriptor is what peers open through /proc; once every
// peer has mapped the segment it is closed, and the memory then lives
// exactly as long as some rank maps it (a killed rank's mapping goes with
// it), so nothing is left behind on any path out.
func createShm(size int) ([]byte, int, error) {
	fd, err := unix.MemfdCreate("tandem-ring", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, -1, fmt.Errorf("memfd_create: %w", err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return nil, -1, fmt.Errorf("sizing the shared segment: %w", err)
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, -1, fmt.Errorf("mapping the shared segment: %w", err)
	}
	return mem, fd, nil
}

// openShm maps the segment that process pid holds open as descriptor fd.
// It fails where the two ranks do not share a host, a PID namespace or a
// user; the caller then keeps to TCP.
func openShm(pid, fd, size int) ([]byte, error) {
	path := fmt.Sprintf("/proc/%d/fd/%d", pid, fd)
	// Looked at before it is opened: opening a device or a pipe could
	// have effects of its own.
	if st, err := os.Stat(path); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() || st.Size() != int64(size) {
		return nil, fmt.Errorf("%s is not a shared segment of %d bytes", path, size)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() != int64(size) {
		return nil, fmt.Errorf("%s is %d bytes, not %d", f.Name(), st.Size(), size)
	}
	return unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
}

func closeFD(fd int) { unix.Close(fd) }

// bootID identifies this boot of this host ("" when it cannot be read):
// a PID means a process only on the host that gave it.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if s := strings.TrimSpace(string(b)); err == nil && len(s) == bootIDBytes {
		return s
	}
	return ""
}

// netNamespace identifies this process's network namespace (0 when it
// cannot be read). Ranks in different ones stand for different nodes,
// as under netshape's emulated links, and must not share memory behind
// the links' backs.
func netNamespace() uint64 {
	link, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return 0
	}
	var ino uint64
	if _, err := fmt.Sscanf(link, "net:[%d]", &ino); err != nil {
		return 0
	}
	return ino
}

func unmapShm(mem []byte) { unix.Munmap(mem) }

// Futex operations (linux/futex.h), shared between processes: not the
// _PRIVATE variants.
const (
	futexWaitOp = 0
	futexWakeOp = 1
)

// futexWait sleeps while *addr == val, for at most d. The futex is not
// private: the word lives in memory shared between processes.
func futexWait(addr *uint32, val uint32, d time.Duration) {
	ts := unix.NsecToTimespec(d.Nanoseconds())
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWaitOp, uintptr(val),
		uintptr(unsafe.Pointer(&ts)), 0, 0)
}

// futexWake wakes every sleeper on addr.
func futexWake(addr *uint32) {
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWakeOp, uintptr(1<<31-1), 0, 0, 0)
}

// connState reports, without reading, whether the peer closed conn (or
// its process died) and whether bytes are waiting on it.
func connState(conn net.Conn) (hungUp, readable bool) {
	if nc, ok := conn.(interface{ NetConn() net.Conn }); ok { // TLS
		conn = nc.NetConn()
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return true, false
	}
	raw.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
		if n, err := unix.Poll(fds, 0); err == nil && n > 0 {
			hungUp = fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0
			readable = fds[0].Revents&unix.POLLIN != 0
		}
	})
	return hungUp, readable
}
