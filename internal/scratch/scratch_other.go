//go:build !unix

package scratch

import (
	"fmt"
	"os"
)

// create makes a plain temporary directory: without flock(2) no reaper
// could tell it is live.
func create(parent, prefix string) (*Dir, error) {
	path, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		return nil, fmt.Errorf("scratch: %w", err)
	}
	return &Dir{path: path}, nil
}

// reapIfStale reaps nothing: liveness cannot be told.
func reapIfStale(string) bool { return false }
