// Package syncbuf provides Buffer, a bytes.Buffer that several goroutines
// may write and read at once: the log destination of tests that start
// servers logging from their own goroutines.
//
// It imports nothing of Tandem's, so that any package's tests can use it.
package syncbuf

import (
	"bytes"
	"context"
	"fmt"
	"sync"
)

// Buffer is safe for concurrent use; its zero value is empty and ready.
type Buffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	written chan struct{} // closed and replaced on every Write
}

// Write appends p and wakes every Await.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.b.Write(p)
	if s.written != nil {
		close(s.written)
		s.written = nil
	}
	return n, err
}

// String is everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Await returns once done holds for everything written so far, checking
// after each Write: servers log from their own goroutines, often after the
// client already saw the outcome the line records. It returns the text
// done accepted, or ctx's error with the text so far.
func (s *Buffer) Await(ctx context.Context, done func(string) bool) (string, error) {
	for {
		s.mu.Lock()
		text := s.b.String()
		if done(text) {
			s.mu.Unlock()
			return text, nil
		}
		if s.written == nil {
			s.written = make(chan struct{})
		}
		wake := s.written
		s.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return text, fmt.Errorf("syncbuf: awaited text never came: %w", ctx.Err())
		}
	}
}
