package ring

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestAddF32 checks the vector reduction against the scalar loop bit for
// bit, at every length around the block size and at every alignment,
// with infinities, NaNs, signed zeros and subnormals among the values.
func TestAddF32(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	special := []float32{0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)),
		float32(math.NaN()), math.SmallestNonzeroFloat32, math.MaxFloat32, -math.MaxFloat32}
	val := func() float32 {
		if rng.IntN(8) == 0 {
			return special[rng.IntN(len(special))]
		}
		return math.Float32frombits(rng.Uint32())
	}
	for n := range 70 {
		for off := range 4 {
			dst, src := make([]float32, n+off), make([]float32, n+off)
			for i := range dst {
				dst[i], src[i] = val(), val()
			}
			want := append([]float32(nil), dst...)
			addF32Generic(want[off:], src[off:])
			addF32(dst[off:], src[off:])
			for i := range dst {
				if math.Float32bits(dst[i]) != math.Float32bits(want[i]) && !(dst[i] != dst[i] && want[i] != want[i]) {
					t.Fatalf("n=%d off=%d: element %d is %v, want %v", n, off, i, dst[i], want[i])
				}
			}
		}
	}
}

func BenchmarkAddF32(b *testing.B) {
	dst, src := make([]float32, 64<<10), make([]float32, 64<<10) // 256 KiB each: one ring segment
	b.SetBytes(int64(4 * len(dst)))
	for b.Loop() {
		addF32(dst, src)
	}
}

func BenchmarkAddF32Generic(b *testing.B) {
	dst, src := make([]float32, 64<<10), make([]float32, 64<<10)
	b.SetBytes(int64(4 * len(dst)))
	for b.Loop() {
		addF32Generic(dst, src)
	}
}
