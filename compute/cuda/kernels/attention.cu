// Paged causal attention. seqs holds four ints per sequence: first query
// row, query rows, position of the first query row, and the offset of the
// sequence's block table in blocks. A query at position p attends to the
// sequence's keys 0..p. Query head h reads KV head h/(heads/kv_heads).
//
// Scores, the running maximum, the softmax sum and the accumulators are
// all fp32; exp is the accurate expf, never the fast-math intrinsic. Each
// kernel has an fp32-cache and a bf16-cache form (T is float or u16; see
// kv_ld), which differ only in how a key or value element is loaded.

#define MAX_HD 256
#define HD_PER_LANE (MAX_HD / 32)

template <typename T>
__device__ __forceinline__ const T* kv_row(const T* c, const int* bt, int k, int kvh, int kv_heads,
                                           int hd, int bs, i64 layer_off) {
    i64 head_stride = (i64)bs * hd;
    return c + layer_off + (i64)bt[k / bs] * kv_heads * head_stride + kvh * head_stride + (i64)(k % bs) * hd;
}

#define DEC_WARPS 4

// attn_decode: one block of DEC_WARPS warps per (query row, head, split).
// work holds (sequence, row within it) per query row. Split sp of splits
// covers an equal share of the row's keys (split-K: a long context spreads
// over many blocks even for a batch of one); each warp walks every
// DEC_WARPS-th key of the share with an online softmax, lanes across the
// head dimension so loads coalesce. The warps merge in shared memory; with
// one split the block writes the output, otherwise (max, sum, acc[hd]) to
// part for attn_combine.
template <typename T>
__device__ __forceinline__ void attn_decode_t(float* out, float* part, const float* q, const T* kc, const T* vc,
                                              const int* seqs, const int* blocks, const int* work, int heads,
                                              int kv_heads, int hd, int bs, i64 layer_off, float scale, int splits) {
    __shared__ float s_acc[DEC_WARPS][MAX_HD];
    __shared__ float s_m[DEC_WARPS], s_l[DEC_WARPS];
    int item = blockIdx.x, h = blockIdx.y, sp = blockIdx.z;
    int si = work[2 * item], r = work[2 * item + 1];
    const int* sq = seqs + 4 * si;
    int qrow = sq[0] + r, len = sq[2] + r + 1;
    const int* bt = blocks + sq[3];
    int per = (len + splits - 1) / splits;
    int k0 = sp * per, k1 = min(len, k0 + per);
    int kvh = h / (heads / kv_heads);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;

    const float* qr = q + ((i64)qrow * heads + h) * hd;
    float qv[HD_PER_LANE], acc[HD_PER_LANE];
#pragma unroll
    for (int t = 0; t < HD_PER_LANE; t++) {
        int d = lane + 32 * t;
        qv[t] = d < hd ? qr[d] * scale : 0.f;
        acc[t] = 0.f;
    }
    float m = NEG_INF, l = 0.f;
    for (int k = k0 + w; k < k1; k += DEC_WARPS) {
        const T* kr = kv_row(kc, bt, k, kvh, kv_heads, hd, bs, layer_off);
        const T* vr = kv_row(vc, bt, k, kvh, kv_heads, hd, bs, layer_off);
        float s = 0.f;
#pragma unroll
        for (int t = 0; t < HD_PER_LANE; t++) {
            int d = lane + 32 * t;
            if (d < hd) s += qv[t] * kv_ld(kr, d);
        }
        s = warp_sum(s);
        float mn = fmaxf(m, s);
        float corr = expf(m - mn); // 0 on the first key, where m is -inf
        float p = expf(s - mn);
        l = l * corr + p;
        m = mn;
#pragma unroll
        for (int t = 0; t < HD_PER_LANE; t++) {
            int d = lane + 32 * t;
            if (d < hd) acc[t] = acc[t] * corr + p * kv_ld(vr, d);
        }
    }
    if (lane == 0) {
        s_m[w] = m;
        s_l[w] = l;
    }
#pragma unroll
    for (int t = 0; t < HD_PER_LANE; t++) {
        int d = lane + 32 * t;
        if (d < hd) s_acc[w][d] = acc[t];
    }
    __syncthreads();
    float M = NEG_INF;
    for (int i = 0; i < DEC_WARPS; i++) M = fmaxf(M, s_m[i]);
    float L = 0.f;
    for (int i = 0; i < DEC_WARPS; i++)
        if (s_m[i] != NEG_INF) L += s_l[i] * expf(s_m[i] - M);
    if (splits == 1) {
        float* o = out + ((i64)qrow * heads + h) * hd;
        for (int d = threadIdx.x; d < hd; d += blockDim.x) {
            float a = 0.f;
            for (int i = 0; i < DEC_WARPS; i++)
                if (s_m[i] != NEG_INF) a += s_acc[i][d] * expf(s_m[i] - M);
            o[d] = a / L;
        }
        return;
    }
    // An empty share (short row, many splits) leaves M at -inf and L at 0;
    // attn_combine gives it no weight.
    float* pp = part + (((i64)item * heads + h) * splits + sp) * (hd + 2);
    if (threadIdx.x == 0) {
        pp[0] = M;
        pp[1] = L;
    }
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float a = 0.f;
        for (int i = 0; i < DEC_WARPS; i++)
            if (s_m[i] != NEG_INF) a += s_acc[i][d] * expf(s_m[i] - M);
        pp[2 + d] = a;
    }
}

extern "C" __global__ void attn_decode(float* out, float* part, const float* q, const float* kc, const float* vc,
                                       const int* seqs, const int* blocks, const int* work, int heads,
                                       int kv_heads, int hd, int bs, i64 layer_off, float scale, int splits) {
    attn_decode_t(out, part, q, kc, vc, seqs, blocks, work, heads, kv_heads, hd, bs, layer_off, scale, splits);
}

extern "C" __global__ void attn_decode_bf16(float* out, float* part, const float* q, const u16* kc, const u16* vc,
                                            const int* seqs, const int* blocks, const int* work, int heads,
                                            int kv_heads, int hd, int bs, i64 layer_off, float scale, int splits) {
    attn_decode_t(out, part, q, kc, vc, seqs, blocks, work, heads, kv_heads, hd, bs, layer_off, scale, splits);
}

// attn_combine merges the splits of attn_decode: one block per (query
// row, head). Split 0 always holds key 0, so M is finite.
extern "C" __global__ void attn_combine(float* out, const float* part, const int* seqs, const int* work,
                                        int heads, int hd, int splits) {
    int item = blockIdx.x, h = blockIdx.y;
    int si = work[2 * item], r = work[2 * item + 1];
    int qrow = seqs[4 * si] + r;
    const float* pp = part + ((i64)item * heads + h) * splits * (hd + 2);
    float M = NEG_INF;
    for (int s = 0; s < splits; s++) M = fmaxf(M, pp[s * (hd + 2)]);
    float L = 0.f;
    for (int s = 0; s < splits; s++) {
        float ms = pp[s * (hd + 2)];
        if (ms != NEG_INF) L += pp[s * (hd + 2) + 1] * expf(ms - M);
    }
    float* o = out + ((i64)qrow * heads + h) * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float a = 0.f;
        for (int s = 0; s < splits; s++) {
            float ms = pp[s * (hd + 2)];
            if (ms != NEG_INF) a += pp[s * (hd + 2) + 2 + d] * expf(ms - M);
        }
        o[d] = a / L;
    }
}

#define PF_BQ 16  // query rows per block
#define PF_BK 32  // keys per tile: one per lane
#define PF_QPW 4  // query rows per warp (PF_BQ / 4 warps)

// attn_prefill is tiled, flash-attention style: a block of 4 warps takes
// PF_BQ consecutive query rows of one sequence and one head (work holds
// (sequence, first row) per tile) and walks the keys PF_BK at a time,
// staging each key and value tile in shared memory once for all its
// queries. Per query a warp scores the tile (lane j: key j), updates the
// online softmax with warp shuffles, and accumulates p·v with lanes across
// the head dimension. Dynamic shared memory: PF_BQ·hd queries,
// PF_BK·(hd+1) keys (padded so lanes reading different keys hit different
// banks) and PF_BK·hd values.
template <typename T>
__device__ __forceinline__ void attn_prefill_t(float* out, const float* q, const T* kc, const T* vc,
                                               const int* seqs, const int* blocks, const int* work, int heads,
                                               int kv_heads, int hd, int bs, i64 layer_off, float scale) {
    extern __shared__ float smem[];
    float* qs = smem;
    float* ks = qs + PF_BQ * hd;
    float* vs = ks + PF_BK * (hd + 1);
    int tile = blockIdx.x, h = blockIdx.y;
    int si = work[2 * tile], r0 = work[2 * tile + 1];
    const int* sq = seqs + 4 * si;
    int qrow0 = sq[0] + r0, pos0 = sq[2] + r0;
    int nq = min(PF_BQ, sq[1] - r0);
    const int* bt = blocks + sq[3];
    int kvh = h / (heads / kv_heads);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;

    for (int e = threadIdx.x; e < PF_BQ * hd; e += blockDim.x) {
        int r = e / hd, d = e % hd;
        qs[e] = r < nq ? q[((i64)(qrow0 + r) * heads + h) * hd + d] * scale : 0.f;
    }
    float m[PF_QPW], l[PF_QPW], acc[PF_QPW][HD_PER_LANE];
#pragma unroll
    for (int i = 0; i < PF_QPW; i++) {
        m[i] = NEG_INF;
        l[i] = 0.f;
#pragma unroll
        for (int t = 0; t < HD_PER_LANE; t++) acc[i][t] = 0.f;
    }
    int last = pos0 + nq - 1; // the last key any query of the tile reads
    for (int k0 = 0; k0 <= last; k0 += PF_BK) {
        __syncthreads(); // the previous tile is consumed (and qs written, on the first pass)
        for (int e = threadIdx.x; e < PF_BK * hd; e += blockDim.x) {
            int j = e / hd, d = e % hd, k = k0 + j;
            float kv = 0.f, vv = 0.f;
            if (k <= last) {
                kv = kv_ld(kv_row(kc, bt, k, kvh, kv_heads, hd, bs, layer_off), d);
                vv = kv_ld(kv_row(vc, bt, k, kvh, kv_heads, hd, bs, layer_off), d);
            }
            ks[j * (hd + 1) + d] = kv;
            vs[j * hd + d] = vv;
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < PF_QPW; i++) {
            int r = w * PF_QPW + i;
            int qpos = pos0 + r;
            // Both conditions are the same for the whole warp.
            if (r >= nq || k0 > qpos) continue;
            int k = k0 + lane;
            float s = NEG_INF;
            if (k <= qpos) {
                const float* qq = qs + r * hd;
                const float* kk = ks + lane * (hd + 1);
                float a = 0.f;
                for (int d = 0; d < hd; d++) a += qq[d] * kk[d];
                s = a;
            }
            float mn = fmaxf(m[i], warp_max(s));
            float p = k <= qpos ? expf(s - mn) : 0.f;
            float corr = expf(m[i] - mn);
            l[i] = l[i] * corr + warp_sum(p);
            m[i] = mn;
#pragma unroll
            for (int t = 0; t < HD_PER_LANE; t++) acc[i][t] *= corr;
            int nk = min(PF_BK, qpos - k0 + 1);
            for (int j = 0; j < nk; j++) {
                float pj = __shfl_sync(0xffffffffu, p, j);
                const float* vr = vs + j * hd;
#pragma unroll
                for (int t = 0; t < HD_PER_LANE; t++) {
                    int d = lane + 32 * t;
                    if (d < hd) acc[i][t] += pj * vr[d];
                }
            }
        }
    }
#pragma unroll
    for (int i = 0; i < PF_QPW; i++) {
        int r = w * PF_QPW + i;
        if (r >= nq) continue;
        float* o = out + ((i64)(qrow0 + r) * heads + h) * hd;
#pragma unroll
        for (int t = 0; t < HD_PER_LANE; t++) {
            int d = lane + 32 * t;
            if (d < hd) o[d] = acc[i][t] / l[i];
        }
    }
}

extern "C" __global__ void attn_prefill(float* out, const float* q, const float* kc, const float* vc,
                                        const int* seqs, const int* blocks, const int* work, int heads,
                                        int kv_heads, int hd, int bs, i64 layer_off, float scale) {
    attn_prefill_t(out, q, kc, vc, seqs, blocks, work, heads, kv_heads, hd, bs, layer_off, scale);
}

extern "C" __global__ void attn_prefill_bf16(float* out, const float* q, const u16* kc, const u16* vc,
                                             const int* seqs, const int* blocks, const int* work, int heads,
                                             int kv_heads, int hd, int bs, i64 layer_off, float scale) {
    attn_prefill_t(out, q, kc, vc, seqs, blocks, work, heads, kv_heads, hd, bs, layer_off, scale);
}
