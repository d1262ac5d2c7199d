package ring

// addF32x16 does dst[i] += src[i] for the first 16*blocks elements
// (reduce_amd64.s).
//
//go:noescape
func addF32x16(dst, src *float32, blocks int)

// addF32 does dst += src: SSE for whole blocks of 16, scalar for the
// rest. The reduction is on the critical path of the ring (the scalar
// loop alone took about 15% of the CPU of a large allreduce, the rest
// being the kernel's TCP copies).
func addF32(dst, src []float32) {
	src = src[:len(dst)]
	if b := len(dst) / 16; b > 0 {
		addF32x16(&dst[0], &src[0], b)
	}
	addF32Generic(dst[len(dst)&^15:], src[len(dst)&^15:])
}
