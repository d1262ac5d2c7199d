package ring

import (
	"unsafe"

	"github.com/tandemllm/tandem/internal/half"
)

// Host buffers are little-endian byte slices of the dtype; viewing them as
// typed slices avoids a copy. Callers pass whole elements.
func f32s(b []byte) []float32 {
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/4)
}

// bytesF32 is the reverse view: the bytes of float32s, to send them.
func bytesF32(f []float32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(f))), 4*len(f))
}

func u16s(b []byte) []uint16 {
	return unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/2)
}

// addF32Generic does dst += src. Unrolled by four: fewer branches keep
// loads flowing.
func addF32Generic(dst, src []float32) {
	src = src[:len(dst)]
	i := 0
	for ; i+4 <= len(dst); i += 4 {
		d, s := dst[i:i+4:i+4], src[i:i+4:i+4]
		d[0] += s[0]
		d[1] += s[1]
		d[2] += s[2]
		d[3] += s[3]
	}
	for ; i < len(dst); i++ {
		dst[i] += src[i]
	}
}

// addBF16 does dst += src in float32, rounded to nearest even.
func addBF16(dst, src []uint16) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] = half.BF16FromFloat32(half.BF16ToFloat32(dst[i]) + half.BF16ToFloat32(src[i]))
	}
}

func widenBF16(dst []float32, src []uint16) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] = half.BF16ToFloat32(src[i])
	}
}

func accBF16(dst []float32, src []uint16) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] += half.BF16ToFloat32(src[i])
	}
}

func narrowBF16(dst []uint16, src []float32) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] = half.BF16FromFloat32(src[i])
	}
}
