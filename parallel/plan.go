package parallel

import (
	"errors"
	"fmt"
)

// ErrIndivisible is wrapped when a model cannot be split over a TP degree.
var ErrIndivisible = errors.New("parallel: model does not split over this TP degree")

// Geometry is the part of a model's shape that sharding depends on.
type Geometry struct {
	Heads, KVHeads, HeadDim int
	Intermediate            int
	Vocab                   int
}

// Range is the half-open index range [From, To).
type Range struct{ From, To int }

// Len is the number of indices in r.
func (r Range) Len() int { return r.To - r.From }

// Scale multiplies both ends by k (heads to elements, say).
func (r Range) Scale(k int) Range { return Range{r.From * k, r.To * k} }

// Plan is one rank's share of a model under TP degree TP:
//   - query heads, and with them the rows of q_proj and the columns of
//     o_proj (column- and row-parallel);
//   - KV heads: split when TP divides them, otherwise each KV head is
//     replicated on TP/KVHeads consecutive ranks (grouped-query attention
//     keeps every query head next to its KV head);
//   - MLP intermediate columns (gate/up rows, down_proj columns);
//   - vocabulary rows of the LM head, padded to equal shares so logits
//     can be all-gathered.
type Plan struct {
	TP, Rank int
	g        Geometry
}

// New checks that g splits over tp ranks and returns rank's plan.
func New(g Geometry, tp, rank int) (*Plan, error) {
	switch {
	case tp < 1:
		return nil, fmt.Errorf("parallel: TP degree %d must be >= 1", tp)
	case rank < 0 || rank >= tp:
		return nil, fmt.Errorf("parallel: rank %d outside 0..%d", rank, tp-1)
	case g.Heads%tp != 0:
		return nil, fmt.Errorf("%w: %d attention heads over TP %d", ErrIndivisible, g.Heads, tp)
	case g.KVHeads >= tp && g.KVHeads%tp != 0:
		return nil, fmt.Errorf("%w: %d KV heads over TP %d", ErrIndivisible, g.KVHeads, tp)
	case g.KVHeads < tp && tp%g.KVHeads != 0:
		return nil, fmt.Errorf("%w: TP %d is not a multiple of the %d KV heads to replicate", ErrIndivisible, tp, g.KVHeads)
	case g.Intermediate < tp || g.Vocab < tp:
		return nil, fmt.Errorf("%w: intermediate size %d or vocabulary %d smaller than TP %d", ErrIndivisible, g.Intermediate, g.Vocab, tp)
	}
	return &Plan{TP: tp, Rank: rank, g: g}, nil
}

// QHeads are the query heads of this rank.
func (p *Plan) QHeads() Range {
	n := p.g.Heads / p.TP
	return Range{p.Rank * n, (p.Rank + 1) * n}
}

// KVHeads are the KV heads this rank holds.
func (p *Plan) KVHeads() Range { return kvHeads(p.g.KVHeads, p.TP, p.Rank) }

func kvHeads(kv, tp, rank int) Range {
	if kv >= tp {
		n := kv / tp
		return Range{rank * n, (rank + 1) * n}
	}
	h := rank / (tp / kv)
	return Range{h, h + 1}
}

// KVReplicas is how many ranks hold each KV head (1 unless TP > KVHeads).
func (p *Plan) KVReplicas() int { return max(1, p.TP/p.g.KVHeads) }

// Intermediate is this rank's share of the MLP's intermediate features.
func (p *Plan) Intermediate() Range { return balanced(p.g.Intermediate, p.TP, p.Rank) }

// VocabShard is the padded number of vocabulary rows per rank.
func (p *Plan) VocabShard() int { return (p.g.Vocab + p.TP - 1) / p.TP }

// Vocab is this rank's vocabulary rows (the last rank's may be short).
func (p *Plan) Vocab() Range {
	n := p.VocabShard()
	return Range{min(p.Rank*n, p.g.Vocab), min((p.Rank+1)*n, p.g.Vocab)}
}

// balanced splits n items over k parts, the first n%k parts one larger.
func balanced(n, k, i int) Range {
	q, r := n/k, n%k
	from := i*q + min(i, r)
	size := q
	if i < r {
		size++
	}
	return Range{from, from + size}
}

// Transfer is one piece of a request's KV cache moving from a prefill
// rank to a decode rank: the KV heads both hold.
type Transfer struct {
	From, To int // prefill rank, decode rank
	Heads    Range
}

// KVTransfers maps the KV heads of a prefill group of TP p onto a decode
// group of TP d: every decode rank receives each of its heads exactly
// once. When a head is replicated on several prefill ranks, the decode
// ranks needing it are spread over those replicas.
func KVTransfers(kv, p, d int) ([]Transfer, error) {
	g := Geometry{Heads: max(p, d) * kv, KVHeads: kv, Intermediate: max(p, d), Vocab: max(p, d)}
	for _, tp := range []int{p, d} {
		if _, err := New(g, tp, 0); err != nil {
			return nil, err
		}
	}
	var out []Transfer
	for to := range d {
		want := kvHeads(kv, d, to)
		for h := want.From; h < want.To; {
			// Prefill ranks holding head h; pick one by the decode rank.
			holders := holdersOf(kv, p, h)
			from := holders.From + to%holders.Len()
			have := kvHeads(kv, p, from)
			end := min(want.To, have.To)
			out = append(out, Transfer{From: from, To: to, Heads: Range{h, end}})
			h = end
		}
	}
	return out, nil
}

// holdersOf is the range of ranks of a TP-tp group holding KV head h.
func holdersOf(kv, tp, h int) Range {
	if kv >= tp {
		r := h / (kv / tp)
		return Range{r, r + 1}
	}
	n := tp / kv
	return Range{h * n, (h + 1) * n}
}
