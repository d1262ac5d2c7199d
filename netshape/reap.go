package netshape

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Every name a network makes starts with namePrefix, the owner's process
// id and a letter: "tdm4242a". Then "b" is the bridge, "hN" node N's veth
// end on the bridge, "nN" node N's namespace (where its end is "eth0").
const namePrefix = "tdm"

// ownerRE matches a network's prefix at the start of a name.
var ownerRE = regexp.MustCompile(`^` + namePrefix + `[0-9]+[a-z]`)

// owner returns the prefix of the network a name belongs to.
func owner(name string) (string, bool) {
	p := ownerRE.FindString(name)
	return p, p != ""
}

// names are the links of this namespace and the named namespaces.
type names struct{ links, namespaces []string }

func list(ctx context.Context, run runner) (names, error) {
	var ns names
	links, err := run(ctx, "ip", "-o", "link", "show")
	if err != nil {
		return ns, fmt.Errorf("netshape: %w", err)
	}
	for _, line := range strings.Split(links, "\n") {
		// "7: tdm42ah0@if2: <BROADCAST,...": the name ends at ':' or '@'.
		if f := strings.Fields(line); len(f) >= 2 {
			ns.links = append(ns.links, strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":"))
		}
	}
	spaces, err := run(ctx, "ip", "netns", "list")
	if err != nil {
		return ns, fmt.Errorf("netshape: %w", err)
	}
	for _, line := range strings.Split(spaces, "\n") {
		if f := strings.Fields(line); len(f) >= 1 {
			ns.namespaces = append(ns.namespaces, f[0])
		}
	}
	return ns, nil
}

// remove stops the processes in prefix's namespaces, then deletes its
// links (veths first, so each pair goes at once, then the bridge) and its
// namespaces. What is already gone is no error.
func remove(ctx context.Context, run runner, prefix string) error {
	all, err := list(ctx, run)
	if err != nil {
		return err
	}
	mine := func(name string) bool { p, ok := owner(name); return ok && p == prefix }
	var errs []error
	var spaces, links []string
	for _, ns := range all.namespaces {
		if mine(ns) {
			spaces = append(spaces, ns)
			errs = append(errs, stopProcesses(ctx, run, ns))
		}
	}
	for _, l := range all.links {
		if mine(l) {
			links = append(links, l)
		}
	}
	bridge := prefix + "b"
	slices.SortFunc(links, func(a, b string) int { // the bridge last
		return boolInt(a == bridge) - boolInt(b == bridge)
	})
	for _, l := range links {
		errs = append(errs, gone(run(ctx, "ip", "link", "del", l)))
	}
	for _, ns := range spaces {
		errs = append(errs, gone(run(ctx, "ip", "netns", "del", ns)))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("netshape: removing %s: %w", prefix, err)
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// gone drops the error of deleting what no longer exists.
func gone(_ string, err error) error {
	if err != nil && (strings.Contains(err.Error(), "Cannot find device") || strings.Contains(err.Error(), "No such file")) {
		return nil
	}
	return err
}

// stopProcesses ends what still runs in namespace ns: SIGTERM, then
// SIGKILL to what is left after 5 s. This process is never signalled (a
// thread of it may be visiting ns).
func stopProcesses(ctx context.Context, run runner, ns string) error {
	pids := func() []int {
		out, err := run(ctx, "ip", "netns", "pids", ns)
		if err != nil {
			return nil
		}
		var ps []int
		for _, f := range strings.Fields(out) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				ps = append(ps, pid)
			}
		}
		return ps
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		ps := pids()
		if len(ps) == 0 {
			return nil
		}
		for _, pid := range ps {
			_ = syscall.Kill(pid, sig)
		}
		// They are not this process's children: nothing to wait on but
		// their absence from the namespace.
		deadline := time.Now().Add(5 * time.Second)
		for len(pids()) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(25 * time.Millisecond)
		}
	}
	if ps := pids(); len(ps) > 0 {
		return fmt.Errorf("processes %v still in %s after SIGKILL", ps, ns)
	}
	return nil
}

// Sweep removes every network whose owner is gone: its lock is free
// because the process that held it died (a kill -9 with no reaper, or the
// reaper killed too). New sweeps before it builds.
func Sweep(ctx context.Context) error { return sweep(ctx, runCommand) }

// lockFile is the lock of the network with prefix.
func lockFile(prefix string) string { return filepath.Join(LockDir, prefix+".lock") }

func sweep(ctx context.Context, run runner) error {
	all, err := list(ctx, run)
	if err != nil {
		return err
	}
	var prefixes []string
	for _, name := range append(all.links, all.namespaces...) {
		if p, ok := owner(name); ok && !slices.Contains(prefixes, p) {
			prefixes = append(prefixes, p)
		}
	}
	var errs []error
	for _, p := range prefixes {
		l, err := lockPath(lockFile(p), false)
		if errors.Is(err, errBusy) {
			continue // its owner lives
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, remove(ctx, run, p))
		l.release()
	}
	return errors.Join(errs...)
}

// startReaper starts argv with the prefix appended and
// a pipe on its stdin whose write end only this process holds.
func (n *Network) startReaper(argv []string, stderr *os.File) error {
	if len(argv) == 0 {
		return nil
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("netshape: reaper: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(argv[0], append(slices.Clone(argv[1:]), n.prefix)...)
	cmd.Stdin = r
	if stderr != nil {
		cmd.Stdout, cmd.Stderr = stderr, stderr
	}
	// Its own process group, so that a Ctrl-C meant for this process
	// does not stop it first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("netshape: starting the reaper %s: %w", argv[0], err)
	}
	n.guard, n.reaper, n.reaperDone = w, cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(n.reaperDone)
	}()
	return nil
}

// closedWord tells the reaper that the owner removed the network itself.
const closedWord = "closed"

// stopReaper ends the reaper's stdin, telling it whether the network was
// removed (else it tries again), and waits for it to exit; after 30 s it
// is killed.
func (n *Network) stopReaper(removed bool) error {
	if n.reaper == nil {
		return nil
	}
	if removed {
		_, _ = io.WriteString(n.guard, closedWord)
	}
	n.guard.Close()
	select {
	case <-n.reaperDone:
		return nil
	case <-time.After(30 * time.Second):
		_ = n.reaper.Process.Kill()
		<-n.reaperDone
		return errors.New("netshape: the reaper did not exit; killed it")
	}
}

// Reap is the body of a reaper process (Options.Reaper): it waits until
// stdin ends, which happens when the network's owner closes the network
// or dies. Unless the owner said it removed the network, Reap then takes
// the network's lock (free once the owner is gone) and removes whatever
// of the network is left. The caller should ignore SIGINT, SIGTERM and
// SIGHUP, which are meant for the owner.
func Reap(ctx context.Context, stdin io.Reader, prefix string) error {
	if p, ok := owner(prefix); !ok || p != prefix {
		return fmt.Errorf("netshape: reaper: %q is not a network prefix", prefix)
	}
	said, _ := io.ReadAll(io.LimitReader(stdin, 64))
	_, _ = io.Copy(io.Discard, stdin)
	if string(said) == closedWord {
		return nil
	}
	l, err := lockPath(lockFile(prefix), true)
	if err != nil {
		return fmt.Errorf("netshape: reaper: %w", err)
	}
	defer l.release()
	return remove(ctx, runCommand, prefix)
}
