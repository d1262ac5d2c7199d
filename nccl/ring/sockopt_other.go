//go:build !linux

package ring

import (
	"net"
	"time"
)

// setUserTimeout is Linux-only; elsewhere keepalive alone watches peers.
func setUserTimeout(*net.TCPConn, time.Duration) {}
