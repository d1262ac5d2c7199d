package coordinator

import (
	"errors"
	"testing"

	"github.com/tandemllm/tandem/blockhash"
	"github.com/tandemllm/tandem/cluster"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

func TestChoose(t *testing.T) {
	c := routeTestCoordinator(t, group("a", cluster.RoleUnified, 1, "m"), group("b", cluster.RoleUnified, 1, "m"), group("c", cluster.RoleUnified, 1, "m"))
	cand := func(name string, cached int, l load) candidate {
		return candidate{g: c.groups[name], cached: cached, load: l}
	}
	idle := load{freeBlocks: 100, totalBlocks: 100}
	busy := func(running, waiting, free int64) load {
		return load{running: running, waiting: waiting, freeBlocks: free, totalBlocks: 100, pendingTokens: 100 * (running + waiting)}
	}
	def := RoutingOptions{}
	def.defaults()
	tests := []struct {
		name string
		opts RoutingOptions
		role cluster.Role
		cs   []candidate
		n    int64
		want string
	}{
		{"no prefix anywhere: least loaded", def, cluster.RoleUnified, []candidate{cand("a", 0, busy(4, 0, 50)), cand("b", 0, busy(1, 0, 50))}, 100, "b"},
		{"the prefix holder, a little busier", def, cluster.RoleUnified, []candidate{cand("a", 0, busy(1, 0, 90)), cand("b", 96, busy(2, 0, 80))}, 100, "b"},
		{"load weight alone: prefix ignored", RoutingOptions{PrefixWeight: -1, LoadWeight: 1, MaxRequests: 256}, cluster.RoleUnified,
			[]candidate{cand("a", 0, busy(1, 0, 90)), cand("b", 96, busy(2, 0, 80))}, 100, "a"},
		{"much busier prefix holder loses", RoutingOptions{PrefixWeight: 1, LoadWeight: 3, MaxRequests: 256}, cluster.RoleUnified,
			[]candidate{cand("a", 0, busy(0, 0, 90)), cand("b", 64, busy(8, 0, 80))}, 100, "a"},
		{"longer prefix wins at equal load", def, cluster.RolePrefill, []candidate{cand("a", 32, idle), cand("b", 64, idle), cand("c", 16, idle)}, 100, "b"},
		{"group at its request limit skipped", RoutingOptions{PrefixWeight: 2, LoadWeight: 1, MaxRequests: 8}, cluster.RoleUnified,
			[]candidate{cand("a", 96, busy(4, 4, 50)), cand("b", 0, busy(4, 3, 50))}, 100, "b"},
		{"group without the blocks skipped", def, cluster.RoleDecode, []candidate{cand("a", 0, load{freeBlocks: 3, totalBlocks: 100}), cand("b", 0, load{freeBlocks: 8, totalBlocks: 100})}, 100, "b"},
		{"cached blocks need no room", def, cluster.RoleDecode, []candidate{cand("a", 96, load{freeBlocks: 2, totalBlocks: 100}), cand("b", 0, load{freeBlocks: 8, totalBlocks: 100})}, 100, "a"},
		{"all at their limit: still the best", RoutingOptions{PrefixWeight: 2, LoadWeight: 1, MaxRequests: 8}, cluster.RoleUnified,
			[]candidate{cand("a", 0, busy(1, 20, 50)), cand("b", 64, busy(1, 30, 50))}, 100, "b"},
		{"equal scores: the role's own order", def, cluster.RolePrefill, []candidate{cand("a", 0, busy(2, 0, 50)), cand("b", 0, busy(2, 0, 50)), cand("c", 0, load{running: 1, totalBlocks: 100, pendingTokens: 200})}, 100, "c"},
		{"decode: fuller cache is busier", def, cluster.RoleDecode, []candidate{cand("a", 0, load{freeBlocks: 30, totalBlocks: 100}), cand("b", 0, load{freeBlocks: 60, totalBlocks: 100})}, 100, "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.opts.choose(tt.cs, tt.n, tt.role); got.g.name != tt.want {
				t.Errorf("chose %s, want %s", got.g.name, tt.want)
			}
		})
	}
}

func TestRoutingDefaults(t *testing.T) {
	for _, c := range []struct{ in, want RoutingOptions }{
		{RoutingOptions{}, RoutingOptions{PrefixWeight: 2, LoadWeight: 1, MaxRequests: 256}},
		{RoutingOptions{PrefixWeight: -1, LoadWeight: 0.5, MaxRequests: -1}, RoutingOptions{PrefixWeight: 0, LoadWeight: 0.5, MaxRequests: -1}},
	} {
		got := c.in
		got.defaults()
		if got != c.want {
			t.Errorf("defaults of %+v = %+v, want %+v", c.in, got, c.want)
		}
	}
}

// TestPrefixIndex: a snapshot and the batches after it give a group's
// cached blocks; a batch out of sequence is a gap, and nothing is known
// of the group until the next snapshot; a prompt matches only its leading
// blocks, in the group's block size.
func TestPrefixIndex(t *testing.T) {
	c := routeTestCoordinator(t, group("a", cluster.RoleUnified, 1, "m"), group("b", cluster.RoleUnified, 1, "m"))
	a, b := c.groups["a"], c.groups["b"]
	x := newPrefixIndex()
	prompt := make([]int32, 70)
	for i := range prompt {
		prompt[i] = int32(i * 3)
	}
	chain := blockhash.Chain(nil, "m", prompt, 16) // 4 blocks
	u := func(hs ...blockhash.Hash) []uint64 {
		out := make([]uint64, len(hs))
		for i, h := range hs {
			out[i] = uint64(h)
		}
		return out
	}
	batch := func(seq uint64, snapshot bool, kind tandemv1.KVEventKind, hs ...blockhash.Hash) *tandemv1.KVEventsResponse {
		return &tandemv1.KVEventsResponse{Seq: seq, Snapshot: snapshot, BlockSize: 16,
			Events: []*tandemv1.KVEvent{{Kind: kind, BlockHashes: u(hs...)}}}
	}
	stored, removed := tandemv1.KVEventKind_KV_EVENT_KIND_STORED, tandemv1.KVEventKind_KV_EVENT_KIND_REMOVED
	cached := func(g *groupState) int { return x.cached(g, "m", prompt, map[int][]blockhash.Hash{}) }
	steps := []struct {
		name    string
		g       *groupState
		b       *tandemv1.KVEventsResponse
		gap     bool
		blocks  int
		cachedA int
	}{
		{"events before a snapshot", a, batch(3, false, stored, chain[0]), true, 0, 0},
		{"snapshot", a, batch(7, true, stored, chain[0], chain[1]), false, 2, 32},
		{"next batch", a, batch(8, false, stored, chain[2], 99), false, 4, 48},
		{"a hole in the chain stops the match", a, batch(9, false, removed, chain[1]), false, 3, 16},
		{"gap", a, batch(11, false, stored, chain[1]), true, 3, 0},
		{"still unsynced", a, batch(12, false, stored, chain[3]), true, 3, 0},
		{"resync", a, batch(12, true, stored, chain[0], chain[1], chain[2], chain[3]), false, 4, 64},
		{"other group independent", b, batch(1, true, stored, chain[0]), false, 1, 64},
	}
	for _, s := range steps {
		n, err := x.apply(s.g, s.b)
		if errors.Is(err, errKVGap) != s.gap || (err != nil && !s.gap) {
			t.Fatalf("%s: err %v, gap %v", s.name, err, s.gap)
		}
		if n != s.blocks {
			t.Errorf("%s: %d blocks known, want %d", s.name, n, s.blocks)
		}
		if got := cached(a); got != s.cachedA {
			t.Errorf("%s: group a holds %d prompt tokens, want %d", s.name, got, s.cachedA)
		}
	}
	// Another block size hashes the prompt otherwise: nothing matches.
	if _, err := x.apply(b, &tandemv1.KVEventsResponse{Seq: 2, Snapshot: true, BlockSize: 8,
		Events: []*tandemv1.KVEvent{{Kind: stored, BlockHashes: u(chain...)}}}); err != nil {
		t.Fatal(err)
	}
	if got := cached(b); got != 0 {
		t.Errorf("hashes of 16-token blocks matched as 8-token blocks: %d", got)
	}
	x.forget(a)
	if got := cached(a); got != 0 {
		t.Errorf("a forgotten group holds %d tokens", got)
	}
}
