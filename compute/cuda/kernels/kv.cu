// Paged KV cache: keys and values of every layer in two arrays laid out
// [layer][block][kv_head][slot][hd], as the CPU backend lays them out,
// so one head's keys of one block are a contiguous matrix. Slot s lives in
// block s/bs at row s%bs. Elements are float (the *_f32 kernels) or
// bfloat16 bit patterns (the *_bf16 kernels): written rounded to nearest
// even, read widened exactly, so everything computed from them is fp32.

__device__ __forceinline__ i64 kv_offset(i64 layer_off, int slot, int h, int kv_heads, int hd, int bs) {
    i64 head_stride = (i64)bs * hd;
    return layer_off + (i64)(slot / bs) * kv_heads * head_stride + h * head_stride + (i64)(slot % bs) * hd;
}

// kv_ld reads element i of a cache array as float; kv_st stores one.
__device__ __forceinline__ float kv_ld(const float* c, i64 i) { return c[i]; }
__device__ __forceinline__ float kv_ld(const u16* c, i64 i) { return bf16_to_f32(c[i]); }
__device__ __forceinline__ void kv_st(float* c, i64 i, float x) { c[i] = x; }
__device__ __forceinline__ void kv_st(u16* c, i64 i, float x) { c[i] = f32_to_bf16(x); }

// kv_write stores m rows of keys and values (kv_heads×hd each) at slots.
template <typename T>
__device__ __forceinline__ void kv_write_t(T* kc, T* vc, const float* k, const float* v, const int* slots,
                                           int m, int kv_heads, int hd, int bs, i64 layer_off) {
    int i = blockIdx.x;
    if (i >= m) return;
    int w = kv_heads * hd;
    for (int e = threadIdx.x; e < w; e += blockDim.x) {
        int h = e / hd, d = e % hd;
        i64 o = kv_offset(layer_off, slots[i], h, kv_heads, hd, bs) + d;
        kv_st(kc, o, k[(i64)i * w + e]);
        kv_st(vc, o, v[(i64)i * w + e]);
    }
}

extern "C" __global__ void kv_write(float* kc, float* vc, const float* k, const float* v, const int* slots,
                                    int m, int kv_heads, int hd, int bs, i64 layer_off) {
    kv_write_t(kc, vc, k, v, slots, m, kv_heads, hd, bs, layer_off);
}

extern "C" __global__ void kv_write_bf16(u16* kc, u16* vc, const float* k, const float* v, const int* slots,
                                         int m, int kv_heads, int hd, int bs, i64 layer_off) {
    kv_write_t(kc, vc, k, v, slots, m, kv_heads, hd, bs, layer_off);
}

// kv_pack copies heads [h0, h0+heads) at n slots into buf laid out
// [2][n][heads][hd] (keys, then values), in the cache's own element type;
// kv_unpack is the reverse. They serve KVRead and KVLoad, which move a
// request's KV between groups.
template <typename T>
__device__ __forceinline__ void kv_pack_t(T* buf, const T* kc, const T* vc, const int* slots, int n,
                                          int h0, int heads, int kv_heads, int hd, int bs, i64 layer_off) {
    int i = blockIdx.x;
    if (i >= n) return;
    i64 half = (i64)n * heads * hd;
    for (int e = threadIdx.x; e < heads * hd; e += blockDim.x) {
        int h = e / hd, d = e % hd;
        i64 o = kv_offset(layer_off, slots[i], h0 + h, kv_heads, hd, bs) + d;
        i64 b = (i64)i * heads * hd + e;
        buf[b] = kc[o];
        buf[half + b] = vc[o];
    }
}

template <typename T>
__device__ __forceinline__ void kv_unpack_t(T* kc, T* vc, const T* buf, const int* slots, int n,
                                            int h0, int heads, int kv_heads, int hd, int bs, i64 layer_off) {
    int i = blockIdx.x;
    if (i >= n) return;
    i64 half = (i64)n * heads * hd;
    for (int e = threadIdx.x; e < heads * hd; e += blockDim.x) {
        int h = e / hd, d = e % hd;
        i64 o = kv_offset(layer_off, slots[i], h0 + h, kv_heads, hd, bs) + d;
        i64 b = (i64)i * heads * hd + e;
        kc[o] = buf[b];
        vc[o] = buf[half + b];
    }
}

extern "C" __global__ void kv_pack(float* buf, const float* kc, const float* vc, const int* slots, int n,
                                   int h0, int heads, int kv_heads, int hd, int bs, i64 layer_off) {
    kv_pack_t(buf, kc, vc, slots, n, h0, heads, kv_heads, hd, bs, layer_off);
}

extern "C" __global__ void kv_unpack(float* kc, float* vc, const float* buf, const int* slots, int n,
                                     int h0, int heads, int kv_heads, int hd, int bs, i64 layer_off) {
    kv_unpack_t(kc, vc, buf, slots, n, h0, heads, kv_heads, hd, bs, layer_off);
}

extern "C" __global__ void kv_pack_bf16(u16* buf, const u16* kc, const u16* vc, const int* slots, int n,
                                        int h0, int heads, int kv_heads, int hd, int bs, i64 layer_off) {
    kv_pack_t(buf, kc, vc, slots, n, h0, heads, kv_heads, hd, bs, layer_off);
}

extern "C" __global__ void kv_unpack_bf16(u16* kc, u16* vc, const u16* buf, const int* slots, int n,
                                          int h0, int heads, int kv_heads, int hd, int bs, i64 layer_off) {
    kv_unpack_t(kc, vc, buf, slots, n, h0, heads, kv_heads, hd, bs, layer_off);
}
