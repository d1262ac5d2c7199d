package serve

import (
	"os"
	"sync"
)

// syncWriter hands each write to onWrite, one at a time.
type syncWriter struct {
	mu      sync.Mutex
	onWrite func(string)
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.onWrite != nil {
		w.onWrite(string(p))
	}
	return len(p), nil
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }
