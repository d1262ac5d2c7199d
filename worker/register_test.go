package worker

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemllm/tandem/cluster"
)

// A rank restarted while its dead predecessor's entry still has a lease
// registers once that lease expires; a rank held by a live process is
// refused after a lease TTL.
func TestRegisterWaitsOutADeadPredecessor(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	etcd, err := cluster.StartEmbedded(ctx, t.TempDir(), cluster.EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	dial := func() *clientv3.Client {
		cli, err := clientv3.New(clientv3.Config{Endpoints: etcd.Endpoints(), DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		return cli
	}
	r := cluster.Registration{Role: cluster.RoleDecode, Group: "g", TP: 1, Addr: "127.0.0.1:1", Model: "m", KVBlockSize: 16}
	const ttl = time.Second
	for _, tc := range []struct {
		name string
		dies bool
	}{{"dead predecessor", true}, {"live holder", false}} {
		t.Run(tc.name, func(t *testing.T) {
			holder := dial()
			if _, err := cluster.Register(ctx, holder, r, ttl); err != nil {
				t.Fatal(err)
			}
			if tc.dies {
				holder.Close() // its keepalive stops; the lease runs out
			}
			reg, err := register(ctx, dial(), r, ttl)
			switch {
			case tc.dies && err != nil:
				t.Fatalf("register after the holder died: %v", err)
			case !tc.dies && !errors.Is(err, cluster.ErrRankTaken):
				t.Fatalf("register over a live holder: %v, want ErrRankTaken", err)
			}
			if reg != nil {
				if err := reg.Close(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if !tc.dies {
				if err := cluster.Forget(ctx, holder, "g"); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
