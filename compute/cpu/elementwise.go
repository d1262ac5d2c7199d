package cpu

// The wrappers below run a kernel over the whole vectors of their slices
// and Go over the rest (all of it in the Go set).

// vecPart is how many leading elements of n a kernel of k takes: whole
// vectors, or none without the kernel.
func vecPart(k *kernels, has bool, n int) int {
	if !has || n < k.lanes {
		return 0
	}
	return n / k.lanes * k.lanes
}

// scaleF32 sets dst[i] = src[i]·s; dst and src may be the same slice.
func scaleF32(k *kernels, dst, src []float32, s float32) {
	dst = dst[:len(src)]
	if v := vecPart(k, k.scale != nil, len(src)); v > 0 {
		k.scale(&dst[0], &src[0], v, s)
		dst, src = dst[v:], src[v:]
	}
	for i, x := range src {
		dst[i] = x * s
	}
}

// addF32 sets dst[i] = a[i] + b[i].
func addF32(k *kernels, dst, a, b []float32) {
	a, b = a[:len(dst)], b[:len(dst)]
	if v := vecPart(k, k.add != nil, len(dst)); v > 0 {
		k.add(&dst[0], &a[0], &b[0], v)
		dst, a, b = dst[v:], a[v:], b[v:]
	}
	for i := range dst {
		dst[i] = a[i] + b[i]
	}
}

// momentsF32 is Σ (x[i]−c) and Σ (x[i]−c)², accumulated in float32 as
// Hugging Face's norms compute them (Go's part in float64).
func momentsF32(k *kernels, x []float32, c float32) (s, ss float32) {
	if v := vecPart(k, k.moments != nil, len(x)); v > 0 {
		s, ss = k.moments(&x[0], v, c)
		x = x[v:]
	}
	var rs, rss float64
	for _, v := range x {
		d := float64(v - c)
		rs += d
		rss += d * d
	}
	return s + float32(rs), ss + float32(rss)
}

// scaleMulF32 sets dst[i] = (x[i]·s)·w[i].
func scaleMulF32(k *kernels, dst, x, w []float32, s float32) {
	x, w = x[:len(dst)], w[:len(dst)]
	if v := vecPart(k, k.scaleMul != nil, len(dst)); v > 0 {
		k.scaleMul(&dst[0], &x[0], &w[0], v, s)
		dst, x, w = dst[v:], x[v:], w[v:]
	}
	for i := range dst {
		dst[i] = x[i] * s * w[i]
	}
}

// rotateF32 turns each pair (lo[i], hi[i]) by the angle whose cosine and
// sine are cos[i] and sin[i].
func rotateF32(k *kernels, lo, hi, cos, sin []float32) {
	hi, cos, sin = hi[:len(lo)], cos[:len(lo)], sin[:len(lo)]
	if v := vecPart(k, k.rotate != nil, len(lo)); v > 0 {
		k.rotate(&lo[0], &hi[0], &cos[0], &sin[0], v)
		lo, hi, cos, sin = lo[v:], hi[v:], cos[v:], sin[v:]
	}
	for j := range lo {
		a, b := lo[j], hi[j]
		lo[j] = a*cos[j] - b*sin[j]
		hi[j] = b*cos[j] + a*sin[j]
	}
}

// layerNormApplyF32 sets dst[i] = ((x[i]−mean)·r)·w[i] + b[i].
func layerNormApplyF32(k *kernels, dst, x, w, b []float32, mean, r float32) {
	x, w, b = x[:len(dst)], w[:len(dst)], b[:len(dst)]
	if v := vecPart(k, k.layerNormApply != nil, len(dst)); v > 0 {
		k.layerNormApply(&dst[0], &x[0], &w[0], &b[0], v, mean, r)
		dst, x, w, b = dst[v:], x[v:], w[v:], b[v:]
	}
	for i := range dst {
		dst[i] = (x[i]-mean)*r*w[i] + b[i]
	}
}
