package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/tandemllm/tandem/compute"
)

// attnTol bounds the error of attention outputs relative to the largest
// |v| (outputs are convex combinations of values).
const attnTol = 2e-5

type attnCase struct {
	heads, kvHeads, hd, bs int
	seqs                   []struct{ pos, qlen int }
}

func TestAttention(t *testing.T) {
	mixed := []struct{ pos, qlen int }{{0, 7}, {37, 1}, {16, 20}, {3, 1}, {0, 1}}
	cases := []attnCase{
		{4, 4, 8, 4, mixed},
		{4, 2, 64, 16, mixed},
		{8, 2, 20, 5, mixed},
		{6, 1, 16, 1, mixed},
		{12, 12, 64, 16, []struct{ pos, qlen int }{{300, 1}}},
		{4, 1, 128, 16, []struct{ pos, qlen int }{{40, 70}}},
	}
	eachBackend(t, func(t *testing.T, b *Backend) {
		for _, c := range cases {
			t.Run(fmt.Sprintf("h%d_kv%d_d%d_bs%d", c.heads, c.kvHeads, c.hd, c.bs), func(t *testing.T) {
				runAttnCase(t, b, c)
			})
		}
	})
}

func runAttnCase(t *testing.T, b *Backend, c attnCase) {
	r := rand.New(rand.NewPCG(11, uint64(c.heads*1000+c.hd)))
	kvw, qw := c.kvHeads*c.hd, c.heads*c.hd
	total := 0
	for _, s := range c.seqs {
		total += (s.pos + s.qlen + c.bs - 1) / c.bs
	}
	// Blocks are handed out in a shuffled order, so tables are not contiguous.
	numBlocks := total + 3
	perm := r.Perm(numBlocks)
	spec := compute.KVSpec{Layers: 2, NumBlocks: numBlocks, BlockSize: c.bs, KVHeads: c.kvHeads, HeadDim: c.hd}
	cache, err := b.NewKVCache(spec)
	if err != nil {
		t.Fatal(err)
	}
	const layer = 1
	var seqs []compute.AttnSeq
	var keys, vals [][]float32 // per sequence, positions × kvw
	var q []float32
	var slots []int32
	var qk, qv []float32
	next := 0
	for _, s := range c.seqs {
		n := s.pos + s.qlen
		as := compute.AttnSeq{QRow: len(q) / qw, QLen: s.qlen, Pos: s.pos}
		for range (n + c.bs - 1) / c.bs {
			as.Blocks = append(as.Blocks, int32(perm[next]))
			next++
		}
		k, v := randVec(r, n*kvw), randVec(r, n*kvw)
		for i := range k {
			k[i] *= 2 // sharpen the softmax
		}
		slotOf := func(p int) int32 { return as.Blocks[p/c.bs]*int32(c.bs) + int32(p%c.bs) }
		// The cached prefix is written first, the query rows' own keys in
		// the batched call below, as the engine does.
		var pre []int32
		for p := range s.pos {
			pre = append(pre, slotOf(p))
		}
		if len(pre) > 0 {
			b.KVWrite(cache, layer, bufOf(b, k[:s.pos*kvw]), bufOf(b, v[:s.pos*kvw]), pre)
		}
		for p := s.pos; p < n; p++ {
			slots = append(slots, slotOf(p))
		}
		qk, qv = append(qk, k[s.pos*kvw:]...), append(qv, v[s.pos*kvw:]...)
		q = append(q, randVec(r, s.qlen*qw)...)
		seqs, keys, vals = append(seqs, as), append(keys, k), append(vals, v)
	}
	b.KVWrite(cache, layer, bufOf(b, qk), bufOf(b, qv), slots)
	// Garbage in layer 0 must not leak into layer 1.
	b.KVWrite(cache, 0, bufOf(b, randVec(r, len(qk))), bufOf(b, randVec(r, len(qv))), slots)
	scale := float32(1 / math.Sqrt(float64(c.hd)))
	dst := bufOf(b, randVec(r, len(q)))
	b.Attention(dst, bufOf(b, q), cache, layer, seqs, compute.AttnSpec{Heads: c.heads, KVHeads: c.kvHeads, HeadDim: c.hd, Scale: scale})
	got := readAll(b, dst)
	for si, s := range seqs {
		for i := range s.QLen {
			row := s.QRow + i
			for h := range c.heads {
				want := refAttention(q[row*qw+h*c.hd:][:c.hd], keys[si], vals[si], s.Pos+i+1, (h/(c.heads/c.kvHeads))*c.hd, kvw, float64(scale))
				for d, w := range want {
					if g := got[row*qw+h*c.hd+d]; math.Abs(float64(g)-w) > attnTol*4 {
						t.Fatalf("seq %d row %d head %d [%d] = %v, want %v", si, i, h, d, g, w)
					}
				}
			}
		}
	}
}

// refAttention is softmax(q·kᵀ·scale)·v over positions [0, n) in float64.
func refAttention(q, keys, vals []float32, n, off, kvw int, scale float64) []float64 {
	sc := make([]float64, n)
	mx := math.Inf(-1)
	for p := range n {
		var s float64
		for d, qv := range q {
			s += float64(qv) * float64(keys[p*kvw+off+d])
		}
		sc[p] = s * scale
		mx = max(mx, sc[p])
	}
	out := make([]float64, len(q))
	var sum float64
	for p := range n {
		e := math.Exp(sc[p] - mx)
		sum += e
		for d := range out {
			out[d] += e * float64(vals[p*kvw+off+d])
		}
	}
	for d := range out {
		out[d] /= sum
	}
	return out
}
