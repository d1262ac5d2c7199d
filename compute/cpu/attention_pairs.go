package cpu

import (
	"math"
	"unsafe"

	"github.com/tandemllm/tandem/compute"
)

// usePairs reports whether a sequence on the packed path multiplies
// bfloat16 pairs instead of float32s: a bfloat16 cache, a head width of
// whole tile steps, and the AMX tiles or the VDPBF16PS kernels
// (gemmPairs). Its keys and values are packed as pairs, and its queries
// and softmax weights rounded to bfloat16, as the tiles and VDPBF16PS
// take them (the rounding a BF16 attention kernel on a GPU makes too);
// scores, the softmax and the sums stay float32.
func (t *attnTask) usePairs() bool {
	return (t.k.amxBF16 != nil || t.k.gemmPairs[1] != nil) && t.c.spec.DType == compute.BF16 && t.spec.HeadDim%amxK == 0
}

// packedKVPairs views the packed keys and values of s's KV head kvh (see
// packedKV) as the pairs path lays them out: keys as panels of 32 keys
// ([kp/32][headDim/2][32] pairs, the layout amxBF16 and gemmPairs take as
// weights) and values as headDim/32 panels of 32 columns over every key
// ([headDim/32][kp/2][32] pairs of consecutive keys).
func (t *attnTask) packedKVPairs(p *seqPlan, kvh int) (k, v []uint32) {
	kf, vf := t.packedKV(p, kvh)
	n := p.kp * t.spec.HeadDim / 2
	return unsafe.Slice((*uint32)(unsafe.Pointer(&kf[0])), n), unsafe.Slice((*uint32)(unsafe.Pointer(&vf[0])), n)
}

// packKVPairs fills the pairs layout of s's KV head kvh from the bfloat16
// cache: keys 16 at a time with the pack kernel (moving pairs, see
// packKeys), values a pair of keys at a time. Keys past the sequence in a
// whole group of 16 and values past it are zero, so they add nothing when
// their weight is zero; stale keys within a last partial group are
// masked by the softmax.
func (t *attnTask) packKVPairs(s compute.AttnSeq, p *seqPlan, kvh int) {
	hd := t.spec.HeadDim
	keys := s.Pos + s.QLen
	kf, _ := t.packedKV(p, kvh)
	t.packKeys(s, p, kvh, kf, true)
	_, vp := t.packedKVPairs(p, kvh)
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

// pairsRows is how many query rows one product of the pairs path
// takes: the AMX tiles' amxRows (rows past the tile's zero), or the
// tile's own mb with gemmPairs.
func (t *attnTask) pairsRows(mb int) int {
	if t.k.amxBF16 != nil {
		return amxRows
	}
	return mb
}

// pairsKeys is n keys rounded up to what one product of the pairs path
// sums over: whole tile steps (amxK) on AMX, 16 (a vector of scores, and
// a whole number of gemmPairs' unrolled steps) with gemmPairs.
func (t *attnTask) pairsKeys(n int) int {
	if t.k.amxBF16 != nil {
		return (n + amxK - 1) / amxK * amxK
	}
	return (n + 15) / 16 * 16
}

// pairsGemm sets dst[i*ldd+32q+j] (or adds to it, add ≠ 0) to the sum
// over kp pairs of row i of x (ldx values apart) times column j of panel
// q, for the tile's mb rows, j < panelRows and panels panels pstride words
// apart: one amxBF16 call, or a gemmPairs call per panel.
func (t *attnTask) pairsGemm(mb int, x []uint16, ldx int, p []uint32, pstride, panels, kp int, dst []float32, ldd, add int) {
	if t.k.amxBF16 != nil {
		t.k.amxBF16(&x[0], 2*ldx, &p[0], 4*pstride, panels, 2*kp/amxK, &dst[0], 4*ldd, add)
		return
	}
	g, next := t.k.gemmPairs[mb], (*byte)(unsafe.Pointer(&x[0]))
	for q := range panels {
		g(&x[0], ldx, &p[q*pstride], kp, &dst[q*panelRows], ldd, add, next)
	}
}

// tilePairs is tilePacked on bfloat16 pairs: per span of keys one product
// for the scores against the key panels and one adding the rounded
// softmax weights times the value panels into the accumulators (see
// pairsGemm).
func (t *attnTask) tilePairs(ws *workerScratch, s compute.AttnSeq, p *seqPlan, kvh, r0, r1, j0, j1 int) {
	hd := t.spec.HeadDim
	hg := j1 - j0
	mb := (r1 - r0) * hg
	rows := t.pairsRows(mb)
	const span = attnSpan
	lq, lp := hd+amxK, span+amxK // strides off multiples of 4 KiB
	scores := grow(&ws.scores, rows*span)
	acc := grow(&ws.acc, rows*hd)
	ml := grow(&ws.ml, 2*mb)
	qt := grow(&ws.qt, hd)
	qb := grow(&ws.qb, rows*lq)
	pb := grow(&ws.pb, rows*lp)
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
	kp, vp := t.packedKVPairs(p, kvh)
	last := s.Pos + r1 - 1
	for k0 := 0; k0 <= last; k0 += span {
		n := min(span, last-k0+1)
		nk := t.pairsKeys(n)
		t.pairsGemm(mb, qb, lq, kp[k0*hd/2:], panelRows*hd/2, (nk+panelRows-1)/panelRows, hd/2, scores, span, 0)
		for i := range mb {
			sc := scores[i*span : i*span+nk]
			ni := min(n, s.Pos+r0+i/hg-k0+1)
			if ni <= 0 {
				clear(sc)
			} else {
				t.softmaxSpan(sc, ni, &mx[i], &l[i], acc[i*hd:(i+1)*hd])
			}
			t.k.toBF16(&pb[i*lp], &sc[0], nk)
		}
		t.pairsGemm(mb, pb, lp, vp[k0*panelRows/2:], p.kp*panelRows/2, hd/panelRows, nk/2, acc, hd, 1)
	}
	for i := range mb {
		scaleF32(t.k, t.dst[qOff(i):][:hd], acc[i*hd:(i+1)*hd], 1/l[i])
	}
}
