package ring

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// setUserTimeout makes unacknowledged data fail the connection after d.
// Keepalive alone only probes idle connections; a peer host that dies
// while this rank is sending would otherwise take the kernel's
// retransmission limit (about 15 minutes) to notice.
func setUserTimeout(conn *net.TCPConn, d time.Duration) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d.Milliseconds()))
	})
}
