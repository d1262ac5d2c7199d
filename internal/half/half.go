package half

import (
	"encoding/binary"
	"math"
)

// BF16ToFloat32 widens a bfloat16, which is exact: BF16 is the top half of
// a float32.
func BF16ToFloat32(b uint16) float32 {
	return math.Float32frombits(uint32(b) << 16)
}

// BF16FromFloat32 rounds f to the nearest bfloat16, ties to even.
func BF16FromFloat32(f float32) uint16 {
	bits := math.Float32bits(f)
	if bits&0x7fffffff > 0x7f800000 {
		// NaN: truncation could clear every mantissa bit left and turn
		// it into an infinity, so force the quiet bit.
		return uint16(bits>>16) | 0x40
	}
	// Adding 0x7fff plus the lowest kept bit rounds ties to even; a carry
	// out of the mantissa correctly bumps the exponent (up to Inf).
	bits += 0x7fff + (bits>>16)&1
	return uint16(bits >> 16)
}

// F16ToFloat32 widens an IEEE binary16, which is exact.
func F16ToFloat32(h uint16) float32 {
	// Move exponent and mantissa into place and rebias; only Inf/NaN and
	// subnormals (rare in weights) need more, so the common path is
	// branch-light.
	o := uint32(h&0x7fff) << 13
	exp := o & 0x0f800000
	o += (127 - 15) << 23
	switch exp {
	case 0x0f800000: // Inf or NaN: all-ones exponent, payload kept
		o += (128 - 16) << 23
	case 0: // zero or subnormal: let the FPU normalise m·2^-24
		o += 1 << 23
		o = math.Float32bits(math.Float32frombits(o) - math.Float32frombits(113<<23))
	}
	return math.Float32frombits(o | uint32(h&0x8000)<<16)
}

// F16FromFloat32 rounds f to the nearest IEEE binary16, ties to even.
// Values beyond the largest finite half (65504) by at least half a unit
// in the last place become infinities; tiny values become subnormals or
// signed zero.
func F16FromFloat32(f float32) uint16 {
	bits := math.Float32bits(f)
	sign := uint16(bits>>16) & 0x8000
	exp := int(bits>>23) & 0xff
	man := bits & 0x7fffff
	if exp == 0xff {
		if man != 0 {
			return sign | 0x7e00 | uint16(man>>13) // quiet NaN, payload kept
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15 // biased half exponent
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Below 2^-25 (half the smallest subnormal) everything, ties
		// included, rounds to zero.
		if e < -10 {
			return sign
		}
		man |= 0x800000
		shift := uint(14 - e)
		return sign | uint16(roundShift(man, shift))
	}
	// A carry out of the mantissa bumps the exponent, up to Inf.
	return sign | uint16(roundShift(uint32(e)<<23|man, 13))
}

// roundShift returns v>>shift rounded to nearest, ties to even.
func roundShift(v uint32, shift uint) uint32 {
	q := v >> shift
	rem := v & (1<<shift - 1)
	halfway := uint32(1) << (shift - 1)
	if rem > halfway || rem == halfway && q&1 == 1 {
		q++
	}
	return q
}

// BF16ToFloat32s widens little-endian BF16 bytes into dst, which must hold
// len(src)/2 values. It returns the number of values written.
func BF16ToFloat32s(dst []float32, src []byte) int {
	n := min(len(dst), len(src)/2)
	for i := range n {
		dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(src[2*i:])) << 16)
	}
	return n
}

// F16ToFloat32s widens little-endian F16 bytes into dst, which must hold
// len(src)/2 values. It returns the number of values written.
func F16ToFloat32s(dst []float32, src []byte) int {
	n := min(len(dst), len(src)/2)
	for i := range n {
		dst[i] = F16ToFloat32(binary.LittleEndian.Uint16(src[2*i:]))
	}
	return n
}

// BF16FromFloat32s rounds src into little-endian BF16 bytes in dst, which
// must hold 2*len(src) bytes. It returns the number of values written.
func BF16FromFloat32s(dst []byte, src []float32) int {
	n := min(len(dst)/2, len(src))
	for i := range n {
		binary.LittleEndian.PutUint16(dst[2*i:], BF16FromFloat32(src[i]))
	}
	return n
}

// F16FromFloat32s rounds src into little-endian F16 bytes in dst, which
// must hold 2*len(src) bytes. It returns the number of values written.
func F16FromFloat32s(dst []byte, src []float32) int {
	n := min(len(dst)/2, len(src))
	for i := range n {
		binary.LittleEndian.PutUint16(dst[2*i:], F16FromFloat32(src[i]))
	}
	return n
}
