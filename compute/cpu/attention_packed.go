package cpu

import (
	"math"
	"unsafe"

	"github.com/tandemllm/tandem/compute"
	"github.com/tandemllm/tandem/internal/half"
)

// packedAttnRows is the fewest query rows of a sequence for which
// Attention takes the packed path: its keys and values are then packed
// once per call and read by QLen/gemmM tiles, so the packing (linear in
// the context) is small next to the products (QLen times the context).
const packedAttnRows = 24

// seqPlan is how Attention splits one sequence into tiles.
type seqPlan struct {
	hg    int // query heads per tile
	headT int // tiles across the group's heads: ceil(group/hg)
	pp    int // positions per tile
	// packed: the sequence's keys and values are packed (see packKV) at
	// off in attnTask.pack, keys kp positions (a multiple of panelRows).
	packed  bool
	off, kp int
	// pairs: the packed path on bfloat16 pairs (see tilePairs).
	pairs bool
}

// usePacked reports whether a sequence of qlen query rows takes the
// packed path: prefill-sized, with the outer-product kernels, and a
// cache whose blocks and heads split into whole 16-key groups and
// 32-wide value panels.
func (t *attnTask) usePacked(qlen int) bool {
	return t.k.gemmM > 0 && qlen >= packedAttnRows && t.spec.HeadDim%panelRows == 0 && t.c.spec.BlockSize%16 == 0
}

// packedKV is the packed keys and values of one sequence's KV head: kp
// positions each, keys as panels of panelRows keys transposed
// ([kp/32][headDim][32], the layout gemmF32 takes as weights) and values
// as headDim/32 column panels ([headDim/32][kp][32]), both float32.
func (t *attnTask) packedKV(p *seqPlan, kvh int) (k, v []float32) {
	n := p.kp * t.spec.HeadDim
	base := p.off + 2*kvh*n
	return t.pack[base : base+n], t.pack[base+n : base+2*n]
}

// attnPackTask packs the keys and values of every (packed sequence, KV
// head) pair, one pair per chunk, before the tiles run.
type attnPackTask struct {
	t     *attnTask
	pairs []int32 // sequence index · KVHeads + KV head
}

func (pt *attnPackTask) run(c, _ int) {
	t := pt.t
	si, kvh := int(pt.pairs[c])/t.spec.KVHeads, int(pt.pairs[c])%t.spec.KVHeads
	if t.plans[si].pairs {
		t.packKVPairs(t.seqs[si], &t.plans[si], kvh)
		return
	}
	t.packKV(t.seqs[si], &t.plans[si], kvh)
}

// packKV fills the packed keys and values of s's KV head kvh (see
// packedKV) from the cache: keys 16 at a time with the pack kernels
// (widening 16-bit keys), values widened or copied row by row. Positions past
// the sequence are zero, so they add nothing when their weight is zero.
func (t *attnTask) packKV(s compute.AttnSeq, p *seqPlan, kvh int) {
	hd := t.spec.HeadDim
	keys := s.Pos + s.QLen
	kp, vp := t.packedKV(p, kvh)
	t.packKeys(s, p, kvh, kp, false)
	for j := range p.kp {
		for c := 0; c < hd; c += panelRows {
			dst := vp[c*p.kp+j*panelRows : c*p.kp+(j+1)*panelRows]
			if j >= keys {
				clear(dst)
				continue
			}
			off := t.cacheOff(s, kvh, j) + c
			switch {
			case t.c.spec.DType == compute.F16:
				for i, u := range t.c.vb[off : off+panelRows] {
					dst[i] = half.F16ToFloat32(u)
				}
			case t.c.vb != nil:
				for i, u := range t.c.vb[off : off+panelRows] {
					dst[i] = half.BF16ToFloat32(u)
				}
			default:
				copy(dst, t.c.v[off:off+panelRows])
			}
		}
	}
}

// packKeys packs s's keys of KV head kvh into dst 16 at a time, as
// panels of panelRows keys transposed: float32s widened from the cache
// (hd words a key), or with pairs set, a bfloat16 cache's pairs moved as
// they are (hd/2 words a key, the pairs layout). Whole groups of 16 past
// the sequence are zero.
func (t *attnTask) packKeys(s compute.AttnSeq, p *seqPlan, kvh int, dst []float32, pairs bool) {
	hd := t.spec.HeadDim
	words := hd
	if pairs {
		words = hd / 2
	}
	for j0 := 0; j0 < p.kp; j0 += 16 {
		d := dst[j0/panelRows*panelRows*words+j0%panelRows:]
		if j0 >= s.Pos+s.QLen {
			for w := range words {
				clear(d[w*panelRows : w*panelRows+16])
			}
			continue
		}
		off := t.cacheOff(s, kvh, j0)
		switch {
		case pairs:
			t.k.packF32(&d[0], (*float32)(unsafe.Pointer(&t.c.kb[off])), words, words)
		case t.c.spec.DType == compute.F16:
			t.k.packF16(&d[0], &t.c.kb[off], hd, hd)
		case t.c.kb != nil:
			t.k.packBF16(&d[0], &t.c.kb[off], hd, hd)
		default:
			t.k.packF32(&d[0], &t.c.k[off], hd, hd)
		}
	}
}

// cacheOff is where position j of s's KV head kvh starts in the cache's
// key (or value) array.
func (t *attnTask) cacheOff(s compute.AttnSeq, kvh, j int) int {
	bs := t.c.spec.BlockSize
	return t.layer*t.c.layerStride + kvh*t.c.headStride + int(s.Blocks[j/bs])*t.c.blockStride + j%bs*t.spec.HeadDim
}

// softmaxSpan folds one span of a query's scores into its online
// softmax: sc holds the span's scores, the first ni of them valid; mx and
// l are the running reference maximum and sum, acc the weighted values so
// far, rescaled here when the reference moves (see onlineRef). On return
// sc holds the weights e^(score-ref), zero past ni.
func (t *attnTask) softmaxSpan(sc []float32, ni int, mx, l *float32, acc []float32) {
	// The scores past ni are masked: -Inf for the max, then zero weights.
	// expSum's kernel takes them as e^-87, which adds nothing to a sum of
	// at least 1, so it runs on whole vectors.
	for j := ni; j < len(sc); j++ {
		sc[j] = float32(math.Inf(-1))
	}
	var ref, sum float32
	if t.k.softmax != nil && len(sc) >= t.k.lanes && len(sc)%t.k.lanes == 0 {
		ref, sum = t.k.softmax(&sc[0], len(sc), *mx, rescaleMargin)
	} else {
		ref, _ = onlineRef(*mx, maxF32(t.k, sc))
		sum = expSum(t.k, sc, ref)
	}
	// The kernel moves the reference by onlineRef's rule, so onlineRef
	// gives the factor for the sums so far either way.
	_, corr := onlineRef(*mx, ref)
	clear(sc[ni:])
	if corr != 1 && *l > 0 {
		scaleF32(t.k, acc, acc, corr)
	}
	*mx, *l = ref, *l*corr+sum
}

// prefetchRows prefetches the query rows of a prefill tile, and the
// output rows it will write, before it reads any: each is a head's few
// hundred bytes of a different position (4 KiB or more apart), and
// fetched one at a time by the loop that scales them their misses came
// one after another (a tenth of BF16 prefill attention at 2048
// positions).
func (t *attnTask) prefetchRows(mb int, qOff func(int) int) {
	if t.k.prefetch == nil {
		return
	}
	n := 4 * t.spec.HeadDim
	for i := range mb {
		o := qOff(i)
		t.k.prefetch(&t.q[o], n)
		t.k.prefetch(&t.dst[o], n)
	}
}

// rescaleMargin is how far a span's largest score may exceed the online
// softmax's reference maximum before the sums so far are rescaled to a new
// one: the weights e^(score−ref) stay below e^8 ≈ 2981, far inside
// float32's (and bfloat16's) range, and the rescaling (an exp and a pass
// over the accumulator) comes with large jumps only, not whenever the
// maximum grows (the lazy rescaling of FlashAttention-4). A query's sum
// stays at least 1: the span that sets a reference holds a weight of 1.
const rescaleMargin = 8

// onlineRef returns the reference maximum for a span whose largest score
// is spanMax, given the reference so far (−∞ before the first span), and
// the factor by which the sums so far are to be multiplied (1: kept).
func onlineRef(ref, spanMax float32) (float32, float32) {
	if spanMax <= ref+rescaleMargin {
		return ref, 1
	}
	return spanMax, expf(ref - spanMax)
}

// tilePacked is tile on the packed path: per span of keys, the scores of
// the up to gemmM queries are one outer-product GEMM against the packed
// key panels, and the weighted sum of values another against the value
// panels, instead of a dot product per query and key (whose horizontal
// sums cost as much as its products at a head width of 64) and a pass
// over the values per query.
func (t *attnTask) tilePacked(ws *workerScratch, s compute.AttnSeq, p *seqPlan, kvh, r0, r1, j0, j1 int) {
	hd := t.spec.HeadDim
	hg := j1 - j0
	mb := (r1 - r0) * hg
	const span = attnSpan
	scores := grow(&ws.scores, mb*span)
	acc := grow(&ws.acc, mb*hd)
	ml := grow(&ws.ml, 2*mb)
	qt := grow(&ws.qt, mb*hd)
	mx, l := ml[:mb], ml[mb:]
	clear(acc)
	qw := t.spec.Heads * hd
	qOff := func(i int) int { return (s.QRow+r0+i/hg)*qw + (kvh*t.group+j0+i%hg)*hd }
	t.prefetchRows(mb, qOff)
	for i := range mb {
		mx[i], l[i] = float32(math.Inf(-1)), 0
		scaleF32(t.k, qt[i*hd:(i+1)*hd], t.q[qOff(i):][:hd], t.spec.Scale)
	}
	kp, vp := t.packedKV(p, kvh)
	g := t.k.gemmF32[mb]
	last := s.Pos + r1 - 1
	for k0 := 0; k0 <= last; k0 += span {
		n := min(span, last-k0+1)
		n16 := (n + 15) / 16 * 16
		for j := 0; j < n; j += panelRows {
			g(&qt[0], hd, &kp[(k0+j)*hd], hd, &scores[j], span, 0, (*byte)(unsafe.Pointer(&qt[0])))
		}
		for i := range mb {
			sc := scores[i*span : i*span+n16]
			ni := min(n, s.Pos+r0+i/hg-k0+1)
			if ni <= 0 {
				clear(sc)
				continue
			}
			t.softmaxSpan(sc, ni, &mx[i], &l[i], acc[i*hd:(i+1)*hd])
		}
		for c := 0; c < hd; c += panelRows {
			g(&scores[0], span, &vp[c*p.kp+k0*panelRows], n16, &acc[c], hd, 1, (*byte)(unsafe.Pointer(&scores[0])))
		}
	}
	for i := range mb {
		scaleF32(t.k, t.dst[qOff(i):][:hd], acc[i*hd:(i+1)*hd], 1/l[i])
	}
}
