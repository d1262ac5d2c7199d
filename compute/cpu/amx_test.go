package cpu

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tandemllm/tandem/internal/half"
)

// TestTo16 holds every kernel set's toBF16 and toF16 to
// half.BF16FromFloat32 and half.F16FromFloat32 on the values where
// rounding is delicate (ties each way, the largest finite values rounding
// to infinity, subnormals, NaNs of every kind) and on random bit
// patterns.
func TestTo16(t *testing.T) {
	bits := []uint32{
		0, 0x80000000, 0x3f800000, 0x3f808000, 0x3f818000, 0x3f807fff, 0x3f808001,
		0x7f7fffff, 0xff7fffff, 0x7f7f8000, 0x7f800000, 0xff800000,
		0x00000001, 0x00008000, 0x00018000, 0x807fffff,
		0x7f800001, 0x7fc00000, 0xffffffff, 0x7fff8000, 0x7f80ffff,
		// F16's edges: 65504 and the ties around it, the smallest normal
		// and subnormal halves and the ties below them.
		0x477fe000, 0x477ff000, 0x477fefff, 0xc77ff000, 0x38800000, 0x33800000,
		0x33000000, 0x33000001, 0x32ffffff, 0x33c00000, 0x387fc000, 0x3f801000, 0x3f803000,
	}
	r := rand.New(rand.NewPCG(11, 12))
	for range 1 << 16 {
		bits = append(bits, r.Uint32())
	}
	// Values a KV cache holds: a few units either way.
	for range 1 << 12 {
		bits = append(bits, math.Float32bits(float32(r.NormFloat64()*4)))
	}
	src := make([]float32, len(bits))
	for i, b := range bits {
		src[i] = math.Float32frombits(b)
	}
	ran := false
	for _, k := range kernelSets() {
		for _, c := range []struct {
			name  string
			kern  func(dst *uint16, src *float32, n int)
			round func(float32) uint16
		}{{"toBF16", k.toBF16, half.BF16FromFloat32}, {"toF16", k.toF16, half.F16FromFloat32}} {
			if c.kern == nil {
				continue
			}
			ran = true
			n := len(src) / k.lanes * k.lanes
			dst := make([]uint16, len(src))
			c.kern(&dst[0], &src[0], len(src))
			for i := range n {
				if want := c.round(src[i]); dst[i] != want {
					t.Fatalf("%s %s: %#08x rounds to %#04x, want %#04x", k.name, c.name, bits[i], dst[i], want)
				}
			}
			for i := n; i < len(dst); i++ {
				if dst[i] != 0 {
					t.Fatalf("%s %s: wrote dst[%d] past n rounded down to %d lanes", k.name, c.name, i, k.lanes)
				}
			}
		}
	}
	if !ran {
		t.Skip("no kernel set here rounds to 16 bits (no AVX-512)")
	}
}

// TestProbeUnitFLOPs: the BF16 units' probes run where their kernel sets
// do and count FLOPs at a rate of the expected order against the FMA
// probe on the same thread; elsewhere they report none. A tile product is
// 16·16·32 multiply-adds, 512 times an AVX-512 FMA's 16, issued about
// once every 16 cycles against two FMAs a cycle: more than the FMA rate
// on every chip with AMX. VDPBF16PS makes 32 multiply-adds where an FMA
// makes 16, at one or two a cycle against two: half to twice the rate.
func TestProbeUnitFLOPs(t *testing.T) {
	p := NewProbe(1)
	for _, c := range []struct {
		name         string
		has          bool
		probe        func(time.Duration) (float64, time.Duration)
		lowest, most float64 // bounds of the rate over the FMA probe's
	}{
		{"tile", kernelSets()[0].tilePeak != nil, p.TileFLOPs, 1, math.Inf(1)},
		{"pairs", kernelSets()[0].pairsPeak != nil, p.PairFLOPs, 0.5, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, d := c.probe(5 * time.Millisecond)
			if !c.has {
				if n != 0 || d != 0 {
					t.Fatalf("no %s units here, yet the probe counted %g FLOPs in %v", c.name, n, d)
				}
				t.Skipf("no %s units here", c.name)
			}
			fn, fd := p.FLOPs(5 * time.Millisecond)
			ratio := n / d.Seconds() / (fn / fd.Seconds())
			if n <= 0 || d <= 0 || ratio < c.lowest || ratio > c.most {
				t.Fatalf("%s: %g FLOPs in %v, FMAs %g in %v: %.2f× the FMA rate, want %g–%g×", c.name, n, d, fn, fd, ratio, c.lowest, c.most)
			}
			t.Logf("%s: %.2f× the FMA rate", c.name, ratio)
		})
	}
}
