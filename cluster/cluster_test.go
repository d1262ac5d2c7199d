package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func startEtcd(t *testing.T) *clientv3.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := StartEmbedded(ctx, t.TempDir(), EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func TestRendezvous(t *testing.T) {
	cli := startEtcd(t)
	for _, size := range []int{1, 2, 4, 8} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			group := fmt.Sprint("g", size)
			out := make([][]string, size)
			errs := make([]error, size)
			var wg sync.WaitGroup
			for r := range size {
				wg.Add(1)
				go func() {
					defer wg.Done()
					out[r], errs[r] = Rendezvous(ctx, cli, Member{Group: group, Size: size, Rank: r, Value: fmt.Sprint("addr-", r)})
				}()
			}
			wg.Wait()
			for r := range size {
				if errs[r] != nil {
					t.Fatalf("rank %d: %v", r, errs[r])
				}
				for i, v := range out[r] {
					if v != fmt.Sprint("addr-", i) {
						t.Fatalf("rank %d sees %v", r, out[r])
					}
				}
			}
		})
	}
}

func TestRendezvousNamesMissingRanks(t *testing.T) {
	cli := startEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, r := range []int{0, 2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = Rendezvous(ctx, cli, Member{Group: "partial", Size: 4, Rank: r, Value: "x"})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "missing rank(s) 1, 3") {
			t.Fatalf("error %v, want ErrIncomplete naming ranks 1 and 3", err)
		}
	}
}

func TestRendezvousRejects(t *testing.T) {
	cli := startEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, m := range []Member{
		{Group: "g", Size: 2, Rank: 2},
		{Group: "g", Size: 0, Rank: 0},
		{Group: "a/b", Size: 1, Rank: 0},
		{Group: "", Size: 1, Rank: 0},
	} {
		if _, err := Rendezvous(ctx, cli, m); err == nil {
			t.Errorf("Rendezvous(%+v) succeeded", m)
		}
	}
	// A rank that believes the group is smaller sees the extra rank's key.
	if _, err := cli.Put(ctx, incarnationPrefix("sizes", 0)+"3", "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := Rendezvous(ctx, cli, Member{Group: "sizes", Size: 2, Rank: 0}); err == nil || !strings.Contains(err.Error(), "group size") {
		t.Fatalf("size mismatch: %v", err)
	}
}

// A restarted group (incarnation 1) meets only its own ranks: the
// addresses its dead predecessor left behind are never read, even when
// they are still there.
func TestRendezvousIncarnations(t *testing.T) {
	cli := startEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Incarnation 0 formed, then died without cleaning up.
	if _, err := cli.Put(ctx, incarnationPrefix("g", 0)+"0", "dead-0"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, incarnationPrefix("g", 0)+"1", "dead-1"); err != nil {
		t.Fatal(err)
	}
	got := make(chan []string, 1)
	go func() {
		vs, err := Rendezvous(ctx, cli, Member{Group: "g", Size: 2, Rank: 0, Value: "new-0", Incarnation: 1})
		if err != nil {
			t.Error(err)
		}
		got <- vs
	}()
	// Had rank 0 read the stale entries it would have returned at once
	// with dead-1 as rank 1's address.
	if _, err := Rendezvous(ctx, cli, Member{Group: "g", Size: 2, Rank: 1, Value: "new-1", Incarnation: 1}); err != nil {
		t.Fatal(err)
	}
	if vs := <-got; len(vs) != 2 || vs[0] != "new-0" || vs[1] != "new-1" {
		t.Fatalf("incarnation 1 read %v, want [new-0 new-1]", vs)
	}
	if _, err := Rendezvous(ctx, cli, Member{Group: "g", Size: 1, Rank: 0, Incarnation: -1}); err == nil {
		t.Fatal("negative incarnation accepted")
	}
}

// Forget clears a dead incarnation: registrations whose leases still run
// go at once (so the next incarnation can register the same ranks), and
// so do the rendezvous entries; other groups are untouched.
func TestForget(t *testing.T) {
	cli := startEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m := watch(t, cli)
	// A crashed rank's registration lives on with its lease (a separate
	// client, never closed, stands for the dead process's).
	dead, err := clientv3.New(clientv3.Config{Endpoints: cli.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dead.Close() })
	register(t, dead, reg("g", 0, 2), time.Minute)
	register(t, dead, reg("g", 1, 2), time.Minute)
	register(t, cli, reg("other", 0, 1), time.Minute)
	for _, key := range []string{incarnationPrefix("g", 0) + "0", incarnationPrefix("g", 3) + "1", incarnationPrefix("other", 0) + "0"} {
		if _, err := cli.Put(ctx, key, "x"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, m, "both groups", func(gs map[string]Group) bool { return gs["g"].Ready() && gs["other"].Ready() })
	if _, err := Register(ctx, cli, reg("g", 0, 2), 0); !errors.Is(err, ErrRankTaken) {
		t.Fatalf("registering over a live lease: %v, want ErrRankTaken", err)
	}
	if err := Forget(ctx, cli, "g"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, m, "g forgotten", func(gs map[string]Group) bool {
		_, ok := gs["g"]
		return !ok && gs["other"].Ready()
	})
	for prefix, want := range map[string]int64{rendezvousPrefix("g"): 0, rendezvousPrefix("other"): 1} {
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count != want {
			t.Errorf("%s: %d entries after Forget, want %d", prefix, resp.Count, want)
		}
	}
	next := reg("g", 0, 2)
	next.Incarnation = 1
	register(t, cli, next, 0)
	for _, bad := range []string{"", "a/b"} {
		if err := Forget(ctx, cli, bad); err == nil {
			t.Errorf("Forget(%q) succeeded", bad)
		}
	}
}
