// Elementwise and row-copy kernels. Elementwise kernels use a grid-stride
// loop so any n runs with a bounded grid; row kernels take one block per
// row (blockIdx.x) and stride over the row's columns.

extern "C" __global__ void embed_f32(float* dst, const float* w, const int* ids, int rows, int cols) {
    int i = blockIdx.x;
    if (i >= rows) return;
    const float* src = w + (i64)ids[i] * cols;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) dst[(i64)i * cols + j] = src[j];
}

extern "C" __global__ void embed_bf16(float* dst, const u16* w, const int* ids, int rows, int cols) {
    int i = blockIdx.x;
    if (i >= rows) return;
    const u16* src = w + (i64)ids[i] * cols;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) dst[(i64)i * cols + j] = bf16_to_f32(src[j]);
}

extern "C" __global__ void embed_f16(float* dst, const u16* w, const int* ids, int rows, int cols) {
    int i = blockIdx.x;
    if (i >= rows) return;
    const u16* src = w + (i64)ids[i] * cols;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) dst[(i64)i * cols + j] = f16_to_f32(src[j]);
}

extern "C" __global__ void gather_rows(float* dst, const float* src, const int* rows, int m, int n) {
    int i = blockIdx.x;
    if (i >= m) return;
    const float* s = src + (i64)rows[i] * n;
    for (int j = threadIdx.x; j < n; j += blockDim.x) dst[(i64)i * n + j] = s[j];
}

extern "C" __global__ void add_bias(float* x, const float* bias, int m, int n) {
    i64 total = (i64)m * n;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x)
        x[i] += bias[i % n];
}

extern "C" __global__ void add_f32(float* dst, const float* a, const float* b, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        dst[i] = a[i] + b[i];
}

extern "C" __global__ void silu_mul(float* dst, const float* gate, const float* up, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        float g = gate[i];
        dst[i] = g / (1.f + expf(-g)) * up[i];
    }
}

// gelu_tanh is GPT-2's gelu_new, ½x(1+tanh u) with u = √(2/π)(x+0.044715x³),
// written x·σ(2u) as the CPU backend does.
extern "C" __global__ void gelu_tanh(float* x, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        float v = x[i];
        float u = 0.7978845608028654f * v * (1.f + 0.044715f * v * v);
        x[i] = v / (1.f + expf(-2.f * u));
    }
}

// to_bf16 and to_f16 narrow activations for cuBLAS, whose mixed GEMMs take
// both inputs in one 16-bit type and accumulate in fp32.
extern "C" __global__ void to_bf16(u16* dst, const float* src, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        dst[i] = f32_to_bf16(src[i]);
}

extern "C" __global__ void to_f16(u16* dst, const float* src, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        dst[i] = f32_to_f16(src[i]);
}
