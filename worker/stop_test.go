package worker

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/compute/cpu"
	"github.com/tandemllm/tandem/engine"
	"github.com/tandemllm/tandem/internal/syncbuf"
	"github.com/tandemllm/tandem/model/preset"
	"github.com/tandemllm/tandem/nccl/ring"
)

// A clean stop logs no error: rank 0 of a registered TP-2 group is
// stopped, it tells rank 1 to finish, and rank 1's Run returns nil while
// its own context is still live, releasing its registration as it goes;
// neither rank may take that release for a lost rank (once: "another
// process holds this rank's registration"). Both entries leave etcd.
// Each rank's "worker serving" line names its backend.
func TestCleanStopLogsNoError(t *testing.T) {
	dir, err := preset.Ensure(t.Context(), "tiny", preset.DefaultCacheDir(), preset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	etcd, err := cluster.StartEmbedded(ctx, t.TempDir(), cluster.EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	cli, err := cluster.Dial(etcd.Endpoints())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })

	const tp = 2
	lns := make([]*ring.Listener, tp)
	addrs := make([]string, tp)
	for r := range tp {
		if lns[r], err = ring.Listen("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		addrs[r] = lns[r].Addr()
	}
	var logs syncbuf.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	led := make(chan struct{})
	stops := make([]context.CancelFunc, tp)
	done := make([]chan error, tp)
	for r := range tp {
		done[r] = make(chan error, 1)
		rctx, stop := context.WithCancel(ctx)
		stops[r] = stop
		defer stop()
		opts := Options{Role: cluster.RoleUnified, Group: "u", ModelName: "tiny", Etcd: cli, Logger: log, Engine: engine.Options{KVCacheBytes: 16 << 20}}
		if r == 0 {
			opts.OnReady = func() { close(led) } // the whole group joined
		}
		go func() { done[r] <- runRank(rctx, dir, lns[r], r, addrs, opts) }()
	}
	select {
	case <-led:
	case err := <-done[0]:
		t.Fatalf("rank 0 ended before its group formed: %v\n%s", err, logs.String())
	case <-ctx.Done():
		t.Fatalf("the group did not form\n%s", logs.String())
	}

	stops[0]() // rank 1's context stays live: the leader ends it
	for r := range tp {
		select {
		case err := <-done[r]:
			if err != nil {
				t.Fatalf("rank %d: %v", r, err)
			}
		case <-ctx.Done():
			t.Fatalf("rank %d did not stop", r)
		}
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("a clean stop logged an error:\n%s", logs.String())
	}
	// Each rank said which backend (and CPU kernel set) it computes on.
	if n := strings.Count(logs.String(), "msg=\"worker serving\""); n != tp || strings.Count(logs.String(), "backend=cpu/") != tp {
		t.Errorf("want %d \"worker serving\" lines, each with its backend:\n%s", tp, logs.String())
	}
	resp, err := cli.Get(ctx, cluster.KeyPrefix+"members/u/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("registrations left after the stop: %v %v", resp, err)
	}
}

// runRank runs rank r of a TP group whose ring listens on lns: it
// connects the ring, opens the rank's shard and serves it with opts
// until ctx ends or the group does.
func runRank(ctx context.Context, dir string, ln *ring.Listener, r int, addrs []string, opts Options) error {
	comm, err := ring.Connect(ctx, ln, r, addrs, ring.Options{})
	if err != nil {
		return err
	}
	defer comm.Close()
	be, err := cpu.New(cpu.Options{Threads: 1})
	if err != nil {
		return err
	}
	defer be.Close()
	m, err := engine.Open(dir, be, engine.Shard{TP: len(addrs), Rank: r})
	if err != nil {
		return err
	}
	defer m.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	opts.Model, opts.Listener, opts.Engine.Comm = m, lis, comm
	return Run(ctx, opts)
}
