// Writes and checks a per-(request, layer, K/V, token, element) pattern through a KV tensor view's virtual address and
// strides. Used by `vattn check cuda` to prove that what the manager maps is where kernels read and write.
typedef unsigned short u16;
typedef unsigned long long u64;

__device__ __forceinline__ u16 kv_pattern(u64 request, int tensor, long long token, int element) {
    u64 h = request * 0x9E3779B97F4A7C15ull ^ ((u64)tensor << 48) ^ ((u64)token << 16) ^ (u64)element;
    h ^= h >> 29; h *= 0xBF58476D1CE4E5B9ull; h ^= h >> 32;
    return (u16)h;
}

// One block per token in [tokenStart, tokenEnd); elements of a token = kvHeads·headDim (contiguous).
extern "C" __global__ void kv_pattern_write(u16 *base, long long slotStride, long long tokenStride, int slot,
                                            long long tokenStart, int tokenElements, u64 request, int tensor) {
    long long token = tokenStart + blockIdx.x;
    u16 *row = base + (long long)slot * slotStride + token * tokenStride;
    for (int e = threadIdx.x; e < tokenElements; e += blockDim.x) row[e] = kv_pattern(request, tensor, token, e);
}

extern "C" __global__ void kv_pattern_check(const u16 *base, long long slotStride, long long tokenStride, int slot,
                                            int tokenElements, u64 request, int tensor, unsigned int *mismatches) {
    long long token = blockIdx.x;
    const u16 *row = base + (long long)slot * slotStride + token * tokenStride;
    unsigned int bad = 0;
    for (int e = threadIdx.x; e < tokenElements; e += blockDim.x) bad += row[e] != kv_pattern(request, tensor, token, e);
    if (bad) atomicAdd(mismatches, bad);
}

// Counts non-zero elements in [base, base + count): reading an unbacked range through the zero page must see zeros.
extern "C" __global__ void count_nonzero(const u16 *base, long long count, unsigned int *nonzero) {
    unsigned int bad = 0;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < count; i += (long long)gridDim.x * blockDim.x)
        bad += base[i] != 0;
    if (bad) atomicAdd(nonzero, bad);
}

// x[i] = x[i]·a + b + i (mod 2^32), i < n: one step of the order-sensitive chain `vattn check cuda` captures in a CUDA
// graph and replays (a reordered, skipped or repeated step changes the result).
extern "C" __global__ void graph_step(unsigned int *x, int n, unsigned int a, unsigned int b) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) x[i] = x[i] * a + b + i;
}
