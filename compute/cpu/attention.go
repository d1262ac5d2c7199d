package cpu

import (
	"fmt"
	"math"

	"github.com/tandemllm/tandem/compute"
)

// kvCache stores keys and values as [layer][block][kvHead][slot][headDim]
// float32, so one head's keys of one block are a contiguous matrix.
type kvCache struct {
	spec        compute.KVSpec
	k, v        []float32
	headStride  int // BlockSize·HeadDim
	blockStride int // KVHeads·headStride
	layerStride int // NumBlocks·blockStride
}

func (c *kvCache) Layers() int    { return c.spec.Layers }
func (c *kvCache) NumBlocks() int { return c.spec.NumBlocks }
func (c *kvCache) BlockSize() int { return c.spec.BlockSize }
func (c *kvCache) KVHeads() int   { return c.spec.KVHeads }
func (c *kvCache) HeadDim() int   { return c.spec.HeadDim }

// NewKVCache allocates a zeroed float32 cache.
func (b *Backend) NewKVCache(s compute.KVSpec) (compute.KVCache, error) {
	if s.Layers <= 0 || s.NumBlocks <= 0 || s.BlockSize <= 0 || s.KVHeads <= 0 || s.HeadDim <= 0 {
		return nil, fmt.Errorf("cpu: invalid KV cache spec %+v", s)
	}
	c := &kvCache{spec: s, headStride: s.BlockSize * s.HeadDim}
	c.blockStride = s.KVHeads * c.headStride
	c.layerStride = s.NumBlocks * c.blockStride
	n := s.Layers * c.layerStride
	if n/s.Layers != c.layerStride {
		return nil, fmt.Errorf("cpu: KV cache spec %+v overflows", s)
	}
	c.k, c.v = make([]float32, n), make([]float32, n)
	return c, nil
}

func kvOf(c compute.KVCache) *kvCache {
	kc, ok := c.(*kvCache)
	if !ok {
		panic(fmt.Sprintf("cpu: KV cache of type %T does not belong to a CPU backend", c))
	}
	return kc
}

// KVWrite stores m rows of keys and values of one layer at slots.
func (b *Backend) KVWrite(c compute.KVCache, layer int, k, v compute.Buf, slots []int32) {
	kc := kvOf(c)
	s := kc.spec
	ks, vs := data(k), data(v)
	w := s.KVHeads * s.HeadDim
	base := layer * kc.layerStride
	for i, slot := range slots {
		if slot < 0 || int(slot) >= s.NumBlocks*s.BlockSize {
			panic(fmt.Sprintf("cpu: KVWrite slot %d out of range [0, %d)", slot, s.NumBlocks*s.BlockSize))
		}
		off := base + int(slot)/s.BlockSize*kc.blockStride + int(slot)%s.BlockSize*s.HeadDim
		for h := range s.KVHeads {
			copy(kc.k[off+h*kc.headStride:][:s.HeadDim], ks[i*w+h*s.HeadDim:])
			copy(kc.v[off+h*kc.headStride:][:s.HeadDim], vs[i*w+h*s.HeadDim:])
		}
	}
}

// workerScratch is per-worker memory, grown on first use and then reused.
type workerScratch struct {
	rope   []float32
	scores []float32
	acc    []float32
	ml     []float32
}

// grow makes *s at least n long and returns its first n values.
func grow(s *[]float32, n int) []float32 {
	if len(*s) < n {
		*s = make([]float32, n)
	}
	return (*s)[:n]
}

// attnTask runs one tile of query rows against one KV head per chunk. With
// grouped-query attention (group > 1) a tile is up to maxM query heads of
// the same group at one position, so each key and value is loaded once for
// all of them; otherwise a tile is up to maxM consecutive positions of one
// head.
type attnTask struct {
	k       *kernels
	dst, q  []float32
	c       *kvCache
	layer   int
	seqs    []compute.AttnSeq
	spec    compute.AttnSpec
	group   int   // query heads per KV head
	tiles   int   // tiles per query row (group > 1) or per head (group == 1)
	firstCh []int // first chunk of each sequence (len(seqs)+1)
	scratch []workerScratch
}

// Attention runs causal paged attention of each sequence's query rows.
func (b *Backend) Attention(dst, q compute.Buf, c compute.KVCache, layer int, seqs []compute.AttnSeq, spec compute.AttnSpec) {
	kc := kvOf(c)
	if spec.HeadDim != kc.spec.HeadDim || spec.KVHeads != kc.spec.KVHeads || spec.KVHeads <= 0 || spec.Heads%spec.KVHeads != 0 {
		panic(fmt.Sprintf("cpu: Attention spec %+v does not fit cache %+v", spec, kc.spec))
	}
	t := &b.attn
	*t = attnTask{k: b.k, dst: data(dst), q: data(q), c: kc, layer: layer, seqs: seqs, spec: spec,
		group: spec.Heads / spec.KVHeads, scratch: b.scratch, firstCh: t.firstCh[:0]}
	t.tiles = (t.group + b.k.maxM - 1) / b.k.maxM
	chunks := 0
	for _, s := range seqs {
		if s.Pos+s.QLen > len(s.Blocks)*kc.spec.BlockSize {
			panic(fmt.Sprintf("cpu: Attention over positions [0, %d) with %d blocks of %d",
				s.Pos+s.QLen, len(s.Blocks), kc.spec.BlockSize))
		}
		t.firstCh = append(t.firstCh, chunks)
		if t.group > 1 {
			chunks += spec.KVHeads * s.QLen * t.tiles
		} else {
			chunks += spec.KVHeads * ((s.QLen + b.k.maxM - 1) / b.k.maxM)
		}
	}
	t.firstCh = append(t.firstCh, chunks)
	b.pool.run(t, chunks)
	t.dst, t.q, t.seqs = nil, nil, nil
}

func (t *attnTask) run(c, w int) {
	si := 0
	for t.firstCh[si+1] <= c {
		si++
	}
	s := t.seqs[si]
	c -= t.firstCh[si]
	kvh := c % t.spec.KVHeads
	c /= t.spec.KVHeads
	hd, qw, maxM := t.spec.HeadDim, t.spec.Heads*t.spec.HeadDim, t.k.maxM
	if t.group > 1 {
		// Tile c%tiles of the group's heads, at query row c/tiles.
		row, j0 := c/t.tiles, c%t.tiles*maxM
		j1 := min(j0+maxM, t.group)
		off := (s.QRow+row)*qw + (kvh*t.group+j0)*hd
		t.tile(&t.scratch[w], s, kvh, off, hd, j1-j0, s.Pos+row, 0)
		return
	}
	r0 := c * maxM
	r1 := min(r0+maxM, s.QLen)
	t.tile(&t.scratch[w], s, kvh, (s.QRow+r0)*qw+kvh*hd, qw, r1-r0, s.Pos+r0, 1)
}

// tile computes mb query vectors at q[off+i*ldx:][:HeadDim] (i < mb), at
// positions pos0+i*posStep, against KV head kvh, writing dst at the same
// offsets. It goes block by block with an online softmax: per row a
// running maximum mx, a running sum l of exp(score-mx), and the
// accumulator of exp(score-mx)·v.
func (t *attnTask) tile(ws *workerScratch, s compute.AttnSeq, kvh, off, ldx, mb, pos0, posStep int) {
	hd, bs := t.spec.HeadDim, t.c.spec.BlockSize
	scores := grow(&ws.scores, mb*bs)
	acc := grow(&ws.acc, mb*hd)
	ml := grow(&ws.ml, 2*mb)
	mx, l := ml[:mb], ml[mb:]
	clear(acc)
	for i := range mb {
		mx[i], l[i] = float32(math.Inf(-1)), 0
	}
	q := t.q[off:]
	last := pos0 + (mb-1)*posStep // last position any row attends to
	base := t.layer*t.c.layerStride + kvh*t.c.headStride
	for blk := 0; blk*bs <= last; blk++ {
		boff := base + int(s.Blocks[blk])*t.c.blockStride
		keys, vals := t.c.k[boff:boff+bs*hd], t.c.v[boff:boff+bs*hd]
		n := min(bs, last-blk*bs+1)
		dotBlockF32(t.k, mb, q, ldx, keys, hd, hd, scores, bs, n)
		for i := range mb {
			ni := min(n, pos0+i*posStep-blk*bs+1)
			if ni <= 0 {
				continue
			}
			sc := scores[i*bs : i*bs+ni]
			m := mx[i]
			for j, v := range sc {
				v *= t.spec.Scale
				sc[j] = v
				m = max(m, v)
			}
			corr := expf(mx[i] - m)
			sum := expSum(t.k, sc, m)
			mx[i], l[i] = m, l[i]*corr+sum
			a := acc[i*hd : (i+1)*hd]
			if corr != 1 {
				for d := range a {
					a[d] *= corr
				}
			}
			accumRows(t.k, a, sc, vals, hd)
		}
	}
	for i := range mb {
		out := t.dst[off+i*ldx:][:hd]
		inv := 1 / l[i]
		for d, v := range acc[i*hd : (i+1)*hd] {
			out[d] = v * inv
		}
	}
}

// accumRows adds Σ_j p[j]·v[j*ldv : j*ldv+len(dst)] to dst, using the
// kernel for the whole multiples of dStep and Go for the rest.
func accumRows(k *kernels, dst, p, v []float32, ldv int) {
	d0 := len(dst) / k.dStep * k.dStep
	if d0 > 0 {
		k.accum(&dst[0], &p[0], &v[0], ldv, len(p), d0)
	}
	if d0 < len(dst) {
		axpyRows(dst[d0:], p, v[d0:], ldv)
	}
}

// expSum sets x[i] = e^(x[i]-shift) and returns the sum, using the kernel
// for whole vectors and Go for the rest.
func expSum(k *kernels, x []float32, shift float32) float32 {
	var sum float32
	if k.expSum != nil && len(x) >= k.lanes {
		v := len(x) / k.lanes * k.lanes
		sum = k.expSum(&x[0], v, shift)
		x = x[v:]
	}
	for j, v := range x {
		e := expf(v - shift)
		x[j] = e
		sum += e
	}
	return sum
}
