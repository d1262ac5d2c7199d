package ring

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/tandemllm/tandem/internal/half"
	"github.com/tandemllm/tandem/nccl"
)

// roughInputs are each rank's values over twenty binades, so that f32
// sums depend on their order: a result that matches doublingSum bit for
// bit was summed by the recursive-doubling tree.
func roughInputs(n, count int, seed uint64) [][]float32 {
	return randomInputs(n, count, rand.New(rand.NewPCG(seed, 11)), func(rng *rand.Rand) float32 {
		return float32(rng.NormFloat64() * math.Exp2(float64(rng.IntN(20)-10)))
	})
}

// doublingSum is the recursive-doubling tree summed here in one place:
// ranks pow..n-1 fold into ranks 0..n-pow-1, then rank r adds rank r^k's
// partial at k = 1, 2, 4, … (float32, as every rank does; the order of
// the two operands of an addition does not change its bits).
func doublingSum(in [][]float32) []float32 {
	n, pow := len(in), 1
	for pow*2 <= n {
		pow *= 2
	}
	v := make([][]float32, pow)
	for r := range pow {
		v[r] = append([]float32(nil), in[r]...)
		if r+pow < n {
			for i, x := range in[r+pow] {
				v[r][i] += x
			}
		}
	}
	for k := 1; k < pow; k <<= 1 {
		next := make([][]float32, pow)
		for r := range pow {
			next[r] = make([]float32, len(v[r]))
			for i := range next[r] {
				next[r][i] = v[r][i] + v[r^k][i]
			}
		}
		v = next
	}
	return v[0]
}

// TestAllReduceDoubling: the latency path for n = 2, 3, 4, 5 and 8 (5
// and 3 fold ranks in) over one element, odd counts, 4 KiB, 16 KiB and
// 1 MiB of f32 (the threshold raised so 1 MiB takes it too, its frames
// then written by the peers' writers): every rank gets the bits of the
// tree summed in one place (so the ranks agree and the result repeats
// run to run), within rounding of the float64 sum. bf16 sums in float32
// and rounds once.
func TestAllReduceDoubling(t *testing.T) {
	t.Cleanup(func() { leakCheck(t) }) // registered first: runs after every Close
	counts := []int{1, 3, 1001, 1 << 10, 4 << 10, 1 << 18}
	for _, n := range []int{2, 3, 4, 5, 8} {
		comms := newGroup(t, n, func(int) Options { return Options{SmallMessageBytes: 4 << 20} })
		for _, dt := range []nccl.DType{nccl.F32, nccl.BF16} {
			for _, count := range counts {
				t.Run(fmt.Sprintf("n%d/%s/%d", n, dt, count), func(t *testing.T) {
					for run := range 2 {
						checkDoubling(t, comms, dt, count, uint64(run))
					}
				})
			}
		}
	}
}

func checkDoubling(t *testing.T, comms []*Comm, dt nccl.DType, count int, seed uint64) {
	n := len(comms)
	in := roughInputs(n, count, seed)
	if dt == nccl.BF16 { // the values the ranks hold
		for _, v := range in {
			for i := range v {
				v[i] = half.BF16ToFloat32(half.BF16FromFloat32(v[i]))
			}
		}
	}
	tree := doublingSum(in)
	if dt == nccl.BF16 {
		for i, v := range tree {
			tree[i] = half.BF16ToFloat32(half.BF16FromFloat32(v))
		}
	}
	got := make([][]float32, n)
	noErrors(t, onAll(n, func(r int) error {
		got[r] = append([]float32(nil), in[r]...)
		if dt == nccl.F32 {
			return comms[r].AllReduce(context.Background(), nccl.Float32s(got[r]))
		}
		buf := make([]uint16, count)
		for i, v := range got[r] {
			buf[i] = half.BF16FromFloat32(v)
		}
		err := comms[r].AllReduce(context.Background(), nccl.BFloat16s(buf))
		for i, v := range buf {
			got[r][i] = half.BF16ToFloat32(v)
		}
		return err
	}))
	for i := range count {
		want, abs := 0.0, 0.0
		for r := range n {
			want += float64(in[r][i])
			abs += math.Abs(float64(in[r][i]))
		}
		// At most n additions in float32 on the way to any rank, each
		// off by at most half an ulp of a partial sum; bf16 rounds once
		// more at the end.
		tol := float64(n) * math.Exp2(-24) * abs
		if dt == nccl.BF16 {
			tol += math.Exp2(-8) * math.Abs(want)
		}
		if d := math.Abs(float64(got[0][i]) - want); d > tol {
			t.Fatalf("element %d: %v, want %v (tolerance %v)", i, got[0][i], want, tol)
		}
		for r := range n {
			if math.Float32bits(got[r][i]) != math.Float32bits(tree[i]) {
				t.Fatalf("rank %d element %d: %v, the doubling tree gives %v", r, i, got[r][i], tree[i])
			}
		}
	}
}
