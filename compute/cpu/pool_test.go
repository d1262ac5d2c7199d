package cpu

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// countTask records how often each chunk ran and on which workers.
type countTask struct {
	runs    []atomic.Int32
	workers int
	badW    atomic.Bool
}

func (t *countTask) run(c, w int) {
	if w < 0 || w >= t.workers {
		t.badW.Store(true)
	}
	t.runs[c].Add(1)
}

func TestPoolRunsEveryChunkOnce(t *testing.T) {
	for _, threads := range []int{1, 2, 3, 8} {
		p := newPool(threads)
		for round, n := range []int{1, 2, 3, 7, 64, 1000, 5, 0, 1} {
			ct := &countTask{runs: make([]atomic.Int32, n), workers: threads}
			p.run(ct, n)
			for c := range ct.runs {
				if got := ct.runs[c].Load(); got != 1 {
					t.Fatalf("threads %d round %d: chunk %d of %d ran %d times", threads, round, c, n, got)
				}
			}
			if ct.badW.Load() {
				t.Fatalf("threads %d: worker id out of range", threads)
			}
		}
		p.close()
	}
}

// TestCloseLeavesNoGoroutines checks that Close stops every worker.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	for range 3 {
		b, err := New(Options{Threads: 4})
		if err != nil {
			t.Fatal(err)
		}
		b.Add(b.Alloc(1<<16), b.Alloc(1<<16), b.Alloc(1<<16), 1<<16)
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Workers have returned from their function once Close returns, but
	// on a loaded machine their threads may need a while to be scheduled
	// and leave the count: poll, with a generous bound.
	n := runtime.NumGoroutine()
	for start := time.Now(); n > before && time.Since(start) < 10*time.Second; {
		runtime.Gosched()
		n = runtime.NumGoroutine()
	}
	if n > before {
		t.Fatalf("%d goroutines after Close, %d before", n, before)
	}
}

func TestKernelsOption(t *testing.T) {
	tests := []struct {
		kernels string
		ok      bool
	}{
		{"", true}, {"auto", true}, {"go", true}, {"sse9", false},
	}
	for _, tt := range tests {
		b, err := New(Options{Kernels: tt.kernels})
		if (err == nil) != tt.ok {
			t.Fatalf("Kernels %q: err = %v", tt.kernels, err)
		}
		if err == nil {
			if tt.kernels == "go" && b.Name() != "cpu/go" {
				t.Errorf("Name = %q", b.Name())
			}
			b.Close()
		}
	}
}
