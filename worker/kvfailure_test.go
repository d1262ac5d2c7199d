package worker

import (
	"context"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/compute/cpu"
	"github.com/tandemllm/tandem/engine"
	"github.com/tandemllm/tandem/model/preset"
)

// startWorker runs a one-rank group of role in this process on real
// sockets and returns its address.
func startWorker(t *testing.T, dir string, role cluster.Role, group string, kvTimeout time.Duration) string {
	t.Helper()
	return startWorkerWith(t, dir, Options{Role: role, Group: group, ModelName: "tiny",
		Engine: engine.Options{KVCacheBytes: 16 << 20}, KVTimeout: kvTimeout})
}

// startWorkerWith runs a one-rank group with opts (Model and Listener
// filled in here) in this process on real sockets and returns its address.
func startWorkerWith(t *testing.T, dir string, opts Options) string {
	t.Helper()
	be, err := cpu.New(cpu.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	m, err := engine.Open(dir, be, engine.Shard{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	opts.Model, opts.Listener = m, ln
	go func() { done <- Run(ctx, opts) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: %v", opts.Group, err)
		}
		m.Close()
		be.Close()
	})
	return ln.Addr().String()
}

// breakingProxy forwards TCP connections to target but cuts each one
// after limit bytes from the client: small calls pass, KV pushes break.
func breakingProxy(t *testing.T, target string, limit int64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go io.Copy(c, u)
				io.Copy(u, io.LimitReader(c, limit))
			})
		}
	})
	return ln.Addr().String()
}

// TestKVTransferFailureRecomputes: when every push of a prefill's KV
// breaks, the prefill tells the decode group to drop it, and the decode
// group recomputes the prompt at once (well before its KV timeout) and
// generates what one engine does alone.
func TestKVTransferFailureRecomputes(t *testing.T) {
	dir, err := preset.Ensure(t.Context(), "tiny", preset.DefaultCacheDir(), preset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const kvTimeout = 30 * time.Second
	dec := startWorker(t, dir, cluster.RoleDecode, "decode-0", kvTimeout)
	pre := startWorker(t, dir, cluster.RolePrefill, "prefill-0", kvTimeout)
	proxy := breakingProxy(t, dec, 32<<10)
	const maxTokens = 8
	prompt := make([]int32, 60)
	for i := range prompt {
		prompt[i] = int32(1000 + 37*i)
	}
	start := time.Now()
	got := disaggregated(t, pre, dec, proxy, "r", prompt, maxTokens)
	if took := time.Since(start); took > kvTimeout/3 {
		t.Fatalf("the request took %v: the decode group waited for KV that was never coming (timeout %v)", took, kvTimeout)
	}
	want := aloneGreedy(t, dir, prompt, maxTokens)
	if !slices.Equal(got, want) {
		t.Fatalf("tokens %v after recomputing, want %v", got, want)
	}
}

// aloneGreedy is what one engine generates for prompt.
func aloneGreedy(t *testing.T, dir string, prompt []int32, n int) []int32 {
	t.Helper()
	be, err := cpu.New(cpu.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	m, err := engine.Open(dir, be, engine.Shard{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	e, err := engine.New(m, engine.Options{KVCacheBytes: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Add(engine.Request{ID: "alone", Prompt: prompt, Params: engine.SamplingParams{MaxTokens: n, IgnoreEOS: true}}); err != nil {
		t.Fatal(err)
	}
	var out []int32
	for e.HasWork() {
		outs, err := e.Step(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range outs {
			out = append(out, o.Token)
		}
	}
	return out
}
