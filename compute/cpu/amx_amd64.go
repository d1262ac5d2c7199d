package cpu

// amxKernels is the AVX-512 set with the AMX path for BF16 weights added.
func amxKernels(avx512 *kernels) *kernels {
	k := *avx512
	k.name = "amx"
	k.amxBF16 = amxGemmBF16
	k.amxStream = amxStreamBF16
	k.tilePeak = amxPeak
	return &k
}

// amxGemmBF16 is an amxBF16Func: tiles 0-3 hold a 32×32 block of sums,
// 4-5 two 16-row activation tiles and 6-7 the panel's two 16-row halves.
//
//go:noescape
func amxGemmBF16(a *uint16, lda int, p *uint32, pstride, panels, ksteps int, c *float32, ldc, add int)

// amxPeak runs iters×4 independent tile products (see Probe.TileFLOPs).
//
//go:noescape
func amxPeak(iters int)

// amxStreamBF16 multiplies groups of 16 weight rows, read in place, by up
// to 16 activation columns (see amx_amd64.s).
//
//go:noescape
func amxStreamBF16(w *uint16, ldw int, b *uint32, ksteps int, c *float32, groups int)
