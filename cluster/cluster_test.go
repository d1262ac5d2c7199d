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
	if _, err := cli.Put(ctx, rendezvousPrefix("sizes")+"3", "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := Rendezvous(ctx, cli, Member{Group: "sizes", Size: 2, Rank: 0}); err == nil || !strings.Contains(err.Error(), "group size") {
		t.Fatalf("size mismatch: %v", err)
	}
}
