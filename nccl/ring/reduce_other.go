//go:build !amd64

package ring

// addF32 does dst += src.
func addF32(dst, src []float32) { addF32Generic(dst, src) }
