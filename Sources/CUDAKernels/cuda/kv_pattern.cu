// Writes and checks a per-(request, layer, K/V, token, element) pattern through a KV tensor view's virtual address and
// strides. Used by `vattn check cuda` to prove that what the manager maps is where kernels read and write.
#include "kernel_params.h"
typedef unsigned short u16;
typedef unsigned long long u64;

__device__ __forceinline__ u16 kv_pattern(u64 request, int tensor, long long token, int element) {
    u64 h = request * 0x9E3779B97F4A7C15ull ^ ((u64)tensor << 48) ^ ((u64)token << 16) ^ (u64)element;
    h ^= h >> 29; h *= 0xBF58476D1CE4E5B9ull; h ^= h >> 32;
    return (u16)h;
}

// One block per token in [tokenStart, tokenEnd); elements of a token = kvHeads·headDim (contiguous).
extern "C" __global__ void kv_pattern_write(const KVPatternWriteParams p) {
    long long token = p.tokenStart + blockIdx.x;
    u16 *row = (u16 *)p.base + (long long)p.slot * p.slotStride + token * p.tokenStride;
    for (int e = threadIdx.x; e < p.tokenElements; e += blockDim.x) row[e] = kv_pattern(p.request, p.tensor, token, e);
}

extern "C" __global__ void kv_pattern_check(const KVPatternCheckParams p) {
    long long token = blockIdx.x;
    const u16 *row = (const u16 *)p.base + (long long)p.slot * p.slotStride + token * p.tokenStride;
    unsigned int bad = 0;
    for (int e = threadIdx.x; e < p.tokenElements; e += blockDim.x)
        bad += row[e] != kv_pattern(p.request, p.tensor, token, e);
    if (bad) atomicAdd((unsigned int *)p.mismatches, bad);
}

// Counts non-zero elements in [base, base + count): reading an unbacked range through the zero page must see zeros.
extern "C" __global__ void count_nonzero(const CountNonzeroParams p) {
    const u16 *base = (const u16 *)p.base;
    unsigned int bad = 0;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < p.count; i += (long long)gridDim.x * blockDim.x)
        bad += base[i] != 0;
    if (bad) atomicAdd((unsigned int *)p.nonzero, bad);
}

// x[i] = x[i]·a + b + i (mod 2^32), i < n: one step of the order-sensitive chain `vattn check cuda` captures in a CUDA
// graph and replays (a reordered, skipped or repeated step changes the result).
extern "C" __global__ void graph_step(const GraphStepParams p) {
    unsigned int *x = (unsigned int *)p.x;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += gridDim.x * blockDim.x) x[i] = x[i] * p.a + p.b + i;
}
