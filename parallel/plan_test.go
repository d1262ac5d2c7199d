package parallel

import (
	"errors"
	"fmt"
	"testing"
)

func TestPlanCoversEveryHeadAndRow(t *testing.T) {
	geoms := []Geometry{
		{Heads: 8, KVHeads: 8, HeadDim: 16, Intermediate: 384, Vocab: 50257},    // tiny
		{Heads: 8, KVHeads: 2, HeadDim: 16, Intermediate: 384, Vocab: 50257},    // gqa-tiny
		{Heads: 32, KVHeads: 8, HeadDim: 64, Intermediate: 8192, Vocab: 128256}, // llama-1b
		{Heads: 12, KVHeads: 12, HeadDim: 64, Intermediate: 3070, Vocab: 50257}, // uneven MLP
	}
	for _, g := range geoms {
		for _, tp := range []int{1, 2, 4, 8} {
			if g.Heads%tp != 0 {
				continue
			}
			t.Run(fmt.Sprintf("%d-%d/tp%d", g.Heads, g.KVHeads, tp), func(t *testing.T) {
				q := make([]int, g.Heads)
				kv := make([]int, g.KVHeads)
				inter := make([]int, g.Intermediate)
				vocab := make([]int, g.Vocab)
				for r := range tp {
					p, err := New(g, tp, r)
					if err != nil {
						t.Fatal(err)
					}
					mark(q, p.QHeads())
					mark(kv, p.KVHeads())
					mark(inter, p.Intermediate())
					mark(vocab, p.Vocab())
					if p.Vocab().Len() > p.VocabShard() {
						t.Fatalf("rank %d: vocab range %v longer than the shard %d", r, p.Vocab(), p.VocabShard())
					}
					// Every query head's KV head is on the same rank.
					group := g.Heads / g.KVHeads
					for h := p.QHeads().From; h < p.QHeads().To; h++ {
						if k := h / group; k < p.KVHeads().From || k >= p.KVHeads().To {
							t.Fatalf("rank %d: query head %d needs KV head %d, rank holds %v", r, h, k, p.KVHeads())
						}
					}
				}
				expectCount(t, "query heads", q, 1)
				expectCount(t, "KV heads", kv, max(1, tp/g.KVHeads))
				expectCount(t, "intermediate", inter, 1)
				expectCount(t, "vocabulary", vocab, 1)
			})
		}
	}
}

func mark(counts []int, r Range) {
	for i := r.From; i < r.To; i++ {
		counts[i]++
	}
}

func expectCount(t *testing.T, what string, counts []int, want int) {
	t.Helper()
	for i, c := range counts {
		if c != want {
			t.Fatalf("%s %d held by %d ranks, want %d", what, i, c, want)
		}
	}
}

func TestNewRejects(t *testing.T) {
	g := Geometry{Heads: 12, KVHeads: 4, HeadDim: 64, Intermediate: 100, Vocab: 1000}
	tests := []struct {
		tp, rank int
		indiv    bool
	}{
		{0, 0, false}, {2, 2, false}, {2, -1, false},
		{8, 0, true}, // 12 heads over 8
		{3, 0, true}, // 4 KV heads over 3, and 3 not a multiple of 4
		{6, 0, true}, // 6 is not a multiple of 4 KV heads
	}
	for _, tt := range tests {
		_, err := New(g, tt.tp, tt.rank)
		if err == nil {
			t.Errorf("New(tp=%d, rank=%d) succeeded", tt.tp, tt.rank)
			continue
		}
		if errors.Is(err, ErrIndivisible) != tt.indiv {
			t.Errorf("New(tp=%d, rank=%d) = %v; ErrIndivisible %v", tt.tp, tt.rank, err, tt.indiv)
		}
	}
}

func TestKVTransfers(t *testing.T) {
	for _, kv := range []int{8, 2, 1} {
		for _, pd := range [][2]int{{1, 1}, {2, 2}, {2, 4}, {1, 8}, {4, 1}, {8, 2}, {2, 8}, {8, 8}, {4, 2}} {
			p, d := pd[0], pd[1]
			t.Run(fmt.Sprintf("kv%d/%d-to-%d", kv, p, d), func(t *testing.T) {
				ts, err := KVTransfers(kv, p, d)
				if err != nil {
					t.Fatal(err)
				}
				got := make([][]int, d)
				for i := range got {
					got[i] = make([]int, kv)
				}
				sources := map[int]bool{}
				for _, tr := range ts {
					have := kvHeads(kv, p, tr.From)
					if tr.Heads.From < have.From || tr.Heads.To > have.To || tr.Heads.Len() <= 0 {
						t.Fatalf("%+v: prefill rank %d holds %v", tr, tr.From, have)
					}
					mark(got[tr.To], tr.Heads)
					sources[tr.From] = true
				}
				for r := range d {
					want := kvHeads(kv, d, r)
					for h := range kv {
						n := 0
						if h >= want.From && h < want.To {
							n = 1
						}
						if got[r][h] != n {
							t.Fatalf("decode rank %d receives head %d %d times, want %d", r, h, got[r][h], n)
						}
					}
				}
				// Replicated heads are sent by several prefill ranks when
				// several decode ranks need them.
				if p > kv && d >= p && len(sources) != p {
					t.Errorf("only prefill ranks %v send, want all %d to share the load", sources, p)
				}
			})
		}
	}
}
