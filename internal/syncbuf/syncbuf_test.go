package syncbuf

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
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

// Await wakes on the write that satisfies it, and gives up at ctx's
// deadline with the text so far.
func TestAwait(t *testing.T) {
	var b Buffer
	go func() {
		for _, s := range []string{"one\n", "two\n", "three\n"} {
			if _, err := b.Write([]byte(s)); err != nil {
				t.Error(err)
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := b.Await(ctx, func(s string) bool { return strings.Contains(s, "three") })
	if err != nil || got != "one\ntwo\nthree\n" {
		t.Fatalf("Await = %q, %v", got, err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel2()
	if got, err := b.Await(short, func(s string) bool { return strings.Contains(s, "four") }); !errors.Is(err, context.DeadlineExceeded) || got != "one\ntwo\nthree\n" {
		t.Fatalf("Await for text never written = %q, %v; want the text so far and DeadlineExceeded", got, err)
	}
}
