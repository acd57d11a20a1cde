// The Llama forward's small kernels on the GPU (GEMMs are cuBLAS, attention is decode_attention.cu and
// prefill_attention.cu): embedding gather, residual add + RMSNorm, RoPE fused with the KV-cache append, SiLU·mul,
// row gather, sampling, and the seeded dummy-weight generator. CPU twins: Sources/Engine/LlamaCPU.swift, Sampler.swift,
// Sources/Model (DummyWeights). No CUDA headers: bf16 is a raw 16-bit pattern. Each kernel takes one struct of
// kernel_params.h (the layout Swift fills) and names its fields as locals first.
#include "kernel_params.h"

typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;
typedef unsigned long long u64;

__device__ __forceinline__ float bf16_load(u16 x) { return __uint_as_float(((u32)x) << 16); }
__device__ __forceinline__ u16 bf16_store(float f) {
    u16 r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
    return r;
}

// Sum over the block (blockDim.x a multiple of 32, ≤ 1024); every thread gets the result.
__device__ float block_sum(float v) {
    __shared__ float partial[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < warps ? partial[lane] : 0.f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// x[t, :] = table[tokens[t], :] (bf16 → fp32 residual stream).
extern "C" __global__ void embed_rows(const EmbedRowsParams p) {
    const u16 *table = (const u16 *)p.table;
    const int *tokens = (const int *)p.tokens;
    float *x = (float *)p.x;
    const int D = p.width;
    const int t = blockIdx.x;
    const u16 *row = table + (i64)tokens[t] * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) x[(i64)t * D + i] = bf16_load(row[i]);
}

// x += delta (if any), then h = RMSNorm(x)·w as bf16, one block per token.
extern "C" __global__ void add_rmsnorm(const AddRMSNormParams p) {
    float *x = (float *)p.x;
    const float *delta = (const float *)p.delta, *w = (const float *)p.weight;
    u16 *h = (u16 *)p.h;
    const int D = p.width;
    const float eps = p.epsilon;
    const int t = blockIdx.x;
    float *xr = x + (i64)t * D;
    float ss = 0.f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float v = xr[i];
        if (delta) {
            v += delta[(i64)t * D + i];
            xr[i] = v;
        }
        ss += v * v;
    }
    ss = block_sum(ss);
    const float inv = rsqrtf(ss / D + eps);
    for (int i = threadIdx.x; i < D; i += blockDim.x) h[(i64)t * D + i] = bf16_store(xr[i] * inv * w[i]);
}

// RoPE (adjacent pairs, llama.cpp's "normal" mode) on Q and K of one token, Q to `q` [tokens, qHeads, d], K and V
// to the cache at `dst` (elements), heads `headStride` apart. Angles in double: positions reach 10⁵ radians.
__device__ __forceinline__ void rope_token(const u16 *qkv, int qHeads, int kvHeads, int d, int pos,
                                           const float *invFreq, u16 *q, u16 *kCache, u16 *vCache, i64 dst,
                                           i64 headStride) {
    const int half = d / 2, pairs = (qHeads + kvHeads) * half;
    for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
        const int head = p / half, i = p - head * half;
        double s, c;
        sincos((double)pos * (double)invFreq[i], &s, &c);
        const float a = bf16_load(qkv[head * d + 2 * i]), b = bf16_load(qkv[head * d + 2 * i + 1]);
        const float ra = a * (float)c - b * (float)s, rb = a * (float)s + b * (float)c;
        u16 *out = head < qHeads ? q + head * d + 2 * i : kCache + dst + (i64)(head - qHeads) * headStride + 2 * i;
        out[0] = bf16_store(ra);
        out[1] = bf16_store(rb);
    }
    const u16 *v = qkv + (qHeads + kvHeads) * d;
    for (int e = threadIdx.x; e < kvHeads * d; e += blockDim.x) {
        const int head = e / d;
        vCache[dst + (i64)head * headStride + (e - head * d)] = v[e];
    }
}

// vAttention: token t goes to (slots[t], positions[t]) of the layer's virtual K/V tensors.
extern "C" __global__ void rope_append_strided(const RopeAppendStridedParams p) {
    const u16 *qkv = (const u16 *)p.qkv;
    const int qHeads = p.qHeads, kvHeads = p.kvHeads, d = p.headDim;
    const int *positions = (const int *)p.positions, *slots = (const int *)p.slots;
    const float *invFreq = (const float *)p.inverseFrequencies;
    u16 *q = (u16 *)p.q, *kCache = (u16 *)p.keys, *vCache = (u16 *)p.values;
    const i64 slotStride = p.slotStride, tokenStride = p.tokenStride, headStride = p.headStride;
    const int t = blockIdx.x, pos = positions[t];
    if (pos < 0) return;  // an empty lane of a padded (graph) batch
    const i64 dst = (i64)slots[t] * slotStride + (i64)pos * tokenStride;
    rope_token(qkv + (i64)t * (qHeads + 2 * kvHeads) * d, qHeads, kvHeads, d, pos, invFreq,
               q + (i64)t * qHeads * d, kCache, vCache, dst, headStride);
}

// Paged baseline: token t goes to position positions[t] of sequence seqs[t] through its block-table row.
extern "C" __global__ void rope_append_paged(const RopeAppendPagedParams p) {
    const u16 *qkv = (const u16 *)p.qkv;
    const int qHeads = p.qHeads, kvHeads = p.kvHeads, d = p.headDim;
    const int *positions = (const int *)p.positions, *seqs = (const int *)p.sequences;
    const float *invFreq = (const float *)p.inverseFrequencies;
    u16 *q = (u16 *)p.q, *kPool = (u16 *)p.keyPool, *vPool = (u16 *)p.valuePool;
    const int *blockTables = (const int *)p.blockTables;
    const int tableStride = p.tableStride, blockSize = p.blockSize;
    const int t = blockIdx.x, pos = positions[t];
    if (pos < 0) return;  // an empty lane of a padded (graph) batch
    const int block = blockTables[(i64)seqs[t] * tableStride + pos / blockSize];
    const i64 dst = ((i64)block * blockSize + pos % blockSize) * kvHeads * d;
    rope_token(qkv + (i64)t * (qHeads + 2 * kvHeads) * d, qHeads, kvHeads, d, pos, invFreq,
               q + (i64)t * qHeads * d, kPool, vPool, dst, d);
}

// out[t, j] = silu(gu[t, j]) · gu[t, F + j] (gate rows then up rows in the fused weight).
extern "C" __global__ void silu_mul(const SiluMulParams p) {
    const u16 *gu = (const u16 *)p.gateUp;
    u16 *out = (u16 *)p.out;
    const int F = p.width;
    const i64 total = p.total;
    for (i64 e = (i64)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (i64)gridDim.x * blockDim.x) {
        const i64 t = e / F, j = e - t * F;
        const float g = bf16_load(gu[t * 2 * F + j]), u = bf16_load(gu[t * 2 * F + F + j]);
        out[e] = bf16_store(g / (1.f + __expf(-g)) * u);
    }
}

// out[i, :] = h[rows[i], :].
extern "C" __global__ void gather_rows(const GatherRowsParams p) {
    const u16 *h = (const u16 *)p.h;
    const int *rows = (const int *)p.rows;
    u16 *out = (u16 *)p.out;
    const int D = p.width;
    const u16 *src = h + (i64)rows[blockIdx.x] * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) out[(i64)blockIdx.x * D + i] = src[i];
}

// Seeded dummy weights, the same values as `DummyWeights.value` on the CPU (then rounded to bf16).
extern "C" __global__ void fill_dummy_bf16(const FillDummyParams p) {
    u16 *out = (u16 *)p.out;
    const i64 count = p.count;
    const u64 seed = p.seed, nameHash = p.nameHash;
    const float scale = p.scale;
    for (i64 e = (i64)blockIdx.x * blockDim.x + threadIdx.x; e < count; e += (i64)gridDim.x * blockDim.x) {
        u64 z = (seed ^ nameHash) + ((u64)e + 1ull) * 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z = z ^ (z >> 31);
        const float u = (float)(z >> 40) / 16777216.f;
        out[e] = bf16_store((2.f * u - 1.f) * scale);
    }
}

// ---- Sampling: the rule of `sampleToken` (Sampler.swift), one 1024-thread block per row ----

__device__ __forceinline__ u32 ordered_key(float x) {
    const u32 b = __float_as_uint(x);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ u64 weight_fixed(float l, float top, float temperature) {
    return (u64)(expf((l - top) / temperature) * 4294967296.f);
}

__device__ u64 block_max_u64(u64 v) {
    __shared__ u64 partial[32];
    for (int o = 16; o > 0; o >>= 1) { u64 w = __shfl_xor_sync(0xffffffffu, v, o); v = w > v ? w : v; }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < (blockDim.x >> 5) ? partial[lane] : 0;
    for (int o = 16; o > 0; o >>= 1) { u64 w = __shfl_xor_sync(0xffffffffu, v, o); v = w > v ? w : v; }
    return v;
}

__device__ u64 block_sum_u64(u64 v) {
    __shared__ u64 partial[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < (blockDim.x >> 5) ? partial[lane] : 0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// The largest key t with Σ_{key ≥ t} w ≥ target, where w = 1 (byMass false: the target-th largest key) or the
// fixed-point weight of keys ≥ floor. Four 8-bit radix passes over the keys, most significant first.
__device__ u32 radix_select(const float *l, int V, u64 target, bool byMass, u32 floor, float top, float T) {
    __shared__ u64 hist[256];
    __shared__ u32 chosen;
    __shared__ u64 remainingShared;
    u32 prefix = 0, mask = 0;
    if (threadIdx.x == 0) remainingShared = target;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < V; i += blockDim.x) {
            const u32 key = ordered_key(l[i]);
            if ((key & mask) != prefix || key < floor) continue;
            atomicAdd(&hist[(key >> shift) & 255u], byMass ? weight_fixed(l[i], top, T) : 1ull);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            u64 cum = 0, remaining = remainingShared;
            u32 pick = 0;
            for (int b = 255; b >= 0; --b) {
                if (cum + hist[b] >= remaining) { pick = (u32)b; break; }
                cum += hist[b];
            }
            remainingShared = remaining - cum;
            chosen = pick;
        }
        __syncthreads();
        prefix |= chosen << shift;
        mask |= 255u << shift;
    }
    return prefix;
}

// params per row: temperature (float bits), topK, topP (float bits), 24-bit uniform draw.
extern "C" __global__ void __launch_bounds__(1024) sample_tokens(const SampleTokensParams p) {
    const float *logits = (const float *)p.logits;
    const i64 rowStride = p.rowStride;
    const int *params = (const int *)p.settings;
    int *out = (int *)p.out;
    const int V = p.vocab;
    const float *l = logits + (i64)blockIdx.x * rowStride;
    const float T = __int_as_float(params[4 * blockIdx.x]);
    const int topK = params[4 * blockIdx.x + 1];
    const float topP = __int_as_float(params[4 * blockIdx.x + 2]);
    const u64 draw = (u32)params[4 * blockIdx.x + 3];

    u64 best = 0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        const u64 c = ((u64)ordered_key(l[i]) << 32) | (u64)(0xffffffffu - (u32)i);
        best = c > best ? c : best;
    }
    best = block_max_u64(best);
    const int bestIndex = (int)(0xffffffffu - (u32)best);
    if (T <= 0.f) {
        if (threadIdx.x == 0) out[blockIdx.x] = bestIndex;
        return;
    }
    const float top = l[bestIndex];
    u32 floor = 0;
    if (topK > 0 && topK < V) floor = radix_select(l, V, (u64)topK, false, 0, top, T);
    if (topP < 1.f) {
        u64 total = 0;
        for (int i = threadIdx.x; i < V; i += blockDim.x)
            if (ordered_key(l[i]) >= floor) total += weight_fixed(l[i], top, T);
        total = block_sum_u64(total);
        u64 target = (u64)((double)topP * (double)total);
        if (target < 1) target = 1;
        const u32 t = radix_select(l, V, target, true, floor, top, T);
        floor = t > floor ? t : floor;
    }
    // Inverse CDF in id order: each thread owns a contiguous range of ids.
    const int per = (V + blockDim.x - 1) / blockDim.x;
    const int begin = min(V, (int)threadIdx.x * per), end = min(V, begin + per);
    u64 mine = 0;
    for (int i = begin; i < end; ++i)
        if (ordered_key(l[i]) >= floor) mine += weight_fixed(l[i], top, T);
    // Exclusive scan of `mine` over the block.
    __shared__ u64 warpTotals[32];
    u64 inclusive = mine;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 1; o < 32; o <<= 1) {
        const u64 n = __shfl_up_sync(0xffffffffu, inclusive, o);
        if (lane >= o) inclusive += n;
    }
    __syncthreads();
    if (lane == 31) warpTotals[warp] = inclusive;
    __syncthreads();
    if (warp == 0) {
        u64 w = lane < (blockDim.x >> 5) ? warpTotals[lane] : 0;
        for (int o = 1; o < 32; o <<= 1) {
            const u64 n = __shfl_up_sync(0xffffffffu, w, o);
            if (lane >= o) w += n;
        }
        warpTotals[lane] = w;  // inclusive over warps
    }
    __syncthreads();
    const u64 kept = warpTotals[(blockDim.x >> 5) - 1];
    const u64 before = inclusive - mine + (warp > 0 ? warpTotals[warp - 1] : 0);
    const u64 target = __umul64hi(draw, kept) << 40 | (draw * kept) >> 24;  // ⌊draw·kept / 2²⁴⌋
    if (mine > 0 && target >= before && target < before + mine) {
        u64 acc = before;
        for (int i = begin; i < end; ++i) {
            if (ordered_key(l[i]) < floor) continue;
            acc += weight_fixed(l[i], top, T);
            if (target < acc) { out[blockIdx.x] = i; return; }
        }
    }
}
