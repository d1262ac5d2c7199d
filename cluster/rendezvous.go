package cluster

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrIncomplete is wrapped when a group does not form before the deadline.
var ErrIncomplete = errors.New("cluster: group incomplete")

// KeyPrefix roots every key Tandem writes in etcd.
const KeyPrefix = "/tandem/"

// Member is one rank's entry in a group rendezvous.
type Member struct {
	// Group names the group; Size is its rank count; Rank is this rank.
	Group      string
	Size, Rank int
	// Incarnation counts the group's (re)starts: its supervisor raises it
	// each time it starts the group's ranks anew, and ranks meet only
	// ranks of their own incarnation, so a restarted group never reads
	// the addresses its dead predecessor published.
	Incarnation int
	// Value is what the other ranks need: rank 0's NCCL unique id, or
	// this rank's collective listen address.
	Value string
	// Lease, if not zero, ties the entry to a lease so it disappears with
	// the process.
	Lease clientv3.LeaseID
}

func rendezvousPrefix(group string) string {
	return path.Join(KeyPrefix, "rendezvous", group) + "/"
}

// incarnationPrefix holds the entries of one incarnation of a group:
// rendezvousPrefix(group) + "<incarnation>/".
func incarnationPrefix(group string, incarnation int) string {
	return rendezvousPrefix(group) + strconv.Itoa(incarnation) + "/"
}

// Rendezvous publishes m and waits until all m.Size ranks of the group
// have published, returning their values in rank order. When ctx ends
// first, the error names the ranks that never arrived.
func Rendezvous(ctx context.Context, cli *clientv3.Client, m Member) ([]string, error) {
	if m.Size < 1 || m.Rank < 0 || m.Rank >= m.Size {
		return nil, fmt.Errorf("cluster: rank %d of a group of %d", m.Rank, m.Size)
	}
	if m.Group == "" || strings.Contains(m.Group, "/") {
		return nil, fmt.Errorf("cluster: invalid group name %q", m.Group)
	}
	if m.Incarnation < 0 {
		return nil, fmt.Errorf("cluster: negative incarnation %d of group %s", m.Incarnation, m.Group)
	}
	prefix := incarnationPrefix(m.Group, m.Incarnation)
	var opts []clientv3.OpOption
	if m.Lease != 0 {
		opts = append(opts, clientv3.WithLease(m.Lease))
	}
	if _, err := cli.Put(ctx, prefix+strconv.Itoa(m.Rank), m.Value, opts...); err != nil {
		return nil, fmt.Errorf("cluster: publishing rank %d of %s: %w", m.Rank, m.Group, err)
	}
	values := make([]string, m.Size)
	have := make([]bool, m.Size)
	record := func(key, val []byte) error {
		r, err := rendezvousRank(key, prefix, m.Size)
		if err != nil {
			return fmt.Errorf("cluster: group %s: %w", m.Group, err)
		}
		values[r], have[r] = string(val), true
		return nil
	}
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("cluster: reading group %s: %w", m.Group, err)
	}
	for _, kv := range resp.Kvs {
		if err := record(kv.Key, kv.Value); err != nil {
			return nil, err
		}
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watch := cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	for !allTrue(have) {
		select {
		case wr, ok := <-watch:
			if !ok || wr.Err() != nil {
				if ctx.Err() != nil {
					return nil, missing(m, have, ctx.Err())
				}
				return nil, fmt.Errorf("cluster: watching group %s: %v", m.Group, wr.Err())
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypePut {
					if err := record(ev.Kv.Key, ev.Kv.Value); err != nil {
						return nil, err
					}
				}
			}
		case <-ctx.Done():
			return nil, missing(m, have, ctx.Err())
		}
	}
	return values, nil
}

// rendezvousRank parses the rank of a rendezvous key read back from etcd
// under prefix, for a group of size ranks.
func rendezvousRank(key []byte, prefix string, size int) (int, error) {
	rest, ok := strings.CutPrefix(string(key), prefix)
	r, err := strconv.Atoi(rest)
	if !ok || err != nil || r < 0 || r >= size || strconv.Itoa(r) != rest {
		return 0, fmt.Errorf("rank key %q outside a group of %d (ranks disagree on the group size?)", key, size)
	}
	return r, nil
}

func allTrue(b []bool) bool { return !slices.Contains(b, false) }

func missing(m Member, have []bool, cause error) error {
	var ranks []string
	for r, ok := range have {
		if !ok {
			ranks = append(ranks, strconv.Itoa(r))
		}
	}
	return fmt.Errorf("%w: group %s has %d of %d ranks; missing rank(s) %s: %w",
		ErrIncomplete, m.Group, m.Size-len(ranks), m.Size, strings.Join(ranks, ", "), cause)
}

// Forget removes what a group's past incarnations left in etcd: its
// ranks' registrations, whose leases it revokes (so whatever else hangs on
// them goes too), and every rendezvous entry. A supervisor calls it once
// every rank of an incarnation has exited and before it starts the next,
// so the new ranks neither wait for a dead rank's lease to expire before
// they can register nor leave the old entries behind.
func Forget(ctx context.Context, cli *clientv3.Client, group string) error {
	if group == "" || strings.Contains(group, "/") {
		return fmt.Errorf("cluster: invalid group name %q", group)
	}
	prefix := membersPrefix + group + "/"
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("cluster: reading group %s: %w", group, err)
	}
	leases := map[clientv3.LeaseID]bool{}
	for _, kv := range resp.Kvs {
		if id := clientv3.LeaseID(kv.Lease); id != 0 && !leases[id] {
			leases[id] = true
			if _, err := cli.Revoke(ctx, id); err != nil && !leaseGone(err) {
				return fmt.Errorf("cluster: revoking the lease of a rank of %s: %w", group, err)
			}
		}
	}
	for _, p := range []string{prefix, rendezvousPrefix(group)} {
		if _, err := cli.Delete(ctx, p, clientv3.WithPrefix()); err != nil {
			return fmt.Errorf("cluster: deleting %s: %w", p, err)
		}
	}
	return nil
}
