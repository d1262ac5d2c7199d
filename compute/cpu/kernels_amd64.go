package cpu

import xcpu "golang.org/x/sys/cpu"

//go:generate go run -C internal/asmgen . -out ../../kernels_amd64.s -stubs ../../stubs_amd64.go -pkg cpu

// archKernels lists the assembly kernel sets the CPU supports, widest first.
func archKernels() []*kernels {
	var sets []*kernels
	// Every AVX-512 and AVX2 CPU made has F16C; it is checked all the same.
	if xcpu.X86.HasAVX512F && xcpu.X86.HasAVX512BW && xcpu.X86.HasAVX512VL && xcpu.X86.HasAVX512DQ && xcpu.X86.HasF16C {
		avx512 := avx512Kernels()
		widest := avx512
		if xcpu.X86.HasAVX512BF16 {
			widest = bf16PairsKernels(avx512)
		}
		if xcpu.X86.HasAMXTile && xcpu.X86.HasAMXBF16 && amxPermitted() {
			sets = append(sets, amxKernels(widest))
		}
		if widest != avx512 {
			sets = append(sets, widest)
		}
		sets = append(sets, avx512)
	}
	if xcpu.X86.HasAVX2 && xcpu.X86.HasFMA && xcpu.X86.HasF16C {
		sets = append(sets, avx2Kernels())
	}
	return sets
}

// readAhead is how far ahead of each stream the read probe prefetches:
// four streams read 25–30% faster than one on this project's VMs, and the
// distance matters little (2 KiB was a shade the best of 0–8 KiB).
const readAhead = 2 << 10

func avx512Kernels() *kernels {
	return &kernels{
		name: "avx512", maxM: 8, kStep: 16, dStep: 16, accum: accumAVX512, accumBF16: accumBF16AVX512, accumF16: accumF16AVX512,
		f32:      [maxTileM + 1]tileF32Func{nil, tileF32AVX512M1, tileF32AVX512M2, tileF32AVX512M3, tileF32AVX512M4, tileF32AVX512M5, tileF32AVX512M6, tileF32AVX512M7, tileF32AVX512M8},
		bf16:     [maxTileM + 1]tile16Func{nil, tileBF16AVX512M1, tileBF16AVX512M2, tileBF16AVX512M3, tileBF16AVX512M4, tileBF16AVX512M5, tileBF16AVX512M6, tileBF16AVX512M7, tileBF16AVX512M8},
		f16:      [maxTileM + 1]tile16Func{nil, tileF16AVX512M1, tileF16AVX512M2, tileF16AVX512M3, tileF16AVX512M4, tileF16AVX512M5, tileF16AVX512M6, tileF16AVX512M7, tileF16AVX512M8},
		bandsF32: gemvBandsF32AVX512, bandsBF16: gemvBandsBF16AVX512, bandsF16: gemvBandsF16AVX512,
		rowBandsF32:  [maxTileM + 1]gemvBandsRowsF32Func{nil, nil, gemvBandsF32AVX512M2, gemvBandsF32AVX512M3, gemvBandsF32AVX512M4, gemvBandsF32AVX512M5, gemvBandsF32AVX512M6, gemvBandsF32AVX512M7, gemvBandsF32AVX512M8},
		rowBandsBF16: [maxTileM + 1]gemvBandsRows16Func{nil, nil, gemvBandsBF16AVX512M2, gemvBandsBF16AVX512M3, gemvBandsBF16AVX512M4, gemvBandsBF16AVX512M5, gemvBandsBF16AVX512M6, gemvBandsBF16AVX512M7, gemvBandsBF16AVX512M8},
		rowBandsF16:  [maxTileM + 1]gemvBandsRows16Func{nil, nil, gemvBandsF16AVX512M2, gemvBandsF16AVX512M3, gemvBandsF16AVX512M4, gemvBandsF16AVX512M5, gemvBandsF16AVX512M6, gemvBandsF16AVX512M7, gemvBandsF16AVX512M8},
		gemmM:        12, toBF16: toBF16AVX512, toF16: toF16AVX512, packF32: packF32AVX512, packBF16: packBF16AVX512, packF16: packF16AVX512,
		gemmF32: [maxGemmM + 1]gemmF32Func{nil, gemmF32AVX512M1, gemmF32AVX512M2, gemmF32AVX512M3, gemmF32AVX512M4,
			gemmF32AVX512M5, gemmF32AVX512M6, gemmF32AVX512M7, gemmF32AVX512M8, gemmF32AVX512M9, gemmF32AVX512M10,
			gemmF32AVX512M11, gemmF32AVX512M12},
		gemmBF16: [maxGemmM + 1]gemm16Func{nil, gemmBF16AVX512M1, gemmBF16AVX512M2, gemmBF16AVX512M3, gemmBF16AVX512M4,
			gemmBF16AVX512M5, gemmBF16AVX512M6, gemmBF16AVX512M7, gemmBF16AVX512M8, gemmBF16AVX512M9, gemmBF16AVX512M10,
			gemmBF16AVX512M11, gemmBF16AVX512M12},
		gemmF16: [maxGemmM + 1]gemm16Func{nil, gemmF16AVX512M1, gemmF16AVX512M2, gemmF16AVX512M3, gemmF16AVX512M4,
			gemmF16AVX512M5, gemmF16AVX512M6, gemmF16AVX512M7, gemmF16AVX512M8, gemmF16AVX512M9, gemmF16AVX512M10,
			gemmF16AVX512M11, gemmF16AVX512M12},
		transposed16Min: transposed16MinBytes,
		read:            func(p *byte, n int) { read4AVX512(p, n, readAhead) }, fma: fmaAVX512, lanes: 16, siluMul: siluMulAVX512, gelu: geluAVX512, expSum: expSumAVX512, max: maxAVX512, softmax: softmaxSpanAVX512,
		scale: scaleAVX512, add: addAVX512, moments: momentsAVX512, scaleMul: scaleMulAVX512, layerNormApply: layerNormApplyAVX512, rotate: rotateAVX512, prefetch: prefetchAVX512,
	}
}

// bf16PairsKernels is the AVX-512 set with the AVX512_BF16 kernels of BF16
// matrix products added (see rowBandsBF16Pairs and gemmPairs) and their
// peak's probe.
func bf16PairsKernels(avx512 *kernels) *kernels {
	k := *avx512
	k.name = "avx512bf16"
	k.rowBandsBF16Pairs = [maxTileM + 1]gemvBandsRowsPairsFunc{nil, nil, gemvBandsBF16PairsAVX512M2, gemvBandsBF16PairsAVX512M3, gemvBandsBF16PairsAVX512M4,
		gemvBandsBF16PairsAVX512M5, gemvBandsBF16PairsAVX512M6, gemvBandsBF16PairsAVX512M7, gemvBandsBF16PairsAVX512M8}
	k.pairsPeak = pairsPeakAVX512
	k.gemmPairs = [maxGemmM + 1]gemmPairsFunc{nil, gemmBF16PairsAVX512M1, gemmBF16PairsAVX512M2, gemmBF16PairsAVX512M3,
		gemmBF16PairsAVX512M4, gemmBF16PairsAVX512M5, gemmBF16PairsAVX512M6, gemmBF16PairsAVX512M7, gemmBF16PairsAVX512M8,
		gemmBF16PairsAVX512M9, gemmBF16PairsAVX512M10, gemmBF16PairsAVX512M11, gemmBF16PairsAVX512M12}
	return &k
}

func avx2Kernels() *kernels {
	return &kernels{
		name: "avx2", maxM: 2, kStep: 8, dStep: 8, accum: accumAVX2, accumBF16: accumBF16AVX2, accumF16: accumF16AVX2,
		f32:      [maxTileM + 1]tileF32Func{nil, tileF32AVX2M1, tileF32AVX2M2},
		bf16:     [maxTileM + 1]tile16Func{nil, tileBF16AVX2M1, tileBF16AVX2M2},
		f16:      [maxTileM + 1]tile16Func{nil, tileF16AVX2M1, tileF16AVX2M2},
		bandsF32: gemvBandsF32AVX2, bandsBF16: gemvBandsBF16AVX2, bandsF16: gemvBandsF16AVX2,
		read: func(p *byte, n int) { read4AVX2(p, n, readAhead) }, fma: fmaAVX2, lanes: 8, siluMul: siluMulAVX2, gelu: geluAVX2, expSum: expSumAVX2, max: maxAVX2, softmax: softmaxSpanAVX2,
		scale: scaleAVX2, add: addAVX2, moments: momentsAVX2, scaleMul: scaleMulAVX2, layerNormApply: layerNormApplyAVX2, rotate: rotateAVX2, prefetch: prefetchAVX2,
	}
}
