package cpu

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"github.com/tandemllm/tandem/compute"
	"github.com/tandemllm/tandem/internal/half"
)

// kvCache stores keys and values as [layer][block][kvHead][slot][headDim],
// so one head's keys of one block are a contiguous matrix: float32 in k and
// v, or the bit patterns of a 16-bit spec.DType (BF16 or F16) in kb and vb
// (the other pair is nil).
type kvCache struct {
	spec        compute.KVSpec
	k, v        []float32
	kb, vb      []uint16
	headStride  int // BlockSize·HeadDim
	blockStride int // KVHeads·headStride
	layerStride int // NumBlocks·blockStride
}

func (c *kvCache) Layers() int    { return c.spec.Layers }
func (c *kvCache) NumBlocks() int { return c.spec.NumBlocks }
func (c *kvCache) BlockSize() int { return c.spec.BlockSize }
func (c *kvCache) KVHeads() int   { return c.spec.KVHeads }
func (c *kvCache) HeadDim() int   { return c.spec.HeadDim }
func (c *kvCache) DType() compute.DType {
	return c.spec.DType
}

// AutoKVDType is the weights' dtype, as vLLM's "auto" is the model's:
// BF16 weights get a BF16 cache and F16 weights an F16 one (three more
// mantissa bits than bfloat16, at the same size, so an F16 model's KV
// keeps the precision of its weights), F32 weights an F32 one. A 16-bit
// cache halves the bytes attention reads every decode step (gpt2-124m F16
// at batch 8 read 36.9 MB a step with an F32 cache) and doubles the
// sequences a given cache size holds.
func (b *Backend) AutoKVDType(weights compute.DType) compute.DType {
	if weights == compute.BF16 || weights == compute.F16 {
		return weights
	}
	return compute.F32
}

// NewKVCache allocates a zeroed F32, BF16 or F16 cache.
func (b *Backend) NewKVCache(s compute.KVSpec) (compute.KVCache, error) {
	if s.Layers <= 0 || s.NumBlocks <= 0 || s.BlockSize <= 0 || s.KVHeads <= 0 || s.HeadDim <= 0 {
		return nil, fmt.Errorf("cpu: invalid KV cache spec %+v", s)
	}
	if s.DType != compute.F32 && s.DType != compute.BF16 && s.DType != compute.F16 {
		return nil, fmt.Errorf("%w: KV cache dtype %v (F32, BF16 or F16)", compute.ErrUnsupported, s.DType)
	}
	c := &kvCache{spec: s, headStride: s.BlockSize * s.HeadDim}
	c.blockStride = s.KVHeads * c.headStride
	c.layerStride = s.NumBlocks * c.blockStride
	n := s.Layers * c.layerStride
	if n/s.Layers != c.layerStride {
		return nil, fmt.Errorf("cpu: KV cache spec %+v overflows", s)
	}
	if s.DType.Size() == 2 {
		c.kb, c.vb = make([]uint16, n), make([]uint16, n)
	} else {
		c.k, c.v = make([]float32, n), make([]float32, n)
	}
	return c, nil
}

// valuesAhead is how many bytes past a key the value at the same place
// lies (an address difference between the two arrays, for prefetches).
func (c *kvCache) valuesAhead() int {
	if c.kb != nil {
		return int(uintptr(unsafe.Pointer(&c.vb[0])) - uintptr(unsafe.Pointer(&c.kb[0])))
	}
	return int(uintptr(unsafe.Pointer(&c.v[0])) - uintptr(unsafe.Pointer(&c.k[0])))
}

func kvOf(c compute.KVCache) *kvCache {
	kc, ok := c.(*kvCache)
	if !ok {
		panic(fmt.Sprintf("cpu: KV cache of type %T does not belong to a CPU backend", c))
	}
	return kc
}

// KVWrite stores m rows of keys and values of one layer at slots, in
// chunks of rows on the pool when there are enough values (a prefill's
// rows: the copies and the first touches of fresh blocks' pages run on
// every thread).
func (b *Backend) KVWrite(c compute.KVCache, layer int, k, v compute.Buf, slots []int32) {
	kc := kvOf(c)
	s := kc.spec
	for _, slot := range slots {
		if slot < 0 || int(slot) >= s.NumBlocks*s.BlockSize {
			panic(fmt.Sprintf("cpu: KVWrite slot %d out of range [0, %d)", slot, s.NumBlocks*s.BlockSize))
		}
	}
	t := &b.kvw
	*t = kvWriteTask{k: b.k, c: kc, base: layer * kc.layerStride, ks: data(k), vs: data(v), slots: slots, per: len(slots)}
	if rows := len(slots); rows > 1 && rows*s.KVHeads*s.HeadDim >= parallelMin {
		t.per = (rows + 4*b.threads - 1) / (4 * b.threads)
	}
	if t.per > 0 {
		b.pool.run(t, (len(slots)+t.per-1)/t.per)
	}
	*t = kvWriteTask{}
}

// kvWriteTask writes rows [c·per, (c+1)·per) of a KVWrite per chunk.
type kvWriteTask struct {
	k      *kernels
	c      *kvCache
	base   int
	ks, vs []float32
	slots  []int32
	per    int
}

func (t *kvWriteTask) run(c, _ int) {
	kc, s := t.c, t.c.spec
	w := s.KVHeads * s.HeadDim
	lo, hi := c*t.per, min((c+1)*t.per, len(t.slots))
	t.prefetchRows(lo, hi)
	for i := lo; i < hi; i++ {
		off := t.slotOff(i)
		for h := range s.KVHeads {
			c, src := off+h*kc.headStride, i*w+h*s.HeadDim
			if kc.kb != nil {
				t.k.round16(s.DType, kc.kb[c:c+s.HeadDim], t.ks[src:])
				t.k.round16(s.DType, kc.vb[c:c+s.HeadDim], t.vs[src:])
				continue
			}
			copy(kc.k[c:c+s.HeadDim], t.ks[src:])
			copy(kc.v[c:c+s.HeadDim], t.vs[src:])
		}
	}
}

// slotOff is where row i's slot starts in the cache's key (or value)
// array, at KV head 0.
func (t *kvWriteTask) slotOff(i int) int {
	s := t.c.spec
	slot := int(t.slots[i])
	return t.base + slot/s.BlockSize*t.c.blockStride + slot%s.BlockSize*s.HeadDim
}

// prefetchRows fetches the cache lines rows [lo, hi) are written to
// before any is written: a decode step's slots were last touched a step
// ago and come from memory, a few hundred lines a layer at batch 8, and
// written one after another their misses did not overlap.
func (t *kvWriteTask) prefetchRows(lo, hi int) {
	kc, s := t.c, t.c.spec
	if t.k.prefetch == nil {
		return
	}
	for i := lo; i < hi; i++ {
		off := t.slotOff(i)
		for h := range s.KVHeads {
			c := off + h*kc.headStride
			if kc.kb != nil {
				t.k.prefetch((*float32)(unsafe.Pointer(&kc.kb[c])), 2*s.HeadDim)
				t.k.prefetch((*float32)(unsafe.Pointer(&kc.vb[c])), 2*s.HeadDim)
				continue
			}
			t.k.prefetch(&kc.k[c], 4*s.HeadDim)
			t.k.prefetch(&kc.v[c], 4*s.HeadDim)
		}
	}
}

// round16 rounds src[:len(dst)] to the 16-bit dt (BF16 or F16),
// nearest-even: the kernel for whole vectors, Go for the rest.
func (k *kernels) round16(dt compute.DType, dst []uint16, src []float32) {
	src = src[:len(dst)]
	kern, round := k.toBF16, half.BF16FromFloat32
	if dt == compute.F16 {
		kern, round = k.toF16, half.F16FromFloat32
	}
	if v := vecPart(k, kern != nil, len(dst)); v > 0 {
		kern(&dst[0], &src[0], v)
		dst, src = dst[v:], src[v:]
	}
	for i, f := range src {
		dst[i] = round(f)
	}
}

// widen16 is the Go conversion of the 16-bit dt (BF16 or F16) to float32.
func widen16(dt compute.DType) func(uint16) float32 {
	if dt == compute.F16 {
		return half.F16ToFloat32
	}
	return half.BF16ToFloat32
}

// workerScratch is per-worker memory, grown on first use and then reused.
type workerScratch struct {
	scores []float32
	acc    []float32
	ml     []float32
	qt     []float32 // attention's query tile
	// The pairs path's query tile and softmax weights in bfloat16.
	qb, pb []uint16
}

// grow makes *s at least n long and returns its first n values.
func grow[T any](s *[]T, n int) []T {
	if len(*s) < n {
		*s = make([]T, n)
	}
	return (*s)[:n]
}

// attnTask runs one tile of query vectors against one KV head per chunk. A
// tile is up to maxM query vectors (gemmM on the packed path) that read
// the same KV head: pp consecutive positions × hg heads of the head's
// group, so each key and value block is loaded once for all of them. With
// GQA (group > 1) a tile holds every head of the group at M/group
// positions; without it, M positions of one head.
type attnTask struct {
	k       *kernels
	dst, q  []float32
	c       *kvCache
	layer   int
	seqs    []compute.AttnSeq
	spec    compute.AttnSpec
	group   int       // query heads per KV head
	plans   []seqPlan // per sequence
	firstCh []int     // first chunk of each sequence (len(seqs)+1)
	scratch []workerScratch
	// The packed path's keys and values (see packedKV), and the task that
	// packs them.
	pack  []float32
	packT attnPackTask
}

// Attention runs causal paged attention of each sequence's query rows.
// Sequences of packedAttnRows query rows or more, with the outer-product
// kernels, first have their keys and values packed (see tilePacked).
func (b *Backend) Attention(dst, q compute.Buf, c compute.KVCache, layer int, seqs []compute.AttnSeq, spec compute.AttnSpec) {
	kc := kvOf(c)
	if spec.HeadDim != kc.spec.HeadDim || spec.KVHeads != kc.spec.KVHeads || spec.KVHeads <= 0 || spec.Heads%spec.KVHeads != 0 {
		panic(fmt.Sprintf("cpu: Attention spec %+v does not fit cache %+v", spec, kc.spec))
	}
	t := &b.attn
	*t = attnTask{k: b.k, dst: data(dst), q: data(q), c: kc, layer: layer, seqs: seqs, spec: spec,
		group: spec.Heads / spec.KVHeads, scratch: b.scratch, firstCh: t.firstCh[:0], plans: t.plans[:0],
		pack: t.pack, packT: attnPackTask{pairs: t.packT.pairs[:0]}}
	chunks, packN := 0, 0
	for si, s := range seqs {
		if s.Pos+s.QLen > len(s.Blocks)*kc.spec.BlockSize {
			panic(fmt.Sprintf("cpu: Attention over positions [0, %d) with %d blocks of %d",
				s.Pos+s.QLen, len(s.Blocks), kc.spec.BlockSize))
		}
		p := seqPlan{packed: t.usePacked(s.QLen)}
		m := b.k.maxM
		if p.packed {
			m = b.k.gemmM
			if p.pairs = t.usePairs(); p.pairs && t.k.amxBF16 != nil {
				m = amxRows
			}
			p.off, p.kp = packN, (s.Pos+s.QLen+panelRows-1)/panelRows*panelRows
			packN += 2 * spec.KVHeads * p.kp * spec.HeadDim
			for h := range spec.KVHeads {
				t.packT.pairs = append(t.packT.pairs, int32(si*spec.KVHeads+h))
			}
		}
		p.hg = min(t.group, m)
		p.headT = (t.group + p.hg - 1) / p.hg
		p.pp = max(1, m/p.hg)
		t.plans = append(t.plans, p)
		t.firstCh = append(t.firstCh, chunks)
		chunks += spec.KVHeads * p.headT * ((s.QLen + p.pp - 1) / p.pp)
	}
	t.firstCh = append(t.firstCh, chunks)
	if packN > 0 {
		t.pack = grow(&t.pack, packN)
		t.packT.t = t
		b.pool.run(&t.packT, len(t.packT.pairs))
	}
	b.pool.run(t, chunks)
	t.dst, t.q, t.seqs, t.packT.t = nil, nil, nil, nil
}

func (t *attnTask) run(c, w int) {
	si := 0
	for t.firstCh[si+1] <= c {
		si++
	}
	s, p := t.seqs[si], &t.plans[si]
	c -= t.firstCh[si]
	// The threads go through the tiles of one KV head together before the
	// next head's, so the head's keys and values, which every tile of it
	// reads, stay in each core's L2 from one tile to the next. Taking the
	// heads in turn instead brought them from L3 for every tile (a
	// 2048-position head's are 1 MiB in float32; llama-160m's prefill
	// attention took a fifth longer).
	// Within a head, causal tiles late in the sequence cost the most;
	// they go first so that the cheap ones even out the threads' ends.
	posT := (s.QLen + p.pp - 1) / p.pp
	r0 := (posT - 1 - c%posT) * p.pp
	c /= posT
	j0 := c % p.headT * p.hg
	kvh := c / p.headT
	r1, j1 := min(r0+p.pp, s.QLen), min(j0+p.hg, t.group)
	switch {
	case p.pairs:
		t.tilePairs(&t.scratch[w], s, p, kvh, r0, r1, j0, j1)
		return
	case p.packed:
		t.tilePacked(&t.scratch[w], s, p, kvh, r0, r1, j0, j1)
		return
	}
	t.tile(&t.scratch[w], s, kvh, r0, r1, j0, j1)
}

// attnSpan is how many keys one online-softmax step covers: several cache
// blocks, so the per-row bookkeeping of a step is paid per span, not per
// (small) block.
const attnSpan = 128

// tile computes query rows [r0, r1) of s × query heads [j0, j1) of KV head
// kvh's group. It goes span by span with an online softmax: per query a
// reference maximum mx (see onlineRef), a running sum l of exp(score-mx),
// and the accumulator of exp(score-mx)·v. Queries are copied, pre-scaled,
// into one contiguous tile so the score kernel sees a uniform stride.
func (t *attnTask) tile(ws *workerScratch, s compute.AttnSeq, kvh, r0, r1, j0, j1 int) {
	hd, bs := t.spec.HeadDim, t.c.spec.BlockSize
	hg := j1 - j0
	mb := (r1 - r0) * hg
	span := max(bs, attnSpan/bs*bs)
	scores := grow(&ws.scores, mb*span)
	acc := grow(&ws.acc, mb*hd)
	ml := grow(&ws.ml, 2*mb)
	qt := grow(&ws.qt, mb*hd)
	mx, l := ml[:mb], ml[mb:]
	clear(acc)
	qw := t.spec.Heads * hd
	// qOff is where query i of the tile lives in q and dst.
	qOff := func(i int) int { return (s.QRow+r0+i/hg)*qw + (kvh*t.group+j0+i%hg)*hd }
	for i := range mb {
		mx[i], l[i] = float32(math.Inf(-1)), 0
		scaleF32(t.k, qt[i*hd:(i+1)*hd], t.q[qOff(i):][:hd], t.spec.Scale)
	}
	last := s.Pos + r1 - 1 // last position any query attends to
	base := t.layer*t.c.layerStride + kvh*t.c.headStride
	vAhead := t.c.valuesAhead()
	for k0 := 0; k0 <= last; k0 += span {
		n := min(span, last-k0+1)
		for b := 0; b < n; b += bs {
			boff := base + int(s.Blocks[(k0+b)/bs])*t.c.blockStride
			// The score kernels prefetch the block's values, which the
			// weighted sum below reads: a block is one 4 KiB page of a
			// head, which the hardware prefetchers do not run into. For
			// the same reason the next block's keys are fetched now: 8
			// sequences of 512 positions over 8 layers, from memory, read
			// 23–24 → 33–34 GB/s with a BF16 cache and 32–33 → 34–36 with
			// an F32 one (BenchmarkAttentionDecode, two threads, AMD EPYC
			// VM; the engine's batch-8 decode attention 11–25% faster,
			// gpt2-124m F32 level).
			if next := k0 + b + bs; next <= last && t.k.prefetch != nil {
				t.prefetchKeys(base + int(s.Blocks[next/bs])*t.c.blockStride)
			}
			if t.c.kb != nil {
				dotBlock16(t.k, t.c.spec.DType, mb, qt, hd, t.c.kb[boff:boff+bs*hd], hd, hd, scores[b:], span, min(bs, n-b), false, vAhead)
			} else {
				dotBlockF32(t.k, mb, qt, hd, t.c.k[boff:boff+bs*hd], hd, hd, scores[b:], span, min(bs, n-b), false, vAhead)
			}
		}
		for i := range mb {
			ni := min(n, s.Pos+r0+i/hg-k0+1)
			if ni <= 0 {
				continue
			}
			sc := scores[i*span : i*span+ni]
			a := acc[i*hd : (i+1)*hd]
			t.softmaxSpan(t.k.vectorRow(scores[i*span:(i+1)*span], ni), ni, &mx[i], &l[i], a)
			for b := 0; b < ni; b += bs {
				boff := base + int(s.Blocks[(k0+b)/bs])*t.c.blockStride
				p := sc[b:min(b+bs, ni)]
				if t.c.vb != nil {
					accumRows16(t.k, t.c.spec.DType, a, p, t.c.vb[boff:boff+bs*hd], hd)
				} else {
					accumRows(t.k, a, p, t.c.v[boff:boff+bs*hd], hd)
				}
			}
		}
	}
	for i := range mb {
		scaleF32(t.k, t.dst[qOff(i):][:hd], acc[i*hd:(i+1)*hd], 1/l[i])
	}
}

// prefetchKeys fetches the keys of the head's block at element off.
func (t *attnTask) prefetchKeys(off int) {
	n := t.c.spec.BlockSize * t.c.spec.HeadDim
	if t.c.kb != nil {
		t.k.prefetch((*float32)(unsafe.Pointer(&t.c.kb[off])), 2*n)
		return
	}
	t.k.prefetch(&t.c.k[off], 4*n)
}

// vectorRow returns row's first ni scores, extended towards a whole number of
// vectors as far as row has room, so that the max and exp kernels take it
// without a scalar tail (decode's few dozen positions spent a tenth of
// attention there); softmaxSpan masks the extension.
func (k *kernels) vectorRow(row []float32, ni int) []float32 {
	if k.expSum == nil {
		return row[:ni]
	}
	n := (ni + k.lanes - 1) / k.lanes * k.lanes
	return row[:min(n, len(row))]
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

// accumRows16 is accumRows over values of the 16-bit dt (BF16 or F16),
// widened in registers.
func accumRows16(k *kernels, dt compute.DType, dst, p []float32, v []uint16, ldv int) {
	kern := k.accumBF16
	if dt == compute.F16 {
		kern = k.accumF16
	}
	d0 := len(dst) / k.dStep * k.dStep
	if d0 > 0 && kern != nil {
		kern(&dst[0], &p[0], &v[0], ldv, len(p), d0)
	} else {
		d0 = 0
	}
	if d0 < len(dst) {
		axpyRows16(dst[d0:], p, v[d0:], ldv, widen16(dt))
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

// maxF32 is the largest value of x (-Inf when empty): the kernel for
// whole vectors, Go for the rest, kept in four independent running maxima
// so the loop is not one dependency chain.
func maxF32(k *kernels, x []float32) float32 {
	inf := float32(math.Inf(-1))
	m0, m1, m2, m3 := inf, inf, inf, inf
	if k.max != nil && len(x) >= k.lanes {
		v := len(x) / k.lanes * k.lanes
		m0 = k.max(&x[0], v)
		x = x[v:]
	}
	i := 0
	for ; i+4 <= len(x); i += 4 {
		m0, m1 = max(m0, x[i]), max(m1, x[i+1])
		m2, m3 = max(m2, x[i+2]), max(m3, x[i+3])
	}
	for ; i < len(x); i++ {
		m0 = max(m0, x[i])
	}
	return max(max(m0, m1), max(m2, m3))
}

// KVRead copies keys then values of heads [h0, h1) at slots into dst.
func (b *Backend) KVRead(c compute.KVCache, layer int, slots []int32, h0, h1 int, dst []byte) {
	kvCopy(kvOf(c), layer, slots, h0, h1, dst, false)
}

// KVLoad stores keys then values of heads [h0, h1) at slots from src.
func (b *Backend) KVLoad(c compute.KVCache, layer int, slots []int32, h0, h1 int, src []byte) {
	kvCopy(kvOf(c), layer, slots, h0, h1, src, true)
}

// kvCopy moves one layer's [2][slots][heads][HeadDim] between host bytes
// (little-endian elements of the cache's dtype) and the cache; load
// selects the direction.
func kvCopy(kc *kvCache, layer int, slots []int32, h0, h1 int, host []byte, load bool) {
	s := kc.spec
	d := s.HeadDim
	heads := h1 - h0
	es := s.DType.Size()
	if h0 < 0 || h1 > s.KVHeads || heads <= 0 || len(host) != 2*len(slots)*heads*d*es {
		panic(fmt.Sprintf("cpu: KV copy of heads [%d,%d) for %d slots into %d bytes does not fit cache %+v", h0, h1, len(slots), len(host), s))
	}
	half := len(slots) * heads * d
	base := layer * kc.layerStride
	for i, slot := range slots {
		if slot < 0 || int(slot) >= s.NumBlocks*s.BlockSize {
			panic(fmt.Sprintf("cpu: KV copy slot %d out of range [0, %d)", slot, s.NumBlocks*s.BlockSize))
		}
		off := base + int(slot)/s.BlockSize*kc.blockStride + int(slot)%s.BlockSize*d
		for h := h0; h < h1; h++ {
			c := off + h*kc.headStride
			row := (i*heads + h - h0) * d
			kh, vh := host[row*es:(row+d)*es], host[(half+row)*es:(half+row+d)*es]
			if kc.kb != nil {
				copyLE(kc.kb[c:c+d], kh, load)
				copyLE(kc.vb[c:c+d], vh, load)
			} else {
				copyLE(kc.k[c:c+d], kh, load)
				copyLE(kc.v[c:c+d], vh, load)
			}
		}
	}
}

// copyLE copies between cache elements and their little-endian bytes:
// into x when load, out of it otherwise.
func copyLE[T float32 | uint16](x []T, b []byte, load bool) {
	if littleEndian() { // the machine's order is the wire's: one copy
		n := len(x) * int(unsafe.Sizeof(T(0)))
		xb := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), n)
		if load {
			copy(xb, b[:n])
		} else {
			copy(b[:n], xb)
		}
		return
	}
	switch xs := any(x).(type) {
	case []float32:
		for i := range xs {
			if load {
				xs[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
			} else {
				binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(xs[i]))
			}
		}
	case []uint16:
		for i := range xs {
			if load {
				xs[i] = binary.LittleEndian.Uint16(b[2*i:])
			} else {
				binary.LittleEndian.PutUint16(b[2*i:], xs[i])
			}
		}
	}
}

// littleEndian reports whether the machine stores numbers little-endian.
func littleEndian() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}
