package cluster

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestCheckPrefix(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		ok     bool
	}{
		{"", true},
		{"/serving/tandem-a", true},
		{"/a", true},
		{"serving/tandem", false},
		{"/serving/tandem/", false},
		{"/", false},
		{"/a b", false},
		{"/a\nb", false},
	} {
		err := CheckPrefix(tc.prefix)
		if (err == nil) != tc.ok || err != nil && !errors.Is(err, ErrBadPrefix) {
			t.Errorf("CheckPrefix(%q) = %v; want ok %v", tc.prefix, err, tc.ok)
		}
	}
}

// Two clusters (two Helm releases) sharing one etcd under different
// prefixes: the same group and rank register in both, each membership
// sees only its own, and the keys lie under each prefix. Without the
// prefixes the second registration is refused (ErrRankTaken).
func TestNamespacesShareOneEtcd(t *testing.T) {
	raw := startEtcd(t)
	dial := func(prefix string) *clientv3.Client {
		t.Helper()
		cli, err := Dial(raw.Endpoints())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		if err := Namespace(cli, prefix); err != nil {
			t.Fatal(err)
		}
		return cli
	}
	a, b := dial("/serving/tandem-a"), dial("/serving/tandem-b")
	ra, rb := reg("g", 0, 1), reg("g", 0, 1)
	ra.Addr, rb.Addr = "10.0.0.1:7000", "10.0.0.2:7000"
	register(t, a, ra, 0)
	register(t, b, rb, 0)

	for _, c := range []struct {
		cli  *clientv3.Client
		addr string
	}{{a, ra.Addr}, {b, rb.Addr}} {
		m := watch(t, c.cli)
		waitFor(t, m, "group g ready", func(g map[string]Group) bool { return g["g"].Ready() })
		if got := m.Groups(); len(got) != 1 || got[0].Ranks[0].Addr != c.addr {
			t.Errorf("membership sees %+v; want only its own rank at %s", got, c.addr)
		}
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	resp, err := raw.Get(ctx, "/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	want := []string{"/serving/tandem-a" + memberKey("g", 0), "/serving/tandem-b" + memberKey("g", 0)}
	if !slices.Equal(keys, want) {
		t.Errorf("keys in etcd %v; want %v", keys, want)
	}

	// The same rank without a prefix is taken by neither release's entry,
	// but a second registration of it there is refused: the prefixes are
	// what kept the two apart.
	register(t, raw, reg("g", 0, 1), 0)
	if _, err := Register(ctx, raw, reg("g", 0, 1), 0); !errors.Is(err, ErrRankTaken) {
		t.Fatalf("a second registration of g/0 under one prefix: %v; want ErrRankTaken", err)
	}
}
