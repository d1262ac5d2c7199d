package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/internal/proctest"
	"github.com/tandemllm/tandem/model/preset"
)

// A TP degree the model's heads do not divide is refused at once, before
// the rank waits for its group, with a message naming --tp and the heads.
func TestWorkerRefusesIndivisibleTP(t *testing.T) {
	dir, err := preset.Ensure(t.Context(), "tiny", preset.DefaultCacheDir(), preset.Options{}) // 8 heads
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = runTandem(t, "worker", "--role", "decode", "--group", "g", "--tp", "3", "--etcd-endpoints", "http://127.0.0.1:1",
		"--model", dir, "--join-timeout", "1m")
	if err == nil || !strings.Contains(err.Error(), "--tp 3") || !strings.Contains(err.Error(), "8 attention heads") {
		t.Fatalf("worker --tp 3 on 8 heads: %v", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("the refusal took %v: it waited for the group", d)
	}
}

func TestWorkerRankFlags(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"--tp", "4", "--local-ranks", "0"}, "--local-ranks 0: must be >= 1"},
		{[]string{"--tp", "4", "--node-rank", "-1"}, "--node-rank -1: must be >= 0"},
		{[]string{"--tp", "4", "--local-ranks", "2", "--rank", "1"}, "--rank 1: with --local-ranks or --node-rank"},
		{[]string{"--tp", "4", "--local-ranks", "2", "--node-rank", "2"}, "ranks 4..5 are outside a group of --tp 4"},
		{[]string{"--tp", "2", "--local-ranks", "2", "--listen", "0.0.0.0:7300"}, ""},
		{[]string{"--tp", "2", "--listen", "0.0.0.0:7300"}, "give --advertise-addr"},
		{[]string{"--tp", "2", "--kv-cache-mb", "0"}, "--kv-cache-mb 0: must be >= 1"},
		{[]string{"--tp", "2", "--max-batch-tokens", "-1"}, "--max-batch-tokens -1: must be >= 1"},
		{[]string{"--tp", "2", "--join-timeout", "0s"}, "--join-timeout 0s: must be > 0"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			wf, _ := parseWorkerFlags(t, append([]string{"--role", "decode", "--group", "g", "--etcd-endpoints", "http://127.0.0.1:1"}, tt.args...))
			err := wf.validate()
			if err == nil {
				_, err = ringAdvertised(wf.g.listen, wf.advertise)
				if wf.localRanks > 1 {
					err = nil // the children advertise, each with its own --advertise-addr
				}
			}
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("got %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// parseWorkerFlags parses args as `tandem worker` does, without running it.
func parseWorkerFlags(t *testing.T, args []string) (*workerFlags, *pflag.FlagSet) {
	t.Helper()
	c := newWorkerCmd()
	c.ResetFlags()
	var f workerFlags
	f.register(c)
	if err := c.ParseFlags(args); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return &f, c.Flags()
}

func TestRankArgs(t *testing.T) {
	f, fl := parseWorkerFlags(t, []string{"--role", "decode", "--group", "d-0", "--tp", "8", "--local-ranks", "4", "--node-rank", "1",
		"--etcd-endpoints", "http://etcd:2379", "--preset", "tiny", "--grpc-addr", "0.0.0.0:7000", "--advertise-addr", "10.0.0.7:7000",
		"--metrics-addr", "0.0.0.0:9400", "--listen", "0.0.0.0:7300", "--device", "cuda", "--gpu", "0", "--threads", "2"})
	if err := f.validate(); err != nil {
		t.Fatal(err)
	}
	args, err := f.rankArgs(fl, 3, "/models/tiny", "tiny")
	if err != nil {
		t.Fatal(err)
	}
	// The child's arguments parse as a worker of rank 4+3 on GPU 3 with
	// its ports moved by 3.
	cf, _ := parseWorkerFlags(t, args[1:])
	if err := cf.validate(); err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintln(cf.g.rank, cf.localRanks, cf.be.gpu, cf.be.threads, cf.grpcAddr, cf.advertise, cf.metricsAddr, cf.g.listen, cf.model.dir, cf.model.preset, cf.be.device, cf.role, cf.g.tp)
	want := "7 1 3 2 0.0.0.0:7003 10.0.0.7:7003 0.0.0.0:9403 0.0.0.0:7303 /models/tiny  cuda decode 8\n"
	if got != want {
		t.Fatalf("child flags\n got %s\nwant %s\n(args %v)", got, want, args)
	}
	if l, err := ringAdvertised(cf.g.listen, cf.advertise); err != nil || l != "10.0.0.7:7303" {
		t.Fatalf("ring address %q, %v", l, err)
	}
}

// freePorts returns a port p such that p … p+n−1 were free a moment ago.
func freePorts(t *testing.T, n int) int {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		base := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		ok := base+n <= 65535
		for i := 1; ok && i < n; i++ {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+i))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no run of free ports")
	return 0
}

// waitHTTP waits until GET url answers want, or the deadline passes.
func waitHTTP(ctx context.Context, t *testing.T, url string, want int, exited <-chan error) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	last := ""
	for {
		if r, err := http.Get(url); err == nil {
			body, _ := io.ReadAll(r.Body)
			r.Body.Close()
			if r.StatusCode == want {
				return
			}
			last = fmt.Sprintf("%d %s", r.StatusCode, body)
		} else {
			last = err.Error()
		}
		select {
		case <-tick.C:
		case err := <-exited:
			t.Fatalf("the worker exited while waiting for %s: %v", url, err)
		case <-ctx.Done():
			t.Fatalf("%s never answered %d (last: %s)", url, want, last)
		}
	}
}

// TestWorkerLocalRanks runs a TP-2 group as one `tandem worker
// --local-ranks 2` process, as the Helm chart's pods do, and the
// coordinator as the chart's does: on a model directory without weights
// (`model init --no-weights`), both under the release's --etcd-prefix.
// Both ranks' /readyz turn 200, the coordinator's /readyz says the
// cluster serves and a completion comes back; a rank killed takes its
// sibling and the parent down with it, so the pod restarts as one.
func TestWorkerLocalRanks(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	etcd, err := cluster.StartEmbedded(ctx, t.TempDir(), cluster.EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	endpoints := etcd.Endpoints()[0]
	const prefix = "/serving/tandem"
	cli, err := dialEtcd(endpoints, prefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	dir, err := preset.Ensure(ctx, "tiny", preset.DefaultCacheDir(), preset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	coordDir := filepath.Join(t.TempDir(), "tiny")
	if _, err := runTandem(t, "model", "init", "--preset", "tiny", "--out", coordDir, "--no-weights"); err != nil {
		t.Fatal(err)
	}
	rc, err := startCoordinator(context.WithoutCancel(ctx), &coordinatorFlags{grpcAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", maxInFlight: 8}, cli, coordDir, "tiny", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.stop()
	// A stale rendezvous entry, as a crashed earlier run of this group
	// leaves behind (under the prefix: cli roots its keys there): the
	// parent clears it before starting its ranks.
	if _, err := cli.Put(ctx, cluster.KeyPrefix+"rendezvous/u-0/1", "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	base := freePorts(t, 2)
	logs := &syncBuffer{}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	worker := exec.Command(self, "worker", "--role", "unified", "--group", "u-0", "--tp", "2", "--local-ranks", "2",
		"--etcd-endpoints", endpoints, "--etcd-prefix", prefix, "--model", dir, "--model-name", "tiny", "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", base),
		"--threads", "2", "--kv-cache-mb", "16")
	worker.Stdout, worker.Stderr = logs, logs
	if err := worker.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- worker.Wait() }()
	defer func() {
		_ = worker.Process.Kill()
		if t.Failed() {
			t.Logf("worker logs:\n%s", logs)
		}
	}()
	for i := range 2 {
		waitHTTP(ctx, t, fmt.Sprintf("http://127.0.0.1:%d/readyz", base+i), http.StatusOK, exited)
		waitHTTP(ctx, t, fmt.Sprintf("http://127.0.0.1:%d/healthz", base+i), http.StatusOK, exited)
	}
	waitHTTP(ctx, t, "http://"+rc.httpAddr+"/readyz", http.StatusOK, exited)
	resp, err := http.Post("http://"+rc.httpAddr+"/v1/completions", "application/json", strings.NewReader(`{"model":"tiny","prompt":"hello","max_tokens":3}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"choices"`) {
		t.Fatalf("a completion through the coordinator on a directory without weights: %d %s", resp.StatusCode, body)
	}
	if k, err := etcdKeys(ctx, etcd.Endpoints(), "/tandem/"); err != nil || len(k) != 0 {
		t.Errorf("keys outside the prefix %s: %v %v", prefix, k, err)
	}

	ranks := proctest.Children(t, worker.Process.Pid)
	if len(ranks) != 2 {
		t.Fatalf("the parent runs %d rank processes, want 2", len(ranks))
	}
	if err := syscall.Kill(ranks[1], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err == nil {
			t.Fatal("the parent exited cleanly after a rank was killed: the pod would not restart")
		}
	case <-ctx.Done():
		t.Fatal("the parent did not exit after one of its ranks was killed")
	}
	for _, pid := range ranks {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("rank process %d outlived its parent", pid)
		}
	}
	if !strings.Contains(logs.String(), "stopping this process's other ranks") {
		t.Errorf("the parent did not say why it stopped")
	}
}

// etcdKeys lists the keys under prefix, read without any --etcd-prefix.
func etcdKeys(ctx context.Context, endpoints []string, prefix string) ([]string, error) {
	cli, err := cluster.Dial(endpoints)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys, nil
}
