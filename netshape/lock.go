package netshape

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// errBusy means another process (or another network of this one) holds
// a lock.
var errBusy = errors.New("lock held")

// A fileLock is an exclusive flock on a file. The kernel drops it when
// its holder dies, however it dies: that is how a network's liveness is
// told (see Sweep).
type fileLock struct {
	f    *os.File
	path string
}

// lockPath locks path, creating it. Without block it fails with errBusy
// instead of waiting. A lock counts only on the file path names when it
// is taken: a holder removes the file before it unlocks (release), so a
// waiter that got the lock on the removed file tries again.
func lockPath(path string, block bool) (*fileLock, error) {
	how := unix.LOCK_EX
	if !block {
		how |= unix.LOCK_NB
	}
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		for err = unix.Flock(int(f.Fd()), how); errors.Is(err, unix.EINTR); err = unix.Flock(int(f.Fd()), how) {
		}
		if err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, errBusy
			}
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		var held, named unix.Stat_t
		if unix.Fstat(int(f.Fd()), &held) == nil && unix.Stat(path, &named) == nil && held.Ino == named.Ino && held.Dev == named.Dev {
			return &fileLock{f: f, path: path}, nil
		}
		f.Close()
	}
}

// release removes the lock file and unlocks it.
func (l *fileLock) release() {
	_ = os.Remove(l.path)
	l.f.Close()
}

// close unlocks, leaving the file for the next holder.
func (l *fileLock) close() { l.f.Close() }
