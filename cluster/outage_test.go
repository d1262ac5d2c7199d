package cluster

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// waitAvailable waits until r reports etcd available (or not).
func waitAvailable(t *testing.T, r *Registered, m *Membership, want bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		ok, changed, _ := r.Available()
		mok, _ := m.Available()
		if ok == want && mok == want {
			return
		}
		select {
		case <-changed:
		case <-m.Changed():
		case <-deadline:
			t.Fatalf("registration available %v, membership %v; want %v", ok, mok, want)
		}
	}
}

// TestRegistrationOutlivesEtcdOutage: etcd stopped for longer than the
// lease TTL takes nothing away: the registration is not lost, the
// membership keeps its last view and both say etcd is unavailable; once
// etcd is back the entry is there and both say so.
func TestRegistrationOutlivesEtcdOutage(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	e, err := StartEmbedded(ctx, dir, EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(e.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	cli, err := Dial(e.Endpoints())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	r := register(t, cli, reg("g", 0, 1), time.Second)
	m := watch(t, cli)
	waitFor(t, m, "registration", func(gs map[string]Group) bool { return gs["g"].Ready() })

	// A crash: a graceful stop would first let leases expire while it
	// waits for clients to leave.
	if err := e.StopMember(0); err != nil {
		t.Fatal(err)
	}
	waitAvailable(t, r, m, false)
	// Past the lease's TTL, the view and the registration are the same.
	waitAvailableFor(t, r, 3*time.Second)
	if g, _ := m.Group("g"); !g.Ready() {
		t.Fatal("the membership forgot a group while etcd was away")
	}
	select {
	case <-r.Lost():
		t.Fatal("the registration was lost while etcd was away")
	default:
	}

	e, err = StartEmbedded(ctx, dir, EmbeddedOptions{ClientAddr: u.Host})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	waitAvailable(t, r, m, true)
	resp, err := cli.Get(ctx, memberKey("g", 0))
	if err != nil || len(resp.Kvs) != 1 || clientv3.LeaseID(resp.Kvs[0].Lease) != r.Lease() {
		t.Fatalf("entry after the outage: %v %v (lease %x)", resp, err, r.Lease())
	}
	if g, _ := m.Group("g"); !g.Ready() {
		t.Fatal("group not ready after the outage")
	}
	// The clients go first, so that etcd need not wait out their streams.
	m.Close()
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	cli.Close()
}

// waitAvailableFor waits d while r stays unavailable: an outage longer
// than the lease.
func waitAvailableFor(t *testing.T, r *Registered, d time.Duration) {
	t.Helper()
	end := time.After(d)
	for {
		ok, changed, _ := r.Available()
		if ok {
			t.Fatal("etcd came back by itself")
		}
		select {
		case <-changed:
		case <-end:
			return
		}
	}
}

// TestEmbeddedMemberLoss: a three-member cluster loses its leader; the
// other two elect another, and a client of all three endpoints goes on:
// writes succeed, the registration keeps its lease, the membership its
// view.
func TestEmbeddedMemberLoss(t *testing.T) {
	ctx := t.Context()
	e, err := StartEmbedded(ctx, t.TempDir(), EmbeddedOptions{Members: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	if n := len(e.Endpoints()); n != 3 || e.Members() != 3 {
		t.Fatalf("%d endpoints, %d members", n, e.Members())
	}
	cli, err := Dial(e.Endpoints())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	// The default TTL, as workers have: a shorter one could run out on a
	// loaded machine while the two members elect a leader.
	r := register(t, cli, reg("g", 0, 1), DefaultMemberTTL)
	m := watch(t, cli)
	waitFor(t, m, "registration", func(gs map[string]Group) bool { return gs["g"].Ready() })

	leader := e.Leader()
	if leader < 0 {
		t.Fatal("no leader")
	}
	if err := e.StopMember(leader); err != nil {
		t.Fatal(err)
	}
	if err := e.StopMember(leader); err == nil {
		t.Error("a stopped member stopped again")
	}
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond) // raft state has no event to wait on
	defer tick.Stop()
	for e.Leader() < 0 {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatal("the two members left elected no leader")
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cli.Put(wctx, "/after", "x"); err != nil {
		t.Fatalf("write after losing a member: %v", err)
	}
	// A renewal proves the lease alive; TimeToLive would read 0 for a
	// live lease with under a second left.
	if _, err := cli.KeepAliveOnce(wctx, r.Lease()); err != nil {
		t.Fatalf("the registration's lease after losing a member: %v", err)
	}
	select {
	case <-r.Lost():
		t.Fatal("registration lost")
	default:
	}
	if g, _ := m.Group("g"); !g.Ready() {
		t.Fatal("the membership lost the group")
	}
}

// TestRecoverKeepsALeaseAboutToExpire: a keepalive that ended while
// the lease still lived (etcd answered too late, as when a leader is
// lost) keeps the lease, even with under a second left, when TimeToLive
// reads 0; it neither puts the entry anew nor takes its own entry for
// another registration's.
func TestRecoverKeepsALeaseAboutToExpire(t *testing.T) {
	cli := startEtcd(t)
	r := register(t, cli, reg("g", 0, 1), 2*time.Second)
	r.stop() // no more renewals: the lease runs down
	<-r.Lost()
	lease := r.Lease()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond) // a lease's remaining time has no event
	defer tick.Stop()
	for {
		ttl, err := cli.TimeToLive(t.Context(), lease)
		if err != nil || ttl.TTL < 0 {
			t.Fatalf("the lease ran out before the test saw under a second left: %v %v", ttl, err)
		}
		if ttl.TTL == 0 {
			break
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatal("the lease never came under a second")
		}
	}
	if err := r.recover(t.Context()); err != nil {
		t.Fatalf("recover: %v", err)
	}
	if got := r.Lease(); got != lease {
		t.Fatalf("recover put the entry under lease %x, want the old %x kept", got, lease)
	}
	ttl, err := cli.TimeToLive(t.Context(), lease)
	if err != nil || ttl.TTL < 1 {
		t.Fatalf("the lease after recover: TTL %v, %v; want it renewed", ttl.TTL, err)
	}
}

func TestStartEmbeddedRejects(t *testing.T) {
	for _, tc := range []struct {
		opts EmbeddedOptions
		want string
	}{
		{EmbeddedOptions{Members: -1}, "-1 etcd members"},
		{EmbeddedOptions{Members: 3, ClientAddr: "127.0.0.1:2379"}, "several members need port 0"},
		{EmbeddedOptions{ClientAddr: "nonsense"}, `etcd client address "nonsense"`},
	} {
		if _, err := StartEmbedded(t.Context(), t.TempDir(), tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error with %q", tc.opts, err, tc.want)
		}
	}
}
