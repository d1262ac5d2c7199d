package cpu

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/tandemllm/tandem/compute"
	"github.com/tandemllm/tandem/internal/half"
)

// attnTol bounds the error of attention outputs relative to the largest
// |v| (outputs are convex combinations of values).
const attnTol = 2e-5

type attnCase struct {
	heads, kvHeads, hd, bs int
	seqs                   []struct{ pos, qlen int }
	// ramp grows the keys with their position (×(1+p/16)), so each span's
	// largest score exceeds the ones before by far more than rescaleMargin
	// and the online softmax rescales its sums.
	ramp bool
}

func TestAttention(t *testing.T) {
	mixed := []struct{ pos, qlen int }{{0, 7}, {37, 1}, {16, 20}, {3, 1}, {0, 1}}
	cases := []attnCase{
		{4, 4, 8, 4, mixed, false},
		{4, 2, 64, 16, mixed, false},
		{8, 2, 20, 5, mixed, false},
		{6, 1, 16, 1, mixed, false},
		{12, 12, 64, 16, []struct{ pos, qlen int }{{300, 1}}, false},
		{4, 1, 128, 16, []struct{ pos, qlen int }{{40, 70}}, false},
		// The packed path (24 query rows or more, whole 16-key groups):
		// beside decode rows, after a cached prefix, GQA, several spans,
		// tiles that end past the last whole panel.
		{12, 12, 64, 16, []struct{ pos, qlen int }{{0, 100}, {5, 1}, {0, 24}, {131, 33}}, false},
		{8, 2, 64, 32, []struct{ pos, qlen int }{{17, 50}, {0, 23}}, false},
		{16, 1, 32, 16, []struct{ pos, qlen int }{{250, 40}}, false},
		// Scores growing along the sequence: decode rows and the packed
		// path over several spans.
		{12, 4, 64, 16, []struct{ pos, qlen int }{{300, 1}, {200, 1}}, true},
		{8, 2, 64, 16, []struct{ pos, qlen int }{{0, 300}}, true},
	}
	eachBackend(t, func(t *testing.T, b *Backend) {
		for _, dt := range []compute.DType{compute.F32, compute.BF16, compute.F16} {
			for _, c := range cases {
				t.Run(fmt.Sprintf("%v/h%d_kv%d_d%d_bs%d", dt, c.heads, c.kvHeads, c.hd, c.bs), func(t *testing.T) {
					runAttnCase(t, b, c, dt)
				})
			}
		}
	})
}

// runAttnCase checks attention over a cache of dtype dt against a float64
// reference. A 16-bit cache rounds what it stores, so the reference is given
// the keys and values rounded the same way: what is checked is that they
// are stored rounded to nearest and read back exactly.
func runAttnCase(t *testing.T, b *Backend, c attnCase, dt compute.DType) {
	r := rand.New(rand.NewPCG(11, uint64(c.heads*1000+c.hd)))
	kvw, qw := c.kvHeads*c.hd, c.heads*c.hd
	total := 0
	for _, s := range c.seqs {
		total += (s.pos + s.qlen + c.bs - 1) / c.bs
	}
	// Blocks are handed out in a shuffled order, so tables are not contiguous.
	numBlocks := total + 3
	perm := r.Perm(numBlocks)
	spec := compute.KVSpec{Layers: 2, NumBlocks: numBlocks, BlockSize: c.bs, KVHeads: c.kvHeads, HeadDim: c.hd, DType: dt}
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
			if c.ramp {
				k[i] *= 1 + float32(i/kvw)/16
			}
		}
		if dt != compute.F32 {
			_, k = encode(dt, k)
			_, v = encode(dt, v)
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
	plan := attnTask{k: b.k, c: kvOf(cache), spec: compute.AttnSpec{HeadDim: c.hd}}
	for si, s := range seqs {
		// The pairs path (AMX or VDPBF16PS) rounds the scaled queries
		// and the softmax weights to bfloat16: the reference takes the
		// rounded queries, and each output is allowed the weights'
		// rounding, 2⁻⁹ of the weighted mean of |v| (twice that, for the
		// sums' own rounding).
		pairs := plan.usePacked(s.QLen) && plan.usePairs()
		var absVals []float32
		if pairs {
			for _, v := range vals[si] {
				absVals = append(absVals, float32(math.Abs(float64(v))))
			}
		}
		for i := range s.QLen {
			row := s.QRow + i
			for h := range c.heads {
				qh, sc := q[row*qw+h*c.hd:][:c.hd], float64(scale)
				off := (h / (c.heads / c.kvHeads)) * c.hd
				var absMean []float64
				if pairs {
					qr := make([]float32, c.hd)
					for d, v := range qh {
						qr[d] = half.BF16ToFloat32(half.BF16FromFloat32(v * scale))
					}
					qh, sc = qr, 1
					absMean = refAttention(qh, keys[si], absVals, s.Pos+i+1, off, kvw, sc)
				}
				want := refAttention(qh, keys[si], vals[si], s.Pos+i+1, off, kvw, sc)
				for d, w := range want {
					tol := attnTol * 4
					if pairs {
						tol += absMean[d] / 256
					}
					if g := got[row*qw+h*c.hd+d]; math.Abs(float64(g)-w) > tol {
						t.Fatalf("seq %d row %d head %d [%d] = %v, want %v (within %g)", si, i, h, d, g, w, tol)
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

// TestKVReadLoad: KVRead returns what KVWrite stored, as little-endian
// elements of the cache's dtype, for any head range; KVLoad into another
// cache of the same dtype reproduces it.
// TestKVReadLoad writes rows into a cache and reads them back, on every
// kernel set: a few rows of an odd head width (Go's rounding tails) and
// 300 rows of 8 heads of 64 at scattered slots (written in chunks on the
// pool, rounded by the vector kernel).
func TestKVReadLoad(t *testing.T) {
	shapes := []struct {
		name  string
		spec  compute.KVSpec
		slots []int32
	}{
		{"small", compute.KVSpec{Layers: 2, NumBlocks: 5, BlockSize: 3, KVHeads: 3, HeadDim: 6}, []int32{7, 0, 13, 2}},
		{"prefill", compute.KVSpec{Layers: 2, NumBlocks: 40, BlockSize: 16, KVHeads: 8, HeadDim: 64}, nil},
	}
	for _, p := range rand.New(rand.NewPCG(5, 6)).Perm(640)[:300] {
		shapes[1].slots = append(shapes[1].slots, int32(p))
	}
	eachBackend(t, func(t *testing.T, b *Backend) {
		for _, sh := range shapes {
			for _, dt := range []compute.DType{compute.F32, compute.BF16, compute.F16} {
				t.Run(sh.name+"/"+dt.String(), func(t *testing.T) {
					checkKVRoundTrip(t, b, sh.spec, dt, sh.slots)
				})
			}
		}
	})
	b, err := New(Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.NewKVCache(compute.KVSpec{Layers: 1, NumBlocks: 1, BlockSize: 1, KVHeads: 1, HeadDim: 1, DType: compute.F16 + 1}); !errors.Is(err, compute.ErrUnsupported) {
		t.Fatalf("KV cache of an unknown dtype: err = %v, want ErrUnsupported", err)
	}
}

// checkKVRoundTrip writes random keys and values at slots of layer 1,
// reads heads [1, 3) back as they were written (rounded to dt), and loads
// them into another cache and reads them again.
func checkKVRoundTrip(t *testing.T, b *Backend, spec compute.KVSpec, dt compute.DType, slots []int32) {
	t.Helper()
	spec.DType = dt
	r := rand.New(rand.NewPCG(3, 4))
	src, err := b.NewKVCache(spec)
	if err != nil {
		t.Fatal(err)
	}
	w := spec.KVHeads * spec.HeadDim
	k, v := randVec(r, len(slots)*w), randVec(r, len(slots)*w)
	b.KVWrite(src, 1, bufOf(b, k), bufOf(b, v), slots)
	_, kx := encode(dt, k)
	_, vx := encode(dt, v)
	const h0, h1 = 1, 3
	n := len(slots) * (h1 - h0) * spec.HeadDim
	got := make([]byte, 2*n*dt.Size())
	b.KVRead(src, 1, slots, h0, h1, got)
	var want []float32
	for _, x := range [][]float32{kx, vx} {
		for i := range slots {
			want = append(want, x[i*w+h0*spec.HeadDim:i*w+h1*spec.HeadDim]...)
		}
	}
	if wb, _ := encode(dt, want); string(wb) != string(got) {
		t.Fatalf("KVRead of heads [%d,%d) differs from what was written", h0, h1)
	}
	dst, err := b.NewKVCache(spec)
	if err != nil {
		t.Fatal(err)
	}
	b.KVLoad(dst, 0, slots, h0, h1, got)
	again := make([]byte, len(got))
	b.KVRead(dst, 0, slots, h0, h1, again)
	if string(again) != string(got) {
		t.Fatal("KVLoad then KVRead does not round-trip")
	}
}

// TestMaxF32 checks the softmax's max against a plain loop at every
// length around the vector widths, with the largest value at each place.
func TestMaxF32(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	for _, k := range kernelSets() {
		for n := 0; n <= 70; n++ {
			x := randVec(r, n)
			for at := range max(n, 1) {
				if n > 0 {
					x[at] = 100 + float32(at)
				}
				want := float32(math.Inf(-1))
				for _, v := range x {
					want = max(want, v)
				}
				if got := maxF32(k, x); got != want {
					t.Fatalf("%s: max of %d values with the largest at %d = %g, want %g", k.name, n, at, got, want)
				}
				if n > 0 {
					x[at] = -1
				}
			}
		}
	}
}

// TestSoftmaxKernel checks the one-call online-softmax step of each kernel
// set against the max and exp steps it replaces (onlineRef, maxF32,
// expSum): the same reference, and the weights and their sum within
// float32 rounding, whether the reference stays (a span within the
// margin), moves (a larger span, the first span's −∞) or the span is all
// but masked.
func TestSoftmaxKernel(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	inf := float32(math.Inf(-1))
	for _, k := range kernelSets() {
		if k.softmax == nil {
			continue
		}
		for _, n := range []int{k.lanes, 2 * k.lanes, 3 * k.lanes, attnSpan} {
			for _, ref := range []float32{inf, -10, -3, 2.5, 40} {
				for _, masked := range []int{0, n - 1} {
					x := randVec(r, n)
					x[r.IntN(n)] = 4
					for j := n - masked; j < n; j++ {
						x[j] = inf
					}
					want := append([]float32(nil), x...)
					wantRef, _ := onlineRef(ref, maxF32(k, want))
					wantSum := expSum(k, want, wantRef)
					gotRef, gotSum := k.softmax(&x[0], n, ref, rescaleMargin)
					if gotRef != wantRef {
						t.Fatalf("%s n=%d ref=%g masked=%d: reference %g, want %g", k.name, n, ref, masked, gotRef, wantRef)
					}
					if d := math.Abs(float64(gotSum - wantSum)); d > 1e-6*float64(wantSum) {
						t.Fatalf("%s n=%d ref=%g masked=%d: sum %g, want %g", k.name, n, ref, masked, gotSum, wantSum)
					}
					for j := range x {
						if x[j] != want[j] {
							t.Fatalf("%s n=%d ref=%g masked=%d: weight %d = %g, want %g", k.name, n, ref, masked, j, x[j], want[j])
						}
					}
				}
			}
		}
	}
}
