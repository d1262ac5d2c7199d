package compare

import (
	"context"
	"strings"
	"sync"
)

// cancelWriter cancels once a write holding after (and a request done)
// comes: the moment a run has started sending.
type cancelWriter struct {
	mu     sync.Mutex
	cancel context.CancelFunc
	after  string
}

func (w *cancelWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if s := string(p); strings.Contains(s, w.after) && !strings.Contains(s, " 0/") {
		w.cancel()
	}
	return len(p), nil
}
