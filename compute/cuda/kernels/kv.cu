// Paged KV cache: keys and values of every layer in two float arrays laid
// out [layer][block][kv_head][slot][hd], as the CPU backend lays them out,
// so one head's keys of one block are a contiguous matrix. Slot s lives in
// block s/bs at row s%bs.

__device__ __forceinline__ i64 kv_offset(i64 layer_off, int slot, int h, int kv_heads, int hd, int bs) {
    i64 head_stride = (i64)bs * hd;
    return layer_off + (i64)(slot / bs) * kv_heads * head_stride + h * head_stride + (i64)(slot % bs) * hd;
}

// kv_write stores m rows of keys and values (kv_heads×hd each) at slots.
extern "C" __global__ void kv_write(float* kc, float* vc, const float* k, const float* v, const int* slots,
                                    int m, int kv_heads, int hd, int bs, i64 layer_off) {
    int i = blockIdx.x;
    if (i >= m) return;
    int w = kv_heads * hd;
    for (int e = threadIdx.x; e < w; e += blockDim.x) {
        int h = e / hd, d = e % hd;
        i64 o = kv_offset(layer_off, slots[i], h, kv_heads, hd, bs) + d;
        kc[o] = k[(i64)i * w + e];
        vc[o] = v[(i64)i * w + e];
    }
}

// kv_pack copies heads [h0, h0+heads) at n slots into buf laid out
// [2][n][heads][hd] (keys, then values); kv_unpack is the reverse. They
// serve KVRead and KVLoad, which move a request's KV between groups.
extern "C" __global__ void kv_pack(float* buf, const float* kc, const float* vc, const int* slots, int n,
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

extern "C" __global__ void kv_unpack(float* kc, float* vc, const float* buf, const int* slots, int n,
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
