// Sampling on the GPU, one block per row of logits, so only the chosen
// token ids cross to the host.

// argmax_rows: the index of each row's largest logit; ties go to the
// lowest index.
extern "C" __global__ void argmax_rows(int* out, const float* logits, int m, int n) {
    __shared__ float sv[32];
    __shared__ int si[32];
    int i = blockIdx.x;
    if (i >= m) return;
    const float* x = logits + (i64)i * n;
    float bv = NEG_INF;
    int bi = n; // larger than any index, so a real one wins a tie
    for (int j = threadIdx.x; j < n; j += blockDim.x)
        if (x[j] > bv) bv = x[j], bi = j; // j grows, so the first maximum stays
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
    }
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (lane == 0) sv[w] = bv, si[w] = bi;
    __syncthreads();
    if (threadIdx.x == 0) {
        int nw = (blockDim.x + 31) >> 5;
        for (int k = 1; k < nw; k++)
            if (sv[k] > bv || (sv[k] == bv && si[k] < bi)) bv = sv[k], bi = si[k];
        // A row of NaN or -inf only: say token 0 rather than n.
        out[i] = bi < n ? bi : 0;
    }
}

// sample_rows draws from softmax(logits/temp) by inverse CDF with the
// uniform u in [0,1) the host drew for the row (so runs are reproducible
// from the host's seed); temp <= 0 means greedy. Each thread owns one
// contiguous chunk; thread 0 scans the chunk sums, and the thread whose
// chunk holds u·total scans its chunk.
#define SAMPLE_THREADS 256
extern "C" __global__ void sample_rows(int* out, const float* logits, const float* temps, const float* us, int m, int n) {
    __shared__ float sh[32];
    __shared__ float pre[SAMPLE_THREADS];
    int i = blockIdx.x;
    if (i >= m) return;
    const float* x = logits + (i64)i * n;
    float mx = NEG_INF;
    int arg = n;
    for (int j = threadIdx.x; j < n; j += blockDim.x)
        if (x[j] > mx) mx = x[j], arg = j;
    float bmx = block_max(mx, sh);
    // The greedy answer: the lowest index holding the maximum.
    int cand = mx == bmx ? arg : n;
    for (int o = 16; o > 0; o >>= 1) cand = min(cand, __shfl_xor_sync(0xffffffffu, cand, o));
    __shared__ int sarg[32];
    if ((threadIdx.x & 31) == 0) sarg[threadIdx.x >> 5] = cand;
    __syncthreads();
    if (threadIdx.x == 0) {
        int nw = (blockDim.x + 31) >> 5, best = n;
        for (int k = 0; k < nw; k++) best = min(best, sarg[k]);
        out[i] = best < n ? best : 0;
    }
    float t = temps[i];
    if (t <= 0.f) return;
    int chunk = (n + blockDim.x - 1) / blockDim.x;
    int c0 = min(n, (int)threadIdx.x * chunk), c1 = min(n, c0 + chunk);
    float s = 0.f;
    for (int j = c0; j < c1; j++) s += expf((x[j] - bmx) / t);
    pre[threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        float acc = 0.f;
        for (int k = 0; k < (int)blockDim.x; k++) {
            float v = pre[k];
            pre[k] = acc;
            acc += v;
        }
        sh[0] = acc;
    }
    __syncthreads();
    float target = us[i] * sh[0];
    float lo = pre[threadIdx.x];
    if (s > 0.f && lo <= target && target < lo + s) {
        float acc = lo;
        int pick = c1 - 1;
        for (int j = c0; j < c1; j++) {
            acc += expf((x[j] - bmx) / t);
            if (target < acc) {
                pick = j;
                break;
            }
        }
        out[i] = pick;
    }
}
