package cpu

import (
	"math"
	"unsafe"

	"github.com/tandemllm/tandem/compute"
)

// useAMX reports whether a sequence on the packed path runs on the AMX
// tiles instead: the AMX kernels, a bfloat16 cache and a head width of
// whole tile steps. Its keys and values are packed as bfloat16 pairs, and
// its queries and softmax weights rounded to bfloat16, as the tiles take
// them (the rounding a BF16 attention kernel on a GPU makes too); scores,
// the softmax and the sums stay float32.
func (t *attnTask) useAMX() bool {
	return t.k.amxBF16 != nil && t.c.spec.DType == compute.BF16 && t.spec.HeadDim%amxK == 0
}

// packedKVAMX views the packed keys and values of s's KV head kvh (see
// packedKV) as the AMX path lays them out: keys as panels of 32 keys
// ([kp/32][headDim/2][32] pairs, the layout amxBF16 takes as weights) and
// values as headDim/32 panels of 32 columns over every key
// ([headDim/32][kp/2][32] pairs of consecutive keys).
func (t *attnTask) packedKVAMX(p *seqPlan, kvh int) (k, v []uint32) {
	kf, vf := t.packedKV(p, kvh)
	n := p.kp * t.spec.HeadDim / 2
	return unsafe.Slice((*uint32)(unsafe.Pointer(&kf[0])), n), unsafe.Slice((*uint32)(unsafe.Pointer(&vf[0])), n)
}

// packKVAMX fills the AMX layout of s's KV head kvh from the bfloat16
// cache: keys 16 at a time with the pack kernel (moving pairs, see
// packKeys), values a pair of keys at a time. Keys past the sequence in a
// whole group of 16 and values past it are zero, so they add nothing when
// their weight is zero; stale keys within a last partial group are
// masked by the softmax.
func (t *attnTask) packKVAMX(s compute.AttnSeq, p *seqPlan, kvh int) {
	hd := t.spec.HeadDim
	keys := s.Pos + s.QLen
	kf, _ := t.packedKV(p, kvh)
	t.packKeys(s, p, kvh, kf, true)
	_, vp := t.packedKVAMX(p, kvh)
	pairs := p.kp / 2
	row := func(j int) []uint16 {
		off := t.cacheOff(s, kvh, j)
		return t.c.vb[off : off+hd]
	}
	for kp2 := range pairs {
		j := 2 * kp2
		for c := 0; c < hd; c += panelRows {
			dst := vp[c/panelRows*pairs*panelRows+kp2*panelRows:][:panelRows]
			switch {
			case j >= keys:
				clear(dst)
			case j+1 >= keys:
				for i, u := range row(j)[c : c+panelRows] {
					dst[i] = uint32(u)
				}
			default:
				v1 := row(j + 1)[c : c+panelRows]
				for i, u := range row(j)[c : c+panelRows] {
					dst[i] = uint32(u) | uint32(v1[i])<<16
				}
			}
		}
	}
}

// tileAMX is tilePacked on the AMX tiles: up to 32 query rows, per span
// of keys one tile GEMM for the scores against the key panels and one
// adding the rounded softmax weights times the value panels into the
// accumulators.
func (t *attnTask) tileAMX(ws *workerScratch, s compute.AttnSeq, p *seqPlan, kvh, r0, r1, j0, j1 int) {
	hd := t.spec.HeadDim
	hg := j1 - j0
	mb := (r1 - r0) * hg
	const span = attnSpan
	lq, lp := hd+amxK, span+amxK // strides off multiples of 4 KiB
	scores := grow(&ws.scores, amxRows*span)
	acc := grow(&ws.acc, amxRows*hd)
	ml := grow(&ws.ml, 2*mb)
	qt := grow(&ws.qt, hd)
	qb := grow(&ws.qb, amxRows*lq)
	pb := grow(&ws.pb, amxRows*lp)
	mx, l := ml[:mb], ml[mb:]
	clear(acc)
	clear(qb[mb*lq:])
	clear(pb[mb*lp:])
	qw := t.spec.Heads * hd
	qOff := func(i int) int { return (s.QRow+r0+i/hg)*qw + (kvh*t.group+j0+i%hg)*hd }
	t.prefetchRows(mb, qOff)
	for i := range mb {
		mx[i], l[i] = float32(math.Inf(-1)), 0
		scaleF32(t.k, qt[:hd], t.q[qOff(i):][:hd], t.spec.Scale)
		t.k.toBF16(&qb[i*lq], &qt[0], hd)
	}
	kp, vp := t.packedKVAMX(p, kvh)
	last := s.Pos + r1 - 1
	for k0 := 0; k0 <= last; k0 += span {
		n := min(span, last-k0+1)
		n32 := (n + amxK - 1) / amxK * amxK
		t.k.amxBF16(&qb[0], 2*lq, &kp[k0*hd/2], 64*hd, n32/panelRows, hd/amxK, &scores[0], 4*span, 0)
		for i := range mb {
			sc := scores[i*span : i*span+n32]
			ni := min(n, s.Pos+r0+i/hg-k0+1)
			if ni <= 0 {
				clear(sc)
			} else {
				t.softmaxSpan(sc, ni, &mx[i], &l[i], acc[i*hd:(i+1)*hd])
			}
			t.k.toBF16(&pb[i*lp], &sc[0], n32)
		}
		t.k.amxBF16(&pb[0], 2*lp, &vp[k0*panelRows/2], 2*p.kp*panelRows, hd/panelRows, n32/amxK, &acc[0], 4*hd, 1)
	}
	for i := range mb {
		scaleF32(t.k, t.dst[qOff(i):][:hd], acc[i*hd:(i+1)*hd], 1/l[i])
	}
}
