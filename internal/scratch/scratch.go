package scratch

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ownerFile is the file, in every scratch directory, that the owner
// keeps locked.
const ownerFile = ".owner"

// Dir is a scratch directory, kept locked by this process until Close.
type Dir struct {
	path  string
	owner *os.File // nil where there is no flock
}

// Options says where New makes its directory.
type Options struct {
	// Parent is the directory to make it in and reap; default os.TempDir().
	Parent string
}

// New removes the stale directories named prefix* in the parent (their
// owners died), then makes and locks a directory named prefix followed
// by random digits. Errors reaping are not returned: another process's
// directories are not this one's to fail on.
func New(prefix string, opts Options) (*Dir, error) {
	if prefix == "" || strings.ContainsRune(prefix, os.PathSeparator) || strings.HasPrefix(prefix, ".") {
		return nil, fmt.Errorf("scratch: bad prefix %q", prefix)
	}
	parent := opts.Parent
	if parent == "" {
		parent = os.TempDir()
	}
	Reap(parent, prefix)
	return create(parent, prefix)
}

// Path is the directory's path.
func (d *Dir) Path() string { return d.path }

// Close removes the directory and then drops its lock.
func (d *Dir) Close() error {
	err := os.RemoveAll(d.path)
	if d.owner != nil {
		err = errors.Join(err, d.owner.Close())
	}
	return err
}

// Reap removes the directories named prefix* in parent whose owner has
// died, and returns their paths. Directories without an owner file (not
// made by this package) are left alone.
func Reap(parent, prefix string) []string {
	matches, _ := filepath.Glob(filepath.Join(parent, globEscape(prefix)+"*"))
	var reaped []string
	for _, dir := range matches {
		if reapIfStale(dir) {
			reaped = append(reaped, dir)
		}
	}
	return reaped
}

// globEscape quotes the glob metacharacters in s.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
