package half

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

// format describes a 16-bit float layout so the references below decode
// bits with plain float64 arithmetic, independently of the code under test.
type format struct {
	name     string
	expBits  uint
	manBits  uint
	toF32    func(uint16) float32
	fromF32  func(float32) uint16
	toF32s   func([]float32, []byte) int
	fromF32s func([]byte, []float32) int
}

var formats = []format{
	{"BF16", 8, 7, BF16ToFloat32, BF16FromFloat32, BF16ToFloat32s, BF16FromFloat32s},
	{"F16", 5, 10, F16ToFloat32, F16FromFloat32, F16ToFloat32s, F16FromFloat32s},
}

func (f format) bias() int       { return 1<<(f.expBits-1) - 1 }
func (f format) expMax() uint16  { return 1<<f.expBits - 1 }
func (f format) infBits() uint16 { return f.expMax() << f.manBits }
func (f format) isNaN(h uint16) bool {
	return h&0x7fff > f.infBits()
}

// ref decodes h with float64 arithmetic.
func (f format) ref(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	e := int(h>>f.manBits) & int(f.expMax())
	m := float64(h & (1<<f.manBits - 1))
	switch {
	case e == int(f.expMax()) && m == 0:
		return math.Inf(int(sign))
	case e == int(f.expMax()):
		return math.NaN()
	case e == 0:
		return sign * math.Ldexp(m, 1-f.bias()-int(f.manBits))
	}
	return sign * math.Ldexp(1+m/float64(uint(1)<<f.manBits), e-f.bias())
}

// ladder lists the non-negative finite values in bit order, followed by
// the value the infinity bits would have with an unbounded exponent, so
// that rounding past the largest finite value lands on Inf.
func (f format) ladder() []float64 {
	var out []float64
	for h := uint16(0); h < f.infBits(); h++ {
		out = append(out, f.ref(h))
	}
	return append(out, math.Ldexp(1, int(f.expMax())-f.bias()))
}

// nearest rounds x to the nearest ladder entry, ties to even bits.
func nearest(ladder []float64, x float32) uint16 {
	sign := uint16(0)
	a := float64(x)
	if a < 0 || (a == 0 && math.Signbit(a)) {
		sign, a = 0x8000, -a
	}
	top := len(ladder) - 1
	if a >= ladder[top] {
		return sign | uint16(top)
	}
	i := sort.SearchFloat64s(ladder, a) // ladder[i-1] < a <= ladder[i]
	if ladder[i] == a {
		return sign | uint16(i)
	}
	lo, hi := ladder[i-1], ladder[i]
	switch {
	case a-lo < hi-a:
		return sign | uint16(i-1)
	case a-lo > hi-a:
		return sign | uint16(i)
	case i%2 == 0:
		return sign | uint16(i)
	}
	return sign | uint16(i-1)
}

func TestToFloat32Exhaustive(t *testing.T) {
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			for i := range 1 << 16 {
				h := uint16(i)
				got, want := f.toF32(h), f.ref(h)
				if f.isNaN(h) {
					if !math.IsNaN(float64(got)) {
						t.Fatalf("%#04x: got %v, want NaN", h, got)
					}
					continue
				}
				if float64(got) != want || math.Signbit(float64(got)) != math.Signbit(want) {
					t.Fatalf("%#04x: got %v, want %v", h, got, want)
				}
			}
		})
	}
}

func TestRoundTripExhaustive(t *testing.T) {
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			for i := range 1 << 16 {
				h := uint16(i)
				back := f.fromF32(f.toF32(h))
				if f.isNaN(h) {
					if !f.isNaN(back) {
						t.Fatalf("%#04x: NaN came back as %#04x", h, back)
					}
					continue
				}
				if back != h {
					t.Fatalf("%#04x: came back as %#04x", h, back)
				}
			}
		})
	}
}

// roundingInputs returns every midpoint between adjacent values of the
// format, its float32 neighbours, and a deterministic random sample of
// float32 bit patterns, in both signs.
func roundingInputs(f format) []float32 {
	ladder := f.ladder()
	var in []float32
	for i := 1; i < len(ladder); i++ {
		mid := float32((ladder[i-1] + ladder[i]) / 2) // exact: one more bit than the format
		in = append(in, mid, math.Nextafter32(mid, 0), math.Nextafter32(mid, float32(math.Inf(1))))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1 << 19 {
		x := math.Float32frombits(rng.Uint32())
		if !math.IsNaN(float64(x)) {
			in = append(in, x)
		}
	}
	in = append(in, 0, math.MaxFloat32, math.SmallestNonzeroFloat32, float32(math.Inf(1)))
	n := len(in)
	for i := range n {
		in = append(in, -in[i])
	}
	return in
}

func TestFromFloat32MatchesReference(t *testing.T) {
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			ladder := f.ladder()
			for _, x := range roundingInputs(f) {
				got, want := f.fromF32(x), nearest(ladder, x)
				if got != want {
					t.Fatalf("%g (%#08x): got %#04x (%g), want %#04x (%g)",
						x, math.Float32bits(x), got, f.ref(got), want, f.ref(want))
				}
			}
		})
	}
}

func TestSpecialValues(t *testing.T) {
	inf := float32(math.Inf(1))
	nan := float32(math.NaN())
	tests := []struct {
		name string
		f    format
		in   float32
		want uint16
	}{
		{"bf16 +inf", formats[0], inf, 0x7f80},
		{"bf16 -inf", formats[0], -inf, 0xff80},
		{"bf16 -0", formats[0], float32(math.Copysign(0, -1)), 0x8000},
		{"bf16 one", formats[0], 1, 0x3f80},
		{"bf16 overflow to inf", formats[0], math.MaxFloat32, 0x7f80},
		{"f16 +inf", formats[1], inf, 0x7c00},
		{"f16 -inf", formats[1], -inf, 0xfc00},
		{"f16 -0", formats[1], float32(math.Copysign(0, -1)), 0x8000},
		{"f16 one", formats[1], 1, 0x3c00},
		{"f16 max", formats[1], 65504, 0x7bff},
		{"f16 tie above max to inf", formats[1], 65520, 0x7c00},
		{"f16 below tie keeps max", formats[1], math.Nextafter32(65520, 0), 0x7bff},
		{"f16 smallest subnormal", formats[1], float32(math.Ldexp(1, -24)), 0x0001},
		{"f16 half smallest subnormal ties to zero", formats[1], float32(math.Ldexp(1, -25)), 0x0000},
		{"f16 just above half smallest", formats[1], math.Nextafter32(float32(math.Ldexp(1, -25)), 1), 0x0001},
		{"f16 largest subnormal to min normal", formats[1], float32(math.Ldexp(1023.5, -24)), 0x0400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.f.fromF32(tt.in); got != tt.want {
				t.Errorf("got %#04x, want %#04x", got, tt.want)
			}
		})
	}
	for _, f := range formats {
		if h := f.fromF32(nan); !f.isNaN(h) {
			t.Errorf("%s: NaN became %#04x", f.name, h)
		}
		// A NaN whose payload lives only in the low bits must not collapse
		// into an infinity.
		low := math.Float32frombits(0x7f800001)
		if h := f.fromF32(low); !f.isNaN(h) {
			t.Errorf("%s: low-payload NaN became %#04x", f.name, h)
		}
	}
}

func TestSliceForms(t *testing.T) {
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			src := []float32{0, 1, -2.5, 3.14159, 1e-3, -65504, 100000}
			buf := make([]byte, 2*len(src))
			if n := f.fromF32s(buf, src); n != len(src) {
				t.Fatalf("wrote %d values, want %d", n, len(src))
			}
			back := make([]float32, len(src))
			if n := f.toF32s(back, buf); n != len(src) {
				t.Fatalf("read %d values, want %d", n, len(src))
			}
			for i, x := range src {
				h := uint16(buf[2*i]) | uint16(buf[2*i+1])<<8
				if h != f.fromF32(x) {
					t.Errorf("value %d: bytes %#04x, scalar gives %#04x", i, h, f.fromF32(x))
				}
				if back[i] != f.toF32(h) {
					t.Errorf("value %d: widened to %v, scalar gives %v", i, back[i], f.toF32(h))
				}
			}
			if n := f.toF32s(make([]float32, 2), buf); n != 2 {
				t.Errorf("short dst: wrote %d, want 2", n)
			}
		})
	}
}

func BenchmarkF16ToFloat32s(b *testing.B)  { benchTo(b, F16ToFloat32s) }
func BenchmarkBF16ToFloat32s(b *testing.B) { benchTo(b, BF16ToFloat32s) }

func benchTo(b *testing.B, fn func([]float32, []byte) int) {
	src := make([]byte, 2<<16)
	for i := range src {
		src[i] = byte(i * 7)
	}
	dst := make([]float32, len(src)/2)
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		fn(dst, src)
	}
}
