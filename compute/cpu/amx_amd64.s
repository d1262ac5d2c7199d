#include "textflag.h"

// The AMX path's tile kernel, written by hand: the Go assembler (and so
// the generator in internal/asmgen) does not know the AMX instructions.

// AMX instructions, which the Go assembler does not know, as bytes
// (VEX-encoded, Intel SDM vol. 2; only the registers used below).
#define LDTILECFG_DI     BYTE $0xC4; BYTE $0xE2; BYTE $0x78; BYTE $0x49; BYTE $0x07
#define TILERELEASE      BYTE $0xC4; BYTE $0xE2; BYTE $0x78; BYTE $0x49; BYTE $0xC0
#define TILEZERO_T0      BYTE $0xC4; BYTE $0xE2; BYTE $0x7B; BYTE $0x49; BYTE $0xC0
#define TILEZERO_T1      BYTE $0xC4; BYTE $0xE2; BYTE $0x7B; BYTE $0x49; BYTE $0xC8
#define TILEZERO_T2      BYTE $0xC4; BYTE $0xE2; BYTE $0x7B; BYTE $0x49; BYTE $0xD0
#define TILEZERO_T3      BYTE $0xC4; BYTE $0xE2; BYTE $0x7B; BYTE $0x49; BYTE $0xD8
// TILELOADD tmm, [base + index*1 (+ disp8)]
#define TILELOADD_T4_SI_DX   BYTE $0xC4; BYTE $0xE2; BYTE $0x7B; BYTE $0x4B; BYTE $0x24; BYTE $0x16
#define TILELOADD_T5_DI_DX   BYTE $0xC4; BYTE $0xE2; BYTE $0x7B; BYTE $0x4B; BYTE $0x2C; BYTE $0x17
#define TILELOADD_T6_BX_CX   BYTE $0xC4; BYTE $0xE2; BYTE $0x7B; BYTE $0x4B; BYTE $0x34; BYTE $0x0B
#define TILELOADD_T7_64BX_CX BYTE $0xC4; BYTE $0xE2; BYTE $0x7B; BYTE $0x4B; BYTE $0x7C; BYTE $0x0B; BYTE $0x40
// TDPBF16PS tmm_dst, tmm_a, tmm_b
#define TDPBF16PS_T0_T4_T6 BYTE $0xC4; BYTE $0xE2; BYTE $0x4A; BYTE $0x5C; BYTE $0xC4
#define TDPBF16PS_T1_T4_T7 BYTE $0xC4; BYTE $0xE2; BYTE $0x42; BYTE $0x5C; BYTE $0xCC
#define TDPBF16PS_T2_T5_T6 BYTE $0xC4; BYTE $0xE2; BYTE $0x4A; BYTE $0x5C; BYTE $0xD5
#define TDPBF16PS_T3_T5_T7 BYTE $0xC4; BYTE $0xE2; BYTE $0x42; BYTE $0x5C; BYTE $0xDD
// TILESTORED [AX + DX*1 (+ disp8)], tmm
#define TILESTORED_AX_DX_T0   BYTE $0xC4; BYTE $0xE2; BYTE $0x7A; BYTE $0x4B; BYTE $0x04; BYTE $0x10
#define TILESTORED_64AX_DX_T1 BYTE $0xC4; BYTE $0xE2; BYTE $0x7A; BYTE $0x4B; BYTE $0x4C; BYTE $0x10; BYTE $0x40
#define TILESTORED_AX_DX_T2   BYTE $0xC4; BYTE $0xE2; BYTE $0x7A; BYTE $0x4B; BYTE $0x14; BYTE $0x10
#define TILESTORED_64AX_DX_T3 BYTE $0xC4; BYTE $0xE2; BYTE $0x7A; BYTE $0x4B; BYTE $0x5C; BYTE $0x10; BYTE $0x40

// The tile configuration: palette 1, tiles 0-7 of 16 rows of 64 bytes
// (16 float32 sums, or 32 bfloat16, or 16 pairs of bfloat16).
DATA amxTileCfg<>+0(SB)/8, $1
DATA amxTileCfg<>+8(SB)/8, $0
DATA amxTileCfg<>+16(SB)/8, $0x0040004000400040
DATA amxTileCfg<>+24(SB)/8, $0x0040004000400040
DATA amxTileCfg<>+32(SB)/8, $0
DATA amxTileCfg<>+40(SB)/8, $0
DATA amxTileCfg<>+48(SB)/8, $0x1010101010101010
DATA amxTileCfg<>+56(SB)/8, $0
GLOBL amxTileCfg<>(SB), RODATA|NOPTR, $64

// TILELOADD tmm0-3, [AX + DX*1 (+ 64)]: a block of sums to add to.
#define TILELOADD_T0_AX_DX   BYTE $0xC4; BYTE $0xE2; BYTE $0x7B; BYTE $0x4B; BYTE $0x04; BYTE $0x10
#define TILELOADD_T1_64AX_DX BYTE $0xC4; BYTE $0xE2; BYTE $0x7B; BYTE $0x4B; BYTE $0x4C; BYTE $0x10; BYTE $0x40
#define TILELOADD_T2_AX_DX   BYTE $0xC4; BYTE $0xE2; BYTE $0x7B; BYTE $0x4B; BYTE $0x14; BYTE $0x10
#define TILELOADD_T3_64AX_DX BYTE $0xC4; BYTE $0xE2; BYTE $0x7B; BYTE $0x4B; BYTE $0x5C; BYTE $0x10; BYTE $0x40

// func amxGemmBF16(a *uint16, lda int, p *uint32, pstride int, panels int, ksteps int, c *float32, ldc int, add int)
//
// For each panel q: c[i][32q+j] = Σ_k a[i][k]·w_q[j][k] for i, j < 32 and
// k < 32·ksteps (panels, ksteps ≥ 1; added to c when add ≠ 0), where a's rows are lda bytes
// apart and panel q, at p + q·pstride bytes, holds w_q's pairs of
// bfloat16 as packF32 lays out float32s: pair kp of row j at dword kp·32
// + j. Each step of 32 k loads two 16-row activation tiles and the
// panel's two halves (16 pairs × 16 rows each, rows 128 bytes apart) and
// makes four tile products.
TEXT ·amxGemmBF16(SB), NOSPLIT, $0-72
	LEAQ amxTileCfg<>(SB), DI
	LDTILECFG_DI
	MOVQ p+16(FP), R10
	MOVQ $128, CX
	MOVQ panels+32(FP), R12
	MOVQ c+48(FP), R13

panel:
	MOVQ add+64(FP), R9
	TESTQ R9, R9
	JNZ  load
	TILEZERO_T0
	TILEZERO_T1
	TILEZERO_T2
	TILEZERO_T3
	JMP  sums

load:
	MOVQ R13, AX
	MOVQ ldc+56(FP), DX
	TILELOADD_T0_AX_DX
	TILELOADD_T1_64AX_DX
	MOVQ DX, R9
	SHLQ $4, R9
	ADDQ R9, AX
	TILELOADD_T2_AX_DX
	TILELOADD_T3_64AX_DX

sums:
	MOVQ R10, BX
	MOVQ a+0(FP), SI
	MOVQ lda+8(FP), DX
	MOVQ DX, DI
	SHLQ $4, DI
	ADDQ SI, DI
	MOVQ ksteps+40(FP), R8

kstep:
	TILELOADD_T4_SI_DX
	TILELOADD_T6_BX_CX
	TILELOADD_T7_64BX_CX
	TILELOADD_T5_DI_DX
	TDPBF16PS_T0_T4_T6
	TDPBF16PS_T1_T4_T7
	TDPBF16PS_T2_T5_T6
	TDPBF16PS_T3_T5_T7
	ADDQ $64, SI
	ADDQ $64, DI
	ADDQ $2048, BX
	DECQ R8
	JNZ  kstep

	MOVQ R13, AX
	MOVQ ldc+56(FP), DX
	TILESTORED_AX_DX_T0
	TILESTORED_64AX_DX_T1
	MOVQ DX, R9
	SHLQ $4, R9
	ADDQ R9, AX
	TILESTORED_AX_DX_T2
	TILESTORED_64AX_DX_T3
	ADDQ $128, R13
	ADDQ pstride+24(FP), R10
	DECQ R12
	JNZ  panel

	TILERELEASE
	RET

// func amxPeak(iters int)
//
// iters×4 independent tile products on tiles that LDTILECFG zeroed: the
// machine's peak for them, with no loads (see Probe.TileFLOPs).
TEXT ·amxPeak(SB), NOSPLIT, $0-8
	LEAQ amxTileCfg<>(SB), DI
	LDTILECFG_DI
	MOVQ iters+0(FP), R8

peakloop:
	TDPBF16PS_T0_T4_T6
	TDPBF16PS_T1_T4_T7
	TDPBF16PS_T2_T5_T6
	TDPBF16PS_T3_T5_T7
	DECQ R8
	JNZ  peakloop

	TILERELEASE
	RET

// Weight-streaming forms: weight rows as the A tiles, read in place.
#define TILELOADD_T6_R8_R9   BYTE $0xC4; BYTE $0x82; BYTE $0x7B; BYTE $0x4B; BYTE $0x34; BYTE $0x08
#define TILESTORED_R10_R9_T0 BYTE $0xC4; BYTE $0x82; BYTE $0x7A; BYTE $0x4B; BYTE $0x04; BYTE $0x0A

// Four rows' lines at CX, rows DX bytes apart, into L2; CX moves on.
#define PREFETCH_4ROWS PREFETCHT1 (CX); ADDQ DX, CX; PREFETCHT1 (CX); ADDQ DX, CX; PREFETCHT1 (CX); ADDQ DX, CX; PREFETCHT1 (CX); ADDQ DX, CX

// func amxStreamBF16(w *uint16, ldw int, b *uint32, ksteps int, c *float32, groups int)
//
// For each group g of 16 weight rows at w + 16g·ldw bytes (rows ldw bytes
// apart): c[(16g + r)·16 + i] = Σ_k w[16g + r][k]·x[i][k] for r, i < 16
// and k < 32·ksteps (ksteps, groups ≥ 1), where b holds x's bfloat16
// pairs 16 columns wide: step s, pair kp, column i at dword (16s + kp)·16
// + i. The weights are the A tiles, read in place one 16-row group at a
// time, the next group's rows prefetched into L2 a column a step (3–6%
// more tokens/s at batch 8 than none; prefetching each row's own next
// lines into L1 measured no faster); the output is transposed. One
// accumulator: two, taking alternate steps, measured no faster.
TEXT ·amxStreamBF16(SB), NOSPLIT, $0-48
	LEAQ amxTileCfg<>(SB), DI
	LDTILECFG_DI
	MOVQ w+0(FP), R13
	MOVQ ldw+8(FP), DX
	MOVQ $64, R9
	MOVQ c+32(FP), R10
	MOVQ groups+40(FP), R12
	MOVQ DX, AX
	SHLQ $4, AX

group:
	TILEZERO_T0
	MOVQ R13, SI
	MOVQ b+16(FP), R8
	MOVQ ksteps+24(FP), R11

sstep:
	// The next group's same column, into L2, as the tile kernels prefetch
	// their next tile (prefetches never fault past the matrix's end).
	LEAQ (SI)(AX*1), CX
	PREFETCH_4ROWS
	PREFETCH_4ROWS
	PREFETCH_4ROWS
	PREFETCH_4ROWS
	TILELOADD_T6_R8_R9
	TILELOADD_T4_SI_DX
	TDPBF16PS_T0_T4_T6
	ADDQ $64, SI
	ADDQ $1024, R8
	DECQ R11
	JNZ  sstep

	TILESTORED_R10_R9_T0
	ADDQ $1024, R10
	ADDQ AX, R13
	DECQ R12
	JNZ  group

	TILERELEASE
	RET
