package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tandemllm/tandem/cluster"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
	"github.com/tandemllm/tandem/worker/supervisor"
)

// group is one worker group of the system.
type group struct {
	name string
	role cluster.Role
	tp   int
}

// system is the cluster under test: etcd here, the coordinator and every
// rank as processes, a proxy in front of every rank.
type system struct {
	opts    *Options
	groups  []group
	etcd    *cluster.Embedded
	cli     *clientv3.Client
	coord   *supervisor.Supervisor // the coordinator, restarted when it dies
	workers *supervisor.Supervisor
	proxies []*proxy
	faults  kvFaults
	conn    *grpc.ClientConn // to the coordinator
	health  tandemv1.GenerationClient
	grpc    string // the coordinator's gRPC address
}

// groups lists the groups of o: prefill-i and decode-i.
func groupsOf(o *Options) []group {
	var gs []group
	for i, tp := range o.PrefillTP {
		gs = append(gs, group{fmt.Sprintf("prefill-%d", i), cluster.RolePrefill, tp})
	}
	for i, tp := range o.DecodeTP {
		gs = append(gs, group{fmt.Sprintf("decode-%d", i), cluster.RoleDecode, tp})
	}
	return gs
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startSystem starts etcd, the coordinator and every group, and waits
// until the coordinator serves them all. On error everything started is
// stopped.
func startSystem(ctx context.Context, o *Options) (s *system, err error) {
	s = &system{opts: o, groups: groupsOf(o)}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	if s.etcd, err = cluster.StartEmbedded(ctx, o.Dir, cluster.EmbeddedOptions{Members: o.EtcdMembers}); err != nil {
		return s, err
	}
	endpoints := strings.Join(s.etcd.Endpoints(), ",")
	if s.cli, err = cluster.Dial(s.etcd.Endpoints()); err != nil {
		return s, err
	}
	if err := s.startCoordinator(ctx, endpoints); err != nil {
		return s, err
	}
	if err := s.startWorkers(ctx, endpoints); err != nil {
		return s, err
	}
	rctx, cancel := context.WithTimeout(ctx, o.ReadyTimeout)
	defer cancel()
	if err := s.waitServing(rctx); err != nil {
		return s, fmt.Errorf("chaos: the cluster did not come up: %w", err)
	}
	return s, nil
}

// logger writes the supervisors' logs to the system's log.
func (s *system) logger(component string) *slog.Logger {
	return slog.New(slog.NewTextHandler(s.opts.Log, nil)).With("chaos", component)
}

func (s *system) startCoordinator(ctx context.Context, endpoints string) error {
	var err error
	if s.grpc, err = freeAddr(); err != nil {
		return err
	}
	httpAddr, err := freeAddr()
	if err != nil {
		return err
	}
	args := []string{"coordinator", "--etcd-endpoints", endpoints, "--model", s.opts.ModelDir, "--model-name", s.opts.ModelName,
		"--grpc-addr", s.grpc, "--http-addr", httpAddr, "--max-in-flight", strconv.Itoa(s.opts.MaxInFlight)}
	s.coord, err = supervisor.Start(ctx, supervisor.Options{
		Binary: s.opts.Binary, Output: s.opts.Log, Logger: s.logger("coordinator"),
		Backoff: s.opts.RestartBackoff, CrashLoopWindow: time.Second, CrashLoopLimit: 1 << 20,
	}, supervisor.Group{Name: "coordinator", Ranks: []int{0}, Args: func(int, int) []string { return args }})
	if err != nil {
		return err
	}
	if s.conn, err = grpc.NewClient(s.grpc, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return err
	}
	s.health = tandemv1.NewGenerationClient(s.conn)
	return nil
}

// startWorkers starts every group under one supervisor, each rank on a
// port of its own behind a proxy whose address it registers.
func (s *system) startWorkers(ctx context.Context, endpoints string) error {
	var groups []supervisor.Group
	for _, g := range s.groups {
		real := make([]string, g.tp)
		advertised := make([]string, g.tp)
		for r := range g.tp {
			var err error
			if real[r], err = freeAddr(); err != nil {
				return err
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			s.proxies = append(s.proxies, startProxy(ln, real[r], &s.faults))
			advertised[r] = ln.Addr().String()
		}
		ranks := make([]int, g.tp)
		for r := range ranks {
			ranks[r] = r
		}
		groups = append(groups, supervisor.Group{Name: g.name, Ranks: ranks, Args: func(rank, inc int) []string {
			return []string{"worker", "--role", string(g.role), "--group", g.name, "--tp", strconv.Itoa(g.tp),
				"--rank", strconv.Itoa(rank), "--incarnation", strconv.Itoa(inc),
				"--etcd-endpoints", endpoints, "--model", s.opts.ModelDir, "--model-name", s.opts.ModelName,
				"--threads", "1", "--kv-cache-mb", strconv.Itoa(s.opts.KVCacheMB), "--max-batch-tokens", "256",
				"--grpc-addr", real[rank], "--advertise-addr", advertised[rank], "--metrics-addr", ""}
		}})
	}
	var err error
	s.workers, err = supervisor.Start(ctx, supervisor.Options{
		Binary: s.opts.Binary, Output: s.opts.Log, Logger: s.logger("workers"), Etcd: s.cli,
		Backoff: s.opts.RestartBackoff, CrashLoopWindow: s.opts.CrashLoopWindow, CrashLoopLimit: s.opts.CrashLoopLimit,
	}, groups...)
	return err
}

// healthy reports whether every group is ready (its ranks registered)
// and the coordinator serves every one of them.
func (s *system) healthy(ctx context.Context) bool {
	for _, g := range s.groups {
		if st, _ := s.workers.Status(g.name); !st.Ready || st.Down {
			return false
		}
	}
	hctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	h, err := s.health.Health(hctx, &tandemv1.HealthRequest{})
	if err != nil || h.GetStatus() != tandemv1.ServingStatus_SERVING_STATUS_SERVING {
		return false
	}
	ready := 0
	for _, rg := range h.GetGroups() {
		ready += int(rg.GetReady())
	}
	return ready == len(s.groups)
}

// waitServing waits until healthy, polling every 50 ms.
func (s *system) waitServing(ctx context.Context) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !s.healthy(ctx) {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// kvBlocks asks every group's leader for its KV blocks, and says whether
// all are free with nothing running or waiting.
func (s *system) kvBlocks(ctx context.Context) ([]GroupBlocks, bool) {
	m, err := cluster.WatchMembership(ctx, s.cli)
	if err != nil {
		return nil, false
	}
	defer m.Close()
	var out []GroupBlocks
	free := true
	for _, g := range s.groups {
		gb := GroupBlocks{Group: g.name}
		cg, ok := m.Group(g.name)
		if ok && cg.Ready() {
			st, err := leaderStats(ctx, cg.Ranks[0].Addr)
			if err == nil {
				gb.Free, gb.Total = int(st.GetKvBlocksFree()), int(st.GetKvBlocksTotal())
				gb.Running, gb.Waiting = int(st.GetRunningRequests()), int(st.GetWaitingRequests())
				gb.Answered = true
			}
		}
		free = free && gb.Answered && gb.Free == gb.Total && gb.Running == 0 && gb.Waiting == 0
		out = append(out, gb)
	}
	return out, free
}

func leaderStats(ctx context.Context, addr string) (*tandemv1.StatsResponse, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return tandemv1.NewWorkerClient(conn).Stats(ctx, &tandemv1.StatsRequest{})
}

// stop stops every process, proxy and etcd member; safe on a partial
// start.
func (s *system) stop() {
	var errs []error
	if s.workers != nil {
		s.workers.Stop()
	}
	if s.coord != nil {
		s.coord.Stop()
	}
	if s.conn != nil {
		errs = append(errs, s.conn.Close())
	}
	for _, p := range s.proxies {
		p.close()
	}
	if s.cli != nil {
		errs = append(errs, s.cli.Close())
	}
	if s.etcd != nil {
		s.etcd.Close()
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(s.opts.Log, "chaos: stopping:", err)
	}
}
