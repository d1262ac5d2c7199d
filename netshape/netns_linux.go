//go:build linux

package netshape

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

const onLinux = true

// netnsDir is where `ip netns` keeps its named namespaces.
const netnsDir = "/var/run/netns"

// Do runs f on an OS thread that is inside node i's namespace for the
// call. Sockets f creates belong to that namespace for their whole life,
// wherever they are used later; goroutines f starts do not run in it.
func (n *Network) Do(i int, f func() error) error {
	return inNamespace(filepath.Join(netnsDir, n.nodes[i].Namespace), f)
}

// inNamespace runs f on a locked thread moved into the namespace at path
// (setns changes only the calling thread) and moves it back; a thread
// that cannot go back stays locked, so the runtime ends it with the
// goroutine instead of running other goroutines in the wrong namespace.
func inNamespace(path string, f func() error) error {
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("netshape: %w", err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netshape: %w", err)
			return
		}
		defer home.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netshape: entering %s: %w", path, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("netshape: leaving %s: %w", path, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
