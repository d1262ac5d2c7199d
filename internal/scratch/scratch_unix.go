//go:build unix

package scratch

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// create makes the directory under a hidden name, locks its owner file
// and renames it into place.
func create(parent, prefix string) (*Dir, error) {
	hidden, err := os.MkdirTemp(parent, "."+prefix)
	if err != nil {
		return nil, fmt.Errorf("scratch: %w", err)
	}
	owner, err := lockOwner(hidden, os.O_CREATE|os.O_RDWR|os.O_EXCL)
	if err != nil {
		os.RemoveAll(hidden)
		return nil, err
	}
	path := filepath.Join(parent, strings.TrimPrefix(filepath.Base(hidden), "."))
	if err := os.Rename(hidden, path); err != nil {
		os.RemoveAll(hidden)
		owner.Close()
		return nil, fmt.Errorf("scratch: %w", err)
	}
	return &Dir{path: path, owner: owner}, nil
}

// lockOwner opens dir's owner file with flag and takes its lock without
// waiting.
func lockOwner(dir string, flag int) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, ownerFile), flag, 0o600)
	if err != nil {
		return nil, fmt.Errorf("scratch: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("scratch: locking %s: %w", f.Name(), err)
	}
	return f, nil
}

// reapIfStale removes dir if its owner file's lock is free. The lock is
// held while removing, so two reapers never race on one directory.
func reapIfStale(dir string) bool {
	owner, err := lockOwner(dir, os.O_RDWR)
	if err != nil {
		// Live (EWOULDBLOCK), not ours (EACCES), or not a scratch
		// directory (ENOENT): leave it.
		return false
	}
	defer owner.Close()
	err = os.RemoveAll(dir)
	return err == nil || errors.Is(err, os.ErrNotExist)
}
