package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func reg(group string, rank, tp int) Registration {
	return Registration{Role: RoleDecode, Group: group, Rank: rank, TP: tp,
		Addr: fmt.Sprintf("127.0.0.1:%d", 9000+rank), Model: "m", KVBlocks: 64, KVBlockSize: 16}
}

// waitFor waits on Changed until cond holds for the current groups, with
// a deadline instead of sleeps.
func waitFor(t *testing.T, m *Membership, what string, cond func(map[string]Group) bool) {
	t.Helper()
	deadline := time.NewTimer(8 * time.Second)
	defer deadline.Stop()
	for {
		ch := m.Changed()
		byName := map[string]Group{}
		for _, g := range m.Groups() {
			byName[g.Name] = g
		}
		if cond(byName) {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s; groups %+v", what, byName)
		}
	}
}

func watch(t *testing.T, cli *clientv3.Client) *Membership {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// ctx bounds only the load; the watch runs until Close.
	m, err := WatchMembership(context.WithoutCancel(ctx), cli)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func register(t *testing.T, cli *clientv3.Client, r Registration, ttl time.Duration) *Registered {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rg, err := Register(ctx, cli, r, ttl)
	if err != nil {
		t.Fatalf("Register(%+v): %v", r, err)
	}
	t.Cleanup(func() {
		// The registration's client may be closed already; don't wait on it.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = rg.Close(ctx)
	})
	return rg
}

func TestRegistrationValidate(t *testing.T) {
	for _, tc := range []struct {
		field string
		edit  func(*Registration)
	}{
		{"", func(*Registration) {}},
		{"role", func(r *Registration) { r.Role = "both" }},
		{"role", func(r *Registration) { r.Role = "" }},
		{"group", func(r *Registration) { r.Group = "" }},
		{"group", func(r *Registration) { r.Group = "a/b" }},
		{"tp", func(r *Registration) { r.TP = 0 }},
		{"rank", func(r *Registration) { r.Rank = 2 }},
		{"rank", func(r *Registration) { r.Rank = -1 }},
		{"addr", func(r *Registration) { r.Addr = "" }},
		{"model", func(r *Registration) { r.Model = "" }},
		{"kv_blocks", func(r *Registration) { r.KVBlocks = -1 }},
		{"kv_block_size", func(r *Registration) { r.KVBlockSize = -1 }},
		{"kv_block_size", func(r *Registration) { r.KVBlockSize = 0 }},
		{"incarnation", func(r *Registration) { r.Incarnation = -1 }},
	} {
		r := reg("g", 1, 2)
		tc.edit(&r)
		err := r.Validate()
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("Validate(%+v): %v", r, err)
		case tc.field != "" && (err == nil || !strings.Contains(err.Error(), "field "+tc.field+":")):
			t.Errorf("Validate(%+v) = %v, want an error naming %s", r, err, tc.field)
		}
	}
}

func TestMembershipLifecycle(t *testing.T) {
	cli := startEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	if _, err := Register(ctx, cli, Registration{Group: "g"}, 0); err == nil {
		t.Fatal("Register accepted an invalid registration")
	}
	r0 := register(t, cli, reg("g", 0, 2), 0)
	m := watch(t, cli) // loads rank 0, then sees rank 1 through the watch
	r1 := register(t, cli, reg("g", 1, 2), 0)
	g, err := m.WaitReady(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	if g.Name != "g" || g.Role != RoleDecode || g.Model != "m" || g.TP != 2 || len(g.Ranks) != 2 ||
		g.Ranks[1].Addr != "127.0.0.1:9001" || g.Missing() != nil {
		t.Fatalf("group %+v", g)
	}

	if _, err := Register(ctx, cli, reg("g", 1, 2), 0); !errors.Is(err, ErrRankTaken) {
		t.Fatalf("second Register of rank 1: %v, want ErrRankTaken", err)
	}

	if err := r1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r1.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	<-r1.Lost()
	if err := r1.Err(); err != nil {
		t.Fatalf("Err after Close: %v, want nil (a normal stop)", err)
	}
	waitFor(t, m, "rank 1 gone", func(gs map[string]Group) bool {
		g := gs["g"]
		return !g.Ready() && slices.Equal(g.Missing(), []int{1})
	})
	select {
	case <-r0.Lost():
		t.Fatal("rank 0 lost its lease")
	default:
	}

	// The rank is free again once its holder is gone.
	register(t, cli, reg("g", 1, 2), 0)
	if _, err := m.WaitReady(ctx, "g"); err != nil {
		t.Fatal(err)
	}

	m.Close()
	select {
	case <-m.Changed():
	default:
		t.Fatal("Changed stays open after Close")
	}
	if _, err := m.WaitReady(ctx, "nope"); err == nil {
		t.Fatal("WaitReady on a closed membership succeeded")
	}
}

func TestMembershipLeaseLost(t *testing.T) {
	cli := startEtcd(t)
	m := watch(t, cli)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	own, err := Dial(cli.Endpoints())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { own.Close() }) // after the registration's Close

	// A revoked lease takes the entry away, and the registration, which
	// holds the rank until Close, puts it back under a new lease.
	r := register(t, own, reg("revoked", 0, 1), time.Second)
	waitFor(t, m, "registration", func(gs map[string]Group) bool { return gs["revoked"].Ready() })
	old := r.Lease()
	if _, err := cli.Revoke(ctx, old); err != nil {
		t.Fatal(err)
	}
	waitFor(t, m, "group gone", func(gs map[string]Group) bool { _, ok := gs["revoked"]; return !ok })
	waitFor(t, m, "group back", func(gs map[string]Group) bool { return gs["revoked"].Ready() })
	if resp, err := cli.Get(ctx, memberKey("revoked", 0)); err != nil || len(resp.Kvs) != 1 || clientv3.LeaseID(resp.Kvs[0].Lease) == old {
		t.Errorf("entry %v %v: want it back under a new lease", resp, err)
	}

	// Another registration taking the rank meanwhile ends this one: the
	// entry is someone else's before the old lease goes.
	r2 := register(t, own, reg("taken", 0, 1), time.Second)
	if _, err := cli.Put(ctx, memberKey("taken", 0), `{"role":"decode","group":"taken","rank":0,"tp":1,"addr":"127.0.0.1:1","model":"m"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Revoke(ctx, r2.Lease()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r2.Lost():
	case <-ctx.Done():
		t.Fatal("Lost not closed when another process took the rank")
	}
	if err := r2.Err(); !errors.Is(err, ErrRankTaken) {
		t.Fatalf("Err when another process took the rank: %v, want ErrRankTaken", err)
	}

	// A worker that crashes (its client gone) stops its keepalive; the
	// lease expires and the group leaves.
	r3 := register(t, own, reg("expired", 0, 1), time.Second)
	waitFor(t, m, "registration", func(gs map[string]Group) bool { return gs["expired"].Ready() })
	own.Close()
	select {
	case <-r3.Lost():
	case <-ctx.Done():
		t.Fatal("Lost not closed")
	}
	if err := r3.Err(); !errors.Is(err, ErrClientClosed) {
		t.Fatalf("Err when the client closed: %v, want ErrClientClosed", err)
	}
	waitFor(t, m, "group gone", func(gs map[string]Group) bool { _, ok := gs["expired"]; return !ok })
}

func TestWaitReadyNamesMissingRanks(t *testing.T) {
	cli := startEtcd(t)
	register(t, cli, reg("partial", 0, 4), 0)
	register(t, cli, reg("partial", 2, 4), 0)
	m := watch(t, cli)
	for _, tc := range []struct{ group, want string }{
		{"partial", "missing rank(s) 1, 3"},
		{"absent", "group absent has no valid registrations"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := m.WaitReady(ctx, tc.group)
		cancel()
		if !errors.Is(err, ErrIncomplete) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("WaitReady(%s) = %v, want ErrIncomplete naming %q", tc.group, err, tc.want)
		}
	}
}

func TestMembershipIgnoresBadEntries(t *testing.T) {
	cli := startEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	register(t, cli, reg("g", 0, 3), 0)
	m := watch(t, cli)
	for key, val := range map[string]string{
		memberKey("g", 1): "{not json",
		// tp disagrees with rank 0's
		memberKey("g", 2): `{"role":"decode","group":"g","rank":2,"tp":4,"addr":"x","model":"m"}`,
		// outside the group
		memberKey("g", 9):     `{"role":"decode","group":"g","rank":9,"tp":3,"addr":"x","model":"m"}`,
		memberKey("g", -1):    "{}",
		memberKey("h", 0):     "garbage",
		membersPrefix + "g/x": "{}",
	} {
		if _, err := cli.Put(ctx, key, val); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, m, "bad entries seen", func(gs map[string]Group) bool {
		_, ok := gs["h"]
		g := gs["g"]
		return ok && !g.Ready() && slices.Equal(g.Missing(), []int{1, 2})
	})
	if h := (func() Group { g, _ := m.Group("h"); return g })(); h.Ready() || h.TP != 0 || h.Missing() != nil {
		t.Fatalf("unparsable-only group %+v", h)
	}
	// Replacing the bad entries with good ones makes the group ready.
	for r := 1; r < 3; r++ {
		if _, err := cli.Delete(ctx, memberKey("g", r)); err != nil {
			t.Fatal(err)
		}
		register(t, cli, reg("g", r, 3), 0)
	}
	if _, err := m.WaitReady(ctx, "g"); err != nil {
		t.Fatal(err)
	}
}

// A watch that starts behind a compaction fails; the view must reload and
// keep following changes.
func TestMembershipResumesAfterCompaction(t *testing.T) {
	cli := startEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	// Drive a watcher's run loop from a revision that is compacted.
	if _, err := cli.Put(ctx, "/other", "1"); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Put(ctx, "/other", "2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	register(t, cli, reg("c", 0, 1), 0)
	wctx, wcancel := context.WithCancel(context.Background())
	m := &Membership{cli: cli, cancel: wcancel, done: make(chan struct{}), entries: map[string][]byte{}, changed: make(chan struct{}), available: true}
	m.start(wctx, 1)
	t.Cleanup(m.Close)
	waitFor(t, m, "reload after compaction", func(gs map[string]Group) bool { return gs["c"].Ready() })
	register(t, cli, reg("d", 0, 1), 0)
	waitFor(t, m, "watch resumed", func(gs map[string]Group) bool { return gs["d"].Ready() })
}

// A rank left over from a group's earlier incarnation does not complete
// the new one: the group is ready only when every rank is of one
// incarnation.
func TestGroupReadyNeedsOneIncarnation(t *testing.T) {
	at := func(rank, inc int) Registration {
		r := reg("g", rank, 2)
		r.Incarnation = inc
		return r
	}
	for _, tc := range []struct {
		name    string
		ranks   []Registration
		ready   bool
		missing []int
	}{
		{"same", []Registration{at(0, 3), at(1, 3)}, true, nil},
		{"stale rank 1", []Registration{at(0, 4), at(1, 3)}, false, []int{1}},
		{"stale rank 0", []Registration{at(0, 3), at(1, 4)}, false, []int{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entries := map[string][]byte{}
			for _, r := range tc.ranks {
				b, err := json.Marshal(r)
				if err != nil {
					t.Fatal(err)
				}
				entries[memberKey(r.Group, r.Rank)] = b
			}
			gs := buildGroups(entries)
			if len(gs) != 1 || gs[0].Ready() != tc.ready || !slices.Equal(gs[0].Missing(), tc.missing) {
				t.Fatalf("groups %+v: want ready %v, missing %v", gs, tc.ready, tc.missing)
			}
		})
	}
}
