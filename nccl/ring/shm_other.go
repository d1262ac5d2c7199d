//go:build !linux

package ring

import (
	"errors"
	"net"
	"time"
)

// shmSupported: shared segments are built on Linux's memfd and futex.
const shmSupported = false

var errNoShm = errors.New("shared memory between ranks needs Linux")

func createShm(int) ([]byte, int, error)       { return nil, -1, errNoShm }
func openShm(int, int, int) ([]byte, error)    { return nil, errNoShm }
func closeFD(int)                              {}
func unmapShm([]byte)                          {}
func futexWait(*uint32, uint32, time.Duration) {}
func futexWake(*uint32)                        {}
func connState(net.Conn) (bool, bool)          { return false, false }
func netNamespace() uint64                     { return 0 }
func bootID() string                           { return "" }
