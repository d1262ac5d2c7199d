package coordinator

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tandemllm/tandem/blockhash"
	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/compute/cpu"
	"github.com/tandemllm/tandem/engine"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
	"github.com/tandemllm/tandem/worker"
)

// dropOneBatch is a client interceptor that loses the n-th message of the
// first KVEvents stream, as a network or a slow reader could.
func dropOneBatch(n int) grpc.DialOption {
	var streams atomic.Int32
	return grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil || method != tandemv1.Worker_KVEvents_FullMethodName || streams.Add(1) != 1 {
			return s, err
		}
		return &lossy{ClientStream: s, drop: n}, nil
	})
}

type lossy struct {
	grpc.ClientStream
	seen, drop int
}

func (l *lossy) RecvMsg(m any) error {
	for {
		if err := l.ClientStream.RecvMsg(m); err != nil {
			return err
		}
		l.seen++
		if l.seen != l.drop {
			return nil
		}
	}
}

// TestKVEventsLostAndResynced runs a real worker (a unified group of one
// rank, registered in a real etcd) and a coordinator whose connection
// loses one batch of the group's KV events: the coordinator sees the gap
// in the sequence numbers, resynchronises from a new snapshot, and its
// index then holds every prefix the group has cached, the lost batch's
// included.
func TestKVEventsLostAndResynced(t *testing.T) {
	ctx := t.Context()
	cli := testEtcd(t)
	dir := tinyDir(t)
	wc := startTestWorker(t, cli, dir)

	reg := prometheus.NewRegistry()
	c, err := New(ctx, Options{Etcd: cli, ModelDir: dir, Logger: slog.New(slog.DiscardHandler), Registerer: reg,
		DialOptions: []grpc.DialOption{dropOneBatch(2)}}) // the first batch after the snapshot
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	waitIndex(t, c, "the first snapshot", func() bool { return c.synced("u") })
	if n := resyncs(t, reg, "u"); n != 0 {
		t.Fatalf("%v resyncs before any loss", n)
	}
	// Each request's blocks come in a batch of their own: the first is
	// lost, the second shows the gap.
	prompts := [][]int32{tokensFrom(1, 48), tokensFrom(2, 48)}
	for i, p := range prompts {
		generateOn(t, wc, p, i)
	}
	waitIndex(t, c, "a resync after the lost batch", func() bool { return resyncs(t, reg, "u") == 1 && c.synced("u") })
	for i, p := range prompts {
		waitIndex(t, c, fmt.Sprint("the index to hold prompt ", i), func() bool { return c.cachedTokens("u", p) == 48 })
	}
	if n := c.indexBlocks("u"); n != 6 {
		t.Fatalf("the index holds %d blocks of the group, want 6", n)
	}
}

// resyncs reads tandem:kv_events_resyncs_total of a group.
func resyncs(t *testing.T, reg *prometheus.Registry, group string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tandem:kv_events_resyncs_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "group" && l.GetValue() == group {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}

// startTestWorker runs a one-rank unified group "u" of the model in dir,
// registered in etcd, and returns a client of its Worker service.
func startTestWorker(t *testing.T, cli *clientv3.Client, dir string) tandemv1.WorkerClient {
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
	wctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- worker.Run(wctx, worker.Options{Role: cluster.RoleUnified, Group: "u", ModelName: "tiny", Model: m, Listener: ln,
			Etcd: cli, Engine: engine.Options{KVCacheBytes: 16 << 20}, Logger: slog.New(slog.DiscardHandler)})
	}()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
		m.Close()
		be.Close()
	})
	return tandemv1.NewWorkerClient(cc)
}

func tokensFrom(seed, n int) []int32 {
	p := make([]int32, n)
	for i := range p {
		p[i] = int32(1000 + seed*97 + 13*i)
	}
	return p
}

// generateOn runs a request on the worker directly and reads it to its end.
func generateOn(t *testing.T, wc tandemv1.WorkerClient, prompt []int32, i int) {
	t.Helper()
	stream, err := wc.Generate(t.Context(), &tandemv1.WorkerGenerateRequest{RequestId: "r" + string(rune('0'+i)), PromptTokenIds: prompt,
		Sampling: &tandemv1.SamplingParams{MaxTokens: 2, IgnoreEos: true}})
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := stream.Recv(); err == io.EOF {
			return
		} else if err != nil {
			t.Fatal(err)
		}
	}
}

// waitIndex waits until cond holds, checking it at each change of c's
// prefix index (which comes from the groups' event streams, on the
// coordinator's goroutines), and fails the test after ten seconds.
func waitIndex(t *testing.T, c *Coordinator, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		changed := c.index.changes() // before the check, so no change is missed
		if cond() {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// Test views of the coordinator's index, by group name.

func (c *Coordinator) groupNamed(name string) *groupState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.groups[name]
}

func (c *Coordinator) synced(name string) bool {
	g := c.groupNamed(name)
	c.index.mu.Lock()
	defer c.index.mu.Unlock()
	b := c.index.groups[g]
	return b != nil && b.synced
}

func (c *Coordinator) indexBlocks(name string) int {
	g := c.groupNamed(name)
	c.index.mu.Lock()
	defer c.index.mu.Unlock()
	if b := c.index.groups[g]; b != nil {
		return len(b.hashes)
	}
	return -1
}

func (c *Coordinator) cachedTokens(name string, prompt []int32) int {
	g := c.groupNamed(name)
	if g == nil {
		return -1
	}
	return c.index.cached(g, g.group.Model, prompt, map[int][]blockhash.Hash{})
}
