package syncbuf

import (
	"strings"
	"sync"
	"testing"
)

// Writers on several goroutines lose no write and never interleave
// within one (run with -race to check the locking too).
func TestConcurrentWrites(t *testing.T) {
	const writers, each = 8, 200
	var b Buffer
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range each {
				if _, err := b.Write([]byte("line\n")); err != nil {
					t.Error(err)
				}
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if got := strings.Count(b.String(), "line\n"); got != writers*each {
		t.Fatalf("%d lines, want %d", got, writers*each)
	}
}
