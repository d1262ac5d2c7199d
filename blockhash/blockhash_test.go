package blockhash

import (
	"slices"
	"testing"
)

func tokens(n, seed int) []int32 {
	t := make([]int32, n)
	for i := range t {
		t[i] = int32((i*31 + seed*977) % 50257)
	}
	return t
}

func TestChain(t *testing.T) {
	a := tokens(40, 1)
	b := slices.Clone(a)
	b[37] = 7 // differs in the third block of 16, which is partial
	c := slices.Clone(a)
	c[20] = 7 // differs in the second block

	ha := Chain(nil, "m", a, 16)
	if len(ha) != 2 {
		t.Fatalf("%d hashes for 40 tokens in blocks of 16, want 2", len(ha))
	}
	cases := []struct {
		name string
		got  []Hash
		same int // leading hashes equal to ha's
	}{
		{"same tokens", Chain(nil, "m", a, 16), 2},
		{"partial block differs", Chain(nil, "m", b, 16), 2},
		{"second block differs", Chain(nil, "m", c, 16), 1},
		{"other model", Chain(nil, "other", a, 16), 0},
		{"other block size", Chain(nil, "m", a, 8)[:2], 0},
		{"extended in two calls", Chain(Chain(nil, "m", a[:20], 16), "m", a, 16), 2},
	}
	for _, c := range cases {
		n := 0
		for n < min(len(c.got), len(ha)) && c.got[n] == ha[n] {
			n++
		}
		if n != c.same {
			t.Errorf("%s: %d leading hashes equal, want %d", c.name, n, c.same)
		}
	}
	// A hash depends on its whole prefix: the second block of c equals
	// a's, yet its hash differs because its parent's does.
	d := slices.Clone(a)
	d[3] = 9
	if Chain(nil, "m", d, 16)[1] == ha[1] {
		t.Error("a block's hash does not depend on its parent")
	}
	if got := Chain(nil, "m", a[:15], 16); len(got) != 0 {
		t.Errorf("a partial block got a hash: %v", got)
	}
}

// A fixed value: the coordinator and every worker must agree on the
// function, across builds and machines.
func TestStable(t *testing.T) {
	got := Chain(nil, "tiny", []int32{1, 2, 3, 4}, 2)
	again := []Hash{Next(Root("tiny"), []int32{1, 2}), 0}
	again[1] = Next(again[0], []int32{3, 4})
	if !slices.Equal(got, again) {
		t.Fatalf("Chain %v, Next by hand %v", got, again)
	}
	// Pinned: a change here changes every published hash, so workers
	// and coordinators of different builds would stop agreeing.
	if want := []Hash{0x598008cfe05901cf, 0xea90e3a95710524c}; !slices.Equal(got, want) {
		t.Fatalf("Chain = %#x, want %#x", got, want)
	}
}
