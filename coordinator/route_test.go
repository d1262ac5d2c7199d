package coordinator

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/status"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/metrics"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

func TestEstimate(t *testing.T) {
	poll := time.Unix(100, 0)
	before, after := poll.Add(-time.Millisecond), poll.Add(time.Millisecond)
	st := &tandemv1.StatsResponse{KvBlocksFree: 100, RunningRequests: 3, WaitingRequests: 2, PendingPrefillTokens: 1000}
	tests := []struct {
		name  string
		st    *tandemv1.StatsResponse
		sents []*sent
		want  load
	}{
		{"stats alone", st, nil, load{pendingTokens: 1000, freeBlocks: 100, running: 3, waiting: 2}},
		{"confirmed before the poll: in the stats", st, []*sent{{at: before, tokens: 50, blocks: 4, confirmed: true}}, load{pendingTokens: 1000, freeBlocks: 100, running: 3, waiting: 2}},
		{"sent before the poll, unconfirmed: maybe not in the stats", st, []*sent{{at: before, tokens: 50, blocks: 4}},
			load{pendingTokens: 1050, freeBlocks: 96, running: 3, waiting: 3}},
		{"ended: in the stats or gone", st, []*sent{{at: after, tokens: 50, blocks: 4, ended: true}}, load{pendingTokens: 1000, freeBlocks: 100, running: 3, waiting: 2}},
		{"sent since the poll", st, []*sent{{at: after, tokens: 50, blocks: 4}, {at: poll, tokens: 7, blocks: 1, confirmed: true}},
			load{pendingTokens: 1057, freeBlocks: 95, running: 3, waiting: 4}},
		{"answered prefill no longer pending", st, []*sent{{at: after, tokens: 50, answered: true, confirmed: true}}, load{pendingTokens: 1000, freeBlocks: 100, running: 3, waiting: 3}},
		{"never polled: registered blocks", nil, []*sent{{at: before, tokens: 5, blocks: 2}}, load{pendingTokens: 5, freeBlocks: 62, waiting: 1}},
		// The poll ran from poll to poll+0.5 ms.
		{"running through the poll, ended after it answered: no longer running", st,
			[]*sent{{at: before, blocks: 4, confirmed: true, streaming: true, ended: true, endedAt: after}},
			load{pendingTokens: 1000, freeBlocks: 100, running: 2, waiting: 2}},
		{"ended while the poll ran: maybe counted, kept", st,
			[]*sent{{at: before, blocks: 4, confirmed: true, streaming: true, ended: true, endedAt: poll}},
			load{pendingTokens: 1000, freeBlocks: 100, running: 3, waiting: 2}},
		{"a prefill answered before the poll, ended after: not running there", st,
			[]*sent{{at: before, tokens: 50, answered: true, confirmed: true, ended: true, endedAt: after}},
			load{pendingTokens: 1000, freeBlocks: 100, running: 3, waiting: 2}},
		{"confirmed after the poll started, ended after: not in the stats", st,
			[]*sent{{at: after, blocks: 4, confirmed: true, streaming: true, ended: true, endedAt: after.Add(time.Millisecond)}},
			load{pendingTokens: 1000, freeBlocks: 100, running: 3, waiting: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			polled, answered := poll, poll.Add(time.Millisecond/2)
			if tt.st == nil {
				polled, answered = time.Time{}, time.Time{}
			}
			if got := estimate(tt.st, polled, answered, tt.sents, 64); got != tt.want {
				t.Errorf("estimate = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestPick(t *testing.T) {
	stats := func(pending int64, free, running, waiting int32) load {
		return estimate(&tandemv1.StatsResponse{PendingPrefillTokens: pending, KvBlocksFree: free, RunningRequests: running, WaitingRequests: waiting}, time.Time{}, time.Time{}, nil, 0)
	}
	tests := []struct {
		name                     string
		loads                    []load
		prefill, decode, unified int
	}{
		{"none", nil, -1, -1, -1},
		{"one", []load{stats(5, 5, 5, 5)}, 0, 0, 0},
		{"all equal: first", []load{stats(10, 10, 1, 1), stats(10, 10, 1, 1), stats(10, 10, 1, 1)}, 0, 0, 0},
		{"clear winners", []load{stats(300, 10, 4, 0), stats(100, 50, 1, 0), stats(200, 90, 0, 3)}, 1, 2, 1},
		{"prefill tie: fewest running+waiting", []load{stats(100, 0, 2, 2), stats(100, 0, 1, 2), stats(100, 0, 3, 0)}, 1, 1, 1},
		{"decode tie on free blocks: fewest running", []load{stats(0, 40, 5, 0), stats(0, 40, 2, 9), stats(0, 40, 3, 0)}, 2, 1, 2},
		{"decode tie on free and running: fewest waiting", []load{stats(0, 40, 2, 5), stats(0, 40, 2, 1)}, 1, 1, 1},
		{"unified tie: most free blocks", []load{stats(0, 10, 1, 1), stats(0, 30, 2, 0), stats(0, 20, 0, 2)}, 0, 1, 1},
		{"prefill counts tokens, not requests", []load{stats(4096, 0, 0, 1), stats(10, 0, 5, 5)}, 1, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pickPrefill(tt.loads); got != tt.prefill {
				t.Errorf("pickPrefill = %d, want %d", got, tt.prefill)
			}
			if got := pickDecode(tt.loads); got != tt.decode {
				t.Errorf("pickDecode = %d, want %d", got, tt.decode)
			}
			if got := pickUnified(tt.loads); got != tt.unified {
				t.Errorf("pickUnified = %d, want %d", got, tt.unified)
			}
		})
	}
}

// routeTestCoordinator holds groups as a membership snapshot would give
// them; no worker is contacted (clients connect lazily).
func routeTestCoordinator(t *testing.T, groups ...cluster.Group) *Coordinator {
	t.Helper()
	opts := Options{MaxInFlight: 2}
	opts.Routing.defaults()
	c := &Coordinator{
		opts:       opts,
		log:        slog.New(slog.DiscardHandler),
		model:      &modelInfo{name: "m"},
		inflight:   map[string]struct{}{},
		groups:     map[string]*groupState{},
		conns:      map[string]*grpc.ClientConn{},
		index:      newPrefixIndex(),
		metrics:    metrics.NewCoordinator(prometheus.NewRegistry(), "m"),
		grpcHealth: health.NewServer(),
	}
	t.Cleanup(func() {
		c.wg.Wait() // the groups' KV event followers, which find no worker here, end with t.Context()
		for _, cc := range c.conns {
			cc.Close()
		}
	})
	c.sync(t.Context(), groups)
	return c
}

func group(name string, role cluster.Role, tp int, model string) cluster.Group {
	g := cluster.Group{Name: name, Role: role, Model: model, TP: tp}
	for r := range tp {
		g.Ranks = append(g.Ranks, cluster.Registration{Role: role, Group: name, Rank: r, TP: tp,
			Addr: name + ":" + string(rune('0'+r)), Model: model, KVBlocks: 100, KVBlockSize: 16})
	}
	return g
}

func TestPickRoute(t *testing.T) {
	notReady := group("p-broken", cluster.RolePrefill, 2, "m")
	notReady.Ranks[1] = cluster.Registration{}
	tests := []struct {
		name      string
		groups    []cluster.Group
		want      string   // "prefill>decode", "unified" or an error substring
		exclude   []string // groups that failed the request
		recompute bool     // a migration: a decode group may run it all
	}{
		{name: "disaggregated preferred", groups: []cluster.Group{group("p", cluster.RolePrefill, 1, "m"), group("d", cluster.RoleDecode, 2, "m"), group("u", cluster.RoleUnified, 1, "m")}, want: "p>d"},
		{name: "unified only", groups: []cluster.Group{group("u", cluster.RoleUnified, 1, "m")}, want: "u"},
		{name: "prefill without decode falls back to unified", groups: []cluster.Group{group("p", cluster.RolePrefill, 1, "m"), group("u", cluster.RoleUnified, 1, "m")}, want: "u"},
		{name: "nothing ready", groups: []cluster.Group{group("p", cluster.RolePrefill, 1, "m")}, want: `no ready group serves model "m" (ready groups: 1 prefill, 0 decode, 0 unified)`},
		{name: "no groups", want: `no ready group serves model "m"`},
		{name: "not ready skipped", groups: []cluster.Group{notReady, group("p", cluster.RolePrefill, 1, "m"), group("d", cluster.RoleDecode, 1, "m")}, want: "p>d"},
		{name: "other model skipped", groups: []cluster.Group{group("u1", cluster.RoleUnified, 1, "other"), group("u2", cluster.RoleUnified, 1, "/models/m")}, want: "u2"},
		{name: "failed groups skipped", groups: []cluster.Group{group("p1", cluster.RolePrefill, 1, "m"), group("p2", cluster.RolePrefill, 1, "m"),
			group("d1", cluster.RoleDecode, 1, "m"), group("d2", cluster.RoleDecode, 1, "m")}, exclude: []string{"p1", "d1"}, want: "p2>d2"},
		{name: "decode alone serves no new request", groups: []cluster.Group{group("p", cluster.RolePrefill, 1, "m"), group("d", cluster.RoleDecode, 1, "m")},
			exclude: []string{"p"}, want: "ready groups: 1 prefill, 1 decode"},
		{name: "decode alone recomputes a migrated request", groups: []cluster.Group{group("p", cluster.RolePrefill, 1, "m"), group("d", cluster.RoleDecode, 1, "m")},
			exclude: []string{"p"}, recompute: true, want: "d"},
		{name: "unified before decode recompute", groups: []cluster.Group{group("d", cluster.RoleDecode, 1, "m"), group("u", cluster.RoleUnified, 1, "m")},
			recompute: true, want: "u"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := routeTestCoordinator(t, tt.groups...)
			exclude := map[*groupState]bool{}
			for _, name := range tt.exclude {
				exclude[c.groups[name]] = true
			}
			rt, err := c.pickRoute(make([]int32, 10), exclude, tt.recompute)
			var got string
			switch {
			case err != nil:
				if status.Code(err) != codes.Unavailable {
					t.Errorf("code = %v, want Unavailable", status.Code(err))
				}
				got = status.Convert(err).Message()
			case rt.whole != nil:
				got = rt.whole.name
			default:
				got = rt.prefill.name + ">" + rt.decode.name
			}
			if !strings.Contains(got, tt.want) {
				t.Errorf("route = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPickRouteCountsWhatItSent(t *testing.T) {
	c := routeTestCoordinator(t,
		group("p1", cluster.RolePrefill, 1, "m"), group("p2", cluster.RolePrefill, 1, "m"),
		group("d1", cluster.RoleDecode, 1, "m"), group("d2", cluster.RoleDecode, 2, "m"))
	poll := time.Now().Add(-time.Second)
	c.groups["p1"].stats, c.groups["p1"].polled = &tandemv1.StatsResponse{PendingPrefillTokens: 0}, poll
	c.groups["p2"].stats, c.groups["p2"].polled = &tandemv1.StatsResponse{PendingPrefillTokens: 100}, poll
	c.groups["d1"].stats, c.groups["d1"].polled = &tandemv1.StatsResponse{KvBlocksFree: 20, KvBlockSize: 16}, poll
	c.groups["d2"].stats, c.groups["d2"].polled = &tandemv1.StatsResponse{KvBlocksFree: 18, KvBlockSize: 16}, poll

	// A 159-token prompt takes 10 blocks with its first token; the
	// second request sees the first's tokens and blocks.
	var got []string
	var sents []*sent
	for range 3 {
		rt, err := c.pickRoute(make([]int32, 159), nil, false)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, rt.prefill.name+">"+rt.decode.name)
		sents = append(sents, rt.prefillSent)
	}
	if want := "p1>d1 p2>d2 p1>d1"; strings.Join(got, " ") != want {
		t.Errorf("routes = %q, want %q", strings.Join(got, " "), want)
	}
	// Answered prefills no longer count: p1 has none pending, p2 259.
	c.answered(sents[0])
	c.answered(sents[2])
	rt, err := c.pickRoute(make([]int32, 1), nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if rt.prefill.name != "p1" {
		t.Errorf("prefill = %s, want p1", rt.prefill.name)
	}
}

func TestDestination(t *testing.T) {
	c := routeTestCoordinator(t, group("d", cluster.RoleDecode, 3, "m"))
	d := c.groups["d"].destination(32)
	if d.Group != "d" || d.Tp != 3 || strings.Join(d.RankAddresses, ",") != "d:0,d:1,d:2" || d.SkipTokens != 32 {
		t.Errorf("destination = %v", d)
	}
}

func TestSyncReplacesMovedLeaderAndDropsLeftGroups(t *testing.T) {
	c := routeTestCoordinator(t, group("a", cluster.RoleUnified, 1, "m"), group("b", cluster.RoleUnified, 1, "m"))
	a, b := c.groups["a"], c.groups["b"]
	moved := group("a", cluster.RoleUnified, 1, "m")
	moved.Ranks[0].Addr = "elsewhere:1"
	c.sync(t.Context(), []cluster.Group{moved})
	if a.ctx.Err() == nil || !strings.Contains(context.Cause(a.ctx).Error(), "another leader") {
		t.Errorf("moved group's context: %v", context.Cause(a.ctx))
	}
	if b.ctx.Err() == nil || !strings.Contains(context.Cause(b.ctx).Error(), `group "b" left the cluster`) {
		t.Errorf("left group's context: %v", context.Cause(b.ctx))
	}
	if len(c.groups) != 1 || c.groups["a"].addr != "elsewhere:1" {
		t.Errorf("groups after sync: %v", c.groups)
	}
	if len(c.conns) != 1 || c.conns["elsewhere:1"] == nil {
		t.Errorf("connections after sync: %v", c.conns)
	}
}

func TestAdmit(t *testing.T) {
	c := routeTestCoordinator(t)
	release, err := c.admit("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.admit("a"); status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), `"a"`) {
		t.Errorf("duplicate id: %v", err)
	}
	if _, err := c.admit("b"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.admit("c"); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("over MaxInFlight: %v", err)
	}
	release()
	if _, err := c.admit("a"); err != nil {
		t.Errorf("after release: %v", err)
	}
}

// A group restarted by its supervisor at the same addresses (fixed
// ports) is a new incarnation: requests on the old one end, and the new
// one gets a state of its own.
func TestSyncReplacesRestartedGroup(t *testing.T) {
	c := routeTestCoordinator(t, group("a", cluster.RoleUnified, 1, "m"))
	old := c.groups["a"]
	restarted := group("a", cluster.RoleUnified, 1, "m")
	restarted.Incarnation = 1
	for i := range restarted.Ranks {
		restarted.Ranks[i].Incarnation = 1
	}
	c.sync(t.Context(), []cluster.Group{restarted})
	if old.ctx.Err() == nil || !strings.Contains(context.Cause(old.ctx).Error(), "incarnation") {
		t.Errorf("the old incarnation's context: %v", context.Cause(old.ctx))
	}
	if now := c.groups["a"]; now == old || now.group.Incarnation != 1 || now.client == nil {
		t.Errorf("state after the restart: %+v", now)
	}
}

// Every finish reason on the wire is counted under one of the metrics'
// finished_reason labels.
func TestFinishNameIsAMetricLabel(t *testing.T) {
	labels := []string{metrics.FinishStop, metrics.FinishLength, metrics.FinishAbort, metrics.FinishTimeout, metrics.FinishError}
	for v := range tandemv1.FinishReason_name {
		r := tandemv1.FinishReason(v)
		if name := finishName(r); !slices.Contains(labels, name) {
			t.Errorf("finishName(%v) = %q, not one of %v", r, name, labels)
		}
	}
}

// The coordinator logs a group's readiness as it changes, and only then:
// a group forming rank by rank is quiet until whole, and one whose ranks
// leave (a stop) is said to be not ready, then gone, never "registered".
func TestSyncLogsReadinessChanges(t *testing.T) {
	whole := group("a", cluster.RoleDecode, 2, "m")
	noLeader := group("a", cluster.RoleDecode, 2, "m")
	noLeader.Ranks[0] = cluster.Registration{}
	noFollower := group("a", cluster.RoleDecode, 2, "m")
	noFollower.Ranks = noFollower.Ranks[:1]
	next := group("a", cluster.RoleDecode, 2, "m")
	next.Incarnation = 1
	for i := range next.Ranks {
		next.Ranks[i].Incarnation = 1
	}
	c := routeTestCoordinator(t)
	var logs groupLog
	c.log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey || a.Key == slog.LevelKey {
			return slog.Attr{}
		}
		return a
	}}))
	for _, step := range []struct {
		name   string
		groups []cluster.Group
		want   string // the lines logged, "" for none
	}{
		{"follower first", []cluster.Group{noLeader}, ""},
		{"whole", []cluster.Group{whole}, `msg="group ready" group=a role=decode model=m tp=2 incarnation=0`},
		{"unchanged", []cluster.Group{whole}, ""},
		{"follower leaves", []cluster.Group{noFollower}, `msg="group not ready" group=a missing_ranks=[1]`},
		{"leader leaves", nil, `msg="group left" group=a`},
		{"leader back", []cluster.Group{noFollower}, ""},
		{"whole again", []cluster.Group{whole}, `msg="group ready" group=a role=decode model=m tp=2 incarnation=0`},
		{"restarted whole", []cluster.Group{next}, `msg="group ready" group=a role=decode model=m tp=2 incarnation=1`},
	} {
		before := len(logs.lines())
		c.sync(t.Context(), step.groups)
		if got := strings.Join(logs.lines()[before:], "\n"); got != step.want {
			t.Errorf("%s: logged %q, want %q", step.name, got, step.want)
		}
	}
}

// groupLog keeps the lines logged about groups (the KV event followers,
// which find no worker here, log from their own goroutines too).
type groupLog struct {
	mu  sync.Mutex
	all []string
}

func (l *groupLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for line := range strings.Lines(string(p)) {
		if strings.HasPrefix(line, `msg="group `) {
			l.all = append(l.all, strings.TrimSpace(line))
		}
	}
	return len(p), nil
}

func (l *groupLog) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.all)
}

// WaitRoutable returns once every group named is routable, and at its
// deadline names those that are not.
func TestWaitRoutable(t *testing.T) {
	half := group("a", cluster.RoleDecode, 2, "m")
	half.Ranks = half.Ranks[:1]
	c := routeTestCoordinator(t, group("b", cluster.RolePrefill, 1, "m"), half)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := c.WaitRoutable(ctx, "a", "b", "gone"); err == nil || !strings.Contains(err.Error(), "not routing to a, gone") {
		t.Fatalf("WaitRoutable before the groups are whole: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- c.WaitRoutable(t.Context(), "a", "b") }()
	c.sync(t.Context(), []cluster.Group{group("b", cluster.RolePrefill, 1, "m"), group("a", cluster.RoleDecode, 2, "m")})
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitRoutable did not return once the groups were routable")
	}
}
