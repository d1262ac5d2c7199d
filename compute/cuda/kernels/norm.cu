// Norms: one block per row, fp32 sums reduced through shared memory.

extern "C" __global__ void rms_norm(float* dst, const float* x, const float* w, int m, int n, float eps) {
    __shared__ float sh[32];
    int i = blockIdx.x;
    if (i >= m) return;
    const float* xr = x + (i64)i * n;
    float ss = 0.f;
    for (int j = threadIdx.x; j < n; j += blockDim.x) ss += xr[j] * xr[j];
    ss = block_sum(ss, sh);
    float r = rsqrtf(ss / n + eps);
    float* d = dst + (i64)i * n;
    for (int j = threadIdx.x; j < n; j += blockDim.x) d[j] = xr[j] * r * w[j];
}

// add_rms_norm fuses the residual add into the norm: x += res, then
// dst = rmsnorm(x)·w, reading x once for both.
extern "C" __global__ void add_rms_norm(float* dst, float* x, const float* res, const float* w, int m, int n, float eps) {
    __shared__ float sh[32];
    int i = blockIdx.x;
    if (i >= m) return;
    float* xr = x + (i64)i * n;
    const float* rr = res + (i64)i * n;
    float ss = 0.f;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        float v = xr[j] + rr[j];
        xr[j] = v;
        ss += v * v;
    }
    ss = block_sum(ss, sh);
    float r = rsqrtf(ss / n + eps);
    float* d = dst + (i64)i * n;
    for (int j = threadIdx.x; j < n; j += blockDim.x) d[j] = xr[j] * r * w[j];
}

// layer_norm takes the variance about the mean in a second pass (not
// E[x²]-E[x]²), which cancels badly for rows with a large mean.
extern "C" __global__ void layer_norm(float* dst, const float* x, const float* w, const float* b, int m, int n, float eps) {
    __shared__ float sh[32];
    int i = blockIdx.x;
    if (i >= m) return;
    const float* xr = x + (i64)i * n;
    float s = 0.f;
    for (int j = threadIdx.x; j < n; j += blockDim.x) s += xr[j];
    float mean = block_sum(s, sh) / n;
    float ss = 0.f;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        float d = xr[j] - mean;
        ss += d * d;
    }
    float r = rsqrtf(block_sum(ss, sh) / n + eps);
    float* d = dst + (i64)i * n;
    for (int j = threadIdx.x; j < n; j += blockDim.x) d[j] = (xr[j] - mean) * r * w[j] + b[j];
}

// rope rotates row i (heads×hd values) at position pos[i] in place with
// the rotate-half pairing: j pairs with j+hd/2 at frequency inv_freq[j].
// The angle is the float product pos·inv_freq, as Hugging Face computes it.
extern "C" __global__ void rope(float* x, const int* pos, const float* inv_freq, int m, int heads, int hd) {
    int i = blockIdx.x;
    if (i >= m) return;
    int half = hd / 2;
    float p = (float)pos[i];
    float* row = x + (i64)i * heads * hd;
    for (int e = threadIdx.x; e < heads * half; e += blockDim.x) {
        int h = e / half, j = e % half;
        float s, c;
        sincosf(p * inv_freq[j], &s, &c);
        float* v = row + h * hd;
        float a = v[j], b = v[j + half];
        v[j] = a * c - b * s;
        v[j + half] = b * c + a * s;
    }
}
