// Flash-decoding for one query token per sequence, GQA, split-KV + log-sum-exp merge.
//
// Work item: one warp = one (sequence, KV head, split of `chunk` tokens). The warp serves all G query heads of its
// KV group from one read of K/V: tiles of 32 tokens are copied to shared memory with 16-byte cp.async (rows
// unpadded, chunks swizzled: Geometry::at), `stages` deep (a launch parameter: stages − 1 tiles in flight while one
// is used; dynamic shared memory: stages × K and V tiles, see DecodeShape.sharedBytes). q·Kᵀ and P·V run on tensor
// cores (decode_partial_body). The splits of one (sequence, KV head) are combined in one of two ways (DecodeMerge):
// as warps of one block, through shared memory (block_merge_tail; one split: the warp writes its rows); or each split
// writes partials (max in log2 domain, sum, unnormalized acc) to fp32 scratch, combined per query head by a second
// launch (`decode_merge_*`). Why these two: docs/decisions/003-decode-split-merge.md
//
// Lengths and slot ids (or block tables) are read from device memory and the grid is sized for the longest
// sequence, so launches can be captured in a CUDA graph: warps past a sequence's length exit.
//
// Addressing is the only difference between the strided (vAttention virtual tensor, either layout) and paged
// (vLLM pool [numBlocks, blockSize, kvHeads, headDim] + int32 block table) variants: each lane computes the element
// offset of one token of the tile, the copy loop fetches it by shuffle. Same inner loop, so their ratio is paging.

#include "kernel_params.h"
#include "tensor_core.cuh"

// K/V are read once per call and are larger than L2, so their lines are marked evict-first: what stays in L2 is what
// is read again soon — the split partials the merge reads, the query, the next call's small tensors. `policy` comes
// from l2_evict_first(). Why: docs/decisions/005-decode-l2-evict-first.md
__device__ __forceinline__ unsigned long long l2_evict_first() {
    unsigned long long policy;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
    return policy;
}
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, unsigned long long policy) {
    asm volatile("cp.async.cg.shared.global.L2::cache_hint.L2::256B [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)),
                 "l"(gmem), "l"(policy));
}
// Waits until at most `pending` groups are outstanding (run-time count: one of the immediates).
__device__ __forceinline__ void cp_async_wait_dyn(int pending) {
    switch (pending) {
    case 0: cp_async_wait<0>(); break;
    case 1: cp_async_wait<1>(); break;
    case 2: cp_async_wait<2>(); break;
    case 3: cp_async_wait<3>(); break;
    case 4: cp_async_wait<4>(); break;
    case 5: cp_async_wait<5>(); break;
    case 6: cp_async_wait<6>(); break;
    default: cp_async_wait<7>(); break;
    }
}

// Element offset (head 0) of token t of the warp's sequence.
struct StridedAddr {
    i64 slotOffset, tokenStride;
    __device__ __forceinline__ i64 offset(int t) const { return slotOffset + (i64)t * tokenStride; }
};
struct PagedAddr {
    const int *table;  // this sequence's row of the block table
    int blockSize;
    i64 blockStride, tokenStride;
    __device__ __forceinline__ i64 offset(int t) const {
        int b = t / blockSize;
        return (i64)__ldg(table + b) * blockStride + (i64)(t - b * blockSize) * tokenStride;
    }
};

constexpr int TILE = 32;  // tokens per tile = lanes per warp

template <int D> struct Geometry {
    static constexpr int ROW = D * 2;           // bytes per smem row (a token's K or V of one head, unpadded)
    static constexpr int CHUNKS = D / 8;        // 16-byte chunks per row
    static constexpr int ROWS_PER_PASS = 32 / CHUNKS;
    static constexpr int PASSES = TILE / ROWS_PER_PASS;
    // Byte offset of 16-byte chunk c of row r in a tile. Chunks are XOR-swizzled by the row within each 128-byte
    // half (8 rows at one logical chunk land in 8 different bank groups: conflict-free ldmatrix) instead of padding
    // rows by 16 bytes: a padded row starts off the 128-byte grid, and cp.async then splits every global 128-byte line
    // into two L2 requests. Why: docs/decisions/004-decode-swizzled-tiles.md
    static __device__ __forceinline__ int at(int r, int c) { return r * ROW + ((c & ~7) | ((c ^ r) & 7)) * 16; }
};

// Block mode: the block's W = blockDim.y warps hold all splits of one (sequence, KV head) (a warp without tokens has
// m = −∞, l = 0, acc = 0) and combine them through shared memory — no partials in global memory, no merge launch
// (at 16×8K cuDNN runs the same way, one block per pair). With W = 1 the warp normalizes its own rows. `out`: row 0
// of the group's G output rows.
template <typename T, int D, int G>
__device__ __forceinline__ void block_merge_tail(const float (&acc)[D / 8][4], float m, float l,
                                                 unsigned char *smemBlock, u16 *__restrict__ out) {
    const int lane = threadIdx.x, h = lane >> 2, quad = lane & 3, W = blockDim.y;
    if (W == 1) {
        if (h < G) {
            const float inv = l > 0.f ? 1.f / l : 0.f;  // l = 0: a zero-length sequence gets zero rows
            u32 *o = reinterpret_cast<u32 *>(out + h * D) + quad;
#pragma unroll
            for (int i = 0; i < D / 8; i++) o[i * 4] = T::pack2(acc[i][0] * inv, acc[i][1] * inv);
        }
        return;
    }
    // [W][G] maxes and sums, then [W][G][D] accumulators, over the tiles (every warp is past its loop).
    float *sm = reinterpret_cast<float *>(smemBlock), *sl = sm + W * G, *sacc = sl + W * G;
    const int warp = threadIdx.y;
    __syncthreads();
    if (h < G) {
        if (quad == 0) { sm[warp * G + h] = m; sl[warp * G + h] = l; }
        float2 *dst = reinterpret_cast<float2 *>(sacc + (warp * G + h) * D) + quad;
#pragma unroll
        for (int i = 0; i < D / 8; i++) dst[i * 4] = make_float2(acc[i][0], acc[i][1]);
    }
    __syncthreads();
    // Thread t combines output elements 2t, 2t + 1 (+ 64W, …) over the W warps.
    for (int e = 2 * (warp * 32 + lane); e < G * D; e += 64 * W) {
        const int row = e / D;
        float M = NEG_INF;
        for (int w = 0; w < W; w++) M = fmaxf(M, sm[w * G + row]);
        float sum = 0.f, o0 = 0.f, o1 = 0.f;
        if (M != NEG_INF) {  // else the sequence is empty: zeros
            for (int w = 0; w < W; w++) {
                const float f = exp2f(sm[w * G + row] - M);  // 0 for a warp without tokens
                const float2 a = *reinterpret_cast<const float2 *>(sacc + (w * G + row) * D + e % D);
                sum = fmaf(f, sl[w * G + row], sum);
                o0 = fmaf(f, a.x, o0);
                o1 = fmaf(f, a.y, o1);
            }
        }
        const float inv = sum > 0.f ? 1.f / sum : 0.f;
        *reinterpret_cast<u32 *>(out + e) = T::pack2(o0 * inv, o1 * inv);
    }
}

// The split kernel. The arithmetic runs on tensor cores (mma.sync m16n8k16, fp32 accumulate), so a 32-token tile costs
// ~100 instructions and the warp is left waiting on memory only (why: docs/decisions/006-decode-tensor-cores.md).
// The G query heads are rows 0…G−1 of the 16-row A operand (rows
// G…15 are zero): S = Q·Kᵀ (A = q in registers, B = K rows by ldmatrix), online softmax on the accumulator fragments
// (row h = lane/4; a quad of lanes holds one head's 32 scores), O += P·V (A = P repacked from S's fragments, B = V by
// ldmatrix.trans). P is rounded to the storage type for the second mma, as FlashAttention does.
template <typename T, int D, int G, typename Addr>
__device__ __forceinline__ void decode_partial_body(const u16 *__restrict__ q, const u16 *__restrict__ kBase,
                                                       const u16 *__restrict__ vBase, i64 headOffset, Addr addr,
                                                       int length, int chunk, int maxSplits, int stages,
                                                       float scaleLog2, float *__restrict__ pm,
                                                       float *__restrict__ pl, float *__restrict__ pacc,
                                                       u16 *__restrict__ out) {
    static_assert(G <= 8, "the group's heads are rows 0…7 of the mma A operand");
    using Geo = Geometry<D>;
    // [warp][stages][K/V][TILE rows of Geo::ROW bytes, swizzled]
    extern __shared__ __align__(128) unsigned char smemBlock[];
    constexpr int STAGE_BYTES = 2 * TILE * Geo::ROW;

    const int lane = threadIdx.x, warp = threadIdx.y;
    // Grid (kvHeads, splits / warps, batch), block (32, warps): warp w of block y takes split y·warps + w. Heads vary
    // fastest, so warps running together read whole token rows (all heads of the same tokens: kvHeads·headDim·2
    // contiguous bytes) rather than one head's 256 B of many rows.
    const int kvHead = blockIdx.x, split = blockIdx.y * blockDim.y + warp, seq = blockIdx.z;
    const int kvHeads = gridDim.x, qHeads = kvHeads * G;
    unsigned char *smem = smemBlock + warp * stages * STAGE_BYTES;
    // Block mode (out given): the block's W warps are all of the pair's splits, interleaved — warp w takes
    // tiles w, w + W, … of the sequence, so the block and the kvHeads blocks beside it (reading the same token rows)
    // stream one region at a time — and the block writes the output (block_merge_tail). Paged K/V interleave too, so
    // the paged twin sums in the same order and the engine's output does not depend on the KV store (why:
    // docs/decisions/003-decode-split-merge.md). Else each split (`chunk` tokens from `start`) writes its partials.
    const bool inBlock = out != nullptr;
    const int start = inBlock ? warp * TILE : split * chunk;
    const int step = inBlock ? blockDim.y * TILE : TILE;  // tokens from one of the warp's tiles to the next
    if (start >= length && !inBlock) return;  // the merge counts only splits with tokens
    const int end = inBlock ? length : min(length, start + chunk);
    const int h = lane >> 2, quad = lane & 3;  // the mma fragment row (query head of the group) and column pair
    const bool liveRow = h < G;
    float acc[D / 8][4];  // rows 8…15 (elements 2, 3) stay zero
#pragma unroll
    for (int i = 0; i < D / 8; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
    float m = NEG_INF, l = 0.f;  // of row h; l is this lane's share until the loop ends, then the quad's sum
    if (start < length) {  // (only block mode gets here without tokens: its warp then adds nothing to the merge)
        const int tiles = (end - start + step - 1) / step;
        const int chunkCol = lane % Geo::CHUNKS, rowInPass = lane / Geo::CHUNKS;
        // Element offset of this lane's token of `tile` (clamped: rows past the end are loaded but masked). Computed
        // one tile before it is issued, so a paged block-table read overlaps a tile's arithmetic instead of stalling
        // issue.
        auto tokenOffset = [&](int tile) -> i64 {
            int t = min(start + tile * step + lane, end - 1);
            return addr.offset(t) + headOffset;
        };
        const unsigned long long policy = l2_evict_first();
        auto issue = [&](i64 off, int stage) {  // rows are fetched from their owner lane's offset
#pragma unroll
            for (int p = 0; p < Geo::PASSES; p++) {
                int row = p * Geo::ROWS_PER_PASS + rowInPass;
                i64 o = (i64)__shfl_sync(0xffffffffu, (long long)off, row) + chunkCol * 8;
                unsigned char *dst = smem + stage * STAGE_BYTES + Geo::at(row, chunkCol);
                cp_async16(dst, kBase + o, policy);
                cp_async16(dst + TILE * Geo::ROW, vBase + o, policy);
            }
        };
        // Prologue: tiles 0 … stages−2 in flight (one commit group each, empty past the end).
        for (int i = 0; i < stages - 1; i++) {
            if (i < tiles) issue(tokenOffset(i), i);
            cp_async_commit();
        }

        // A fragments of q (row h = lane/4 < G, columns 2·(lane%4) and +8 of each 16-wide k step), raw storage type.
        const u32 *qRow = reinterpret_cast<const u32 *>(q + ((i64)seq * qHeads + kvHead * G + (liveRow ? h : 0)) * D);
        u32 qa[D / 16][2];
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            qa[kk][0] = liveRow ? __ldg(qRow + kk * 8 + quad) : 0u;
            qa[kk][1] = liveRow ? __ldg(qRow + kk * 8 + 4 + quad) : 0u;
        }
        i64 nextOff = tokenOffset(min(stages - 1, tiles - 1));
        int stage = 0;
        for (int tile = 0; tile < tiles; tile++) {
            // Refill the stage computed in the previous iteration with tile + stages − 1.
            const int ahead = tile + stages - 1;
            if (ahead < tiles) {
                issue(nextOff, ahead % stages);
                nextOff = tokenOffset(min(ahead + 1, tiles - 1));
            }
            cp_async_commit();
            cp_async_wait_dyn(stages - 1);  // this tile's group is complete
            __syncwarp();
            const unsigned char *kTile = smem + stage * STAGE_BYTES, *vTile = kTile + TILE * Geo::ROW;

            float s[TILE / 8][4];
#pragma unroll
            for (int i = 0; i < TILE / 8; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) {
#pragma unroll
                for (int jj = 0; jj < TILE / 16; jj++) {
                    u32 b[4];
                    const int r = jj * 16 + (lane & 7) + ((lane >> 4) << 3), c = 2 * kk + ((lane >> 3) & 1);
                    ldsm_x4(b, smem_u32(kTile + Geo::at(r, c)));
                    mma16816<T>(s[2 * jj], qa[kk][0], 0u, qa[kk][1], 0u, b[0], b[1]);
                    mma16816<T>(s[2 * jj + 1], qa[kk][0], 0u, qa[kk][1], 0u, b[2], b[3]);
                }
            }
            // Online softmax of row h over this tile's tokens t = 8·i + 2·quad + e (masked past the split's end).
            const int valid = end - (start + tile * step);
            float mx = NEG_INF;
#pragma unroll
            for (int i = 0; i < TILE / 8; i++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const float x = 8 * i + 2 * quad + e < valid ? s[i][e] * scaleLog2 : NEG_INF;
                    s[i][e] = x;
                    mx = fmaxf(mx, x);
                }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float mNew = fmaxf(m, mx);  // finite: every tile has a valid token
            const float corr = exp2f(m - mNew);
            m = mNew;
            float sum = 0.f;
#pragma unroll
            for (int i = 0; i < TILE / 8; i++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    s[i][e] = exp2f(s[i][e] - mNew);
                    sum += s[i][e];
                }
            l = l * corr + sum;
#pragma unroll
            for (int i = 0; i < D / 8; i++) acc[i][0] *= corr, acc[i][1] *= corr;

#pragma unroll
            for (int kk = 0; kk < TILE / 16; kk++) {
                const u32 a0 = T::pack2(s[2 * kk][0], s[2 * kk][1]), a2 = T::pack2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
#pragma unroll
                for (int jd = 0; jd < D / 16; jd++) {
                    u32 b[4];
                    const int r = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, c = 2 * jd + (lane >> 4);
                    ldsm_x4_t(b, smem_u32(vTile + Geo::at(r, c)));
                    mma16816<T>(acc[2 * jd], a0, 0u, a2, 0u, b[0], b[1]);
                    mma16816<T>(acc[2 * jd + 1], a0, 0u, a2, 0u, b[2], b[3]);
                }
            }
            __syncwarp();  // the next iteration's issue() overwrites this stage
            stage = stage + 1 == stages ? 0 : stage + 1;
        }
        cp_async_wait<0>();
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
    }

    if (inBlock) {
        block_merge_tail<T, D, G>(acc, m, l, smemBlock, out + ((i64)seq * qHeads + kvHead * G) * D);
        return;
    }
    if (liveRow) {
        const i64 idx = ((i64)seq * qHeads + kvHead * G + h) * maxSplits + split;
        if (quad == 0) { pm[idx] = m; pl[idx] = l; }
        float2 *dst = reinterpret_cast<float2 *>(pacc + idx * D) + quad;
#pragma unroll
        for (int i = 0; i < D / 8; i++) dst[i * 4] = make_float2(acc[i][0], acc[i][1]);
    }
}

template <typename T, int D, int G>
__device__ __forceinline__ void decode_partial_strided(const u16 *q, const u16 *k, const u16 *v, i64 slotStride,
                                                       i64 tokenStride, i64 headStride, const int *slots,
                                                       const int *lengths, int chunk, int maxSplits, int stages,
                                                       float scaleLog2, float *pm, float *pl, float *pacc,
                                                       u16 *out) {
    const int seq = blockIdx.z;
    StridedAddr a{(i64)__ldg(slots + seq) * slotStride, tokenStride};
    decode_partial_body<T, D, G>(q, k, v, (i64)blockIdx.x * headStride, a, __ldg(lengths + seq), chunk,
                                        maxSplits, stages, scaleLog2, pm, pl, pacc, out);
}

template <typename T, int D, int G>
__device__ __forceinline__ void decode_partial_paged(const u16 *q, const u16 *k, const u16 *v, const int *blockTables,
                                                     int tableStride, int blockSize, i64 blockStride, i64 tokenStride,
                                                     i64 headStride, const int *lengths, int chunk, int maxSplits,
                                                     int stages, float scaleLog2, float *pm, float *pl, float *pacc,
                                                     u16 *out) {
    const int seq = blockIdx.z;
    PagedAddr a{blockTables + (i64)seq * tableStride, blockSize, blockStride, tokenStride};
    decode_partial_body<T, D, G>(q, k, v, (i64)blockIdx.x * headStride, a, __ldg(lengths + seq), chunk,
                                        maxSplits, stages, scaleLog2, pm, pl, pacc, out);
}

// Combines the ceil(length/chunk) partials of each (sequence, query head). Grid (qHeads, batch), block (D, P) with
// P = 1…MERGE_P (more only pays with many splits): thread (j, p) folds head-dim element j of splits p, p + P, … into a
// running (max, sum, acc) — the loads of several splits are independent and issued together, so the merge costs about
// one L2 round trip — and the P running triples are combined through shared memory. Not launched when there is one
// split: the split kernel then writes the output itself (direct mode).
constexpr int MERGE_P = 4;

// Folds partial (mi, li, ai) — its max in the log2 domain, sum and unnormalized accumulator — into the running (m, l, o).
__device__ __forceinline__ void lse_fold(float &m, float &l, float &o, float mi, float li, float ai) {
    const float mNew = fmaxf(m, mi), a = exp2f(m - mNew), b = exp2f(mi - mNew);
    l = fmaf(l, a, li * b);
    o = fmaf(o, a, ai * b);
    m = mNew;
}

template <typename T, int D>
__device__ __forceinline__ void decode_merge(const float *__restrict__ pm, const float *__restrict__ pl,
                                             const float *__restrict__ pacc, const int *__restrict__ lengths,
                                             int chunk, int maxSplits, u16 *__restrict__ out) {
    __shared__ float sm[MERGE_P][D], sl[MERGE_P][D], so[MERGE_P][D];
    const int head = blockIdx.x, seq = blockIdx.y, qHeads = gridDim.x, j = threadIdx.x, p = threadIdx.y;
    const int P = blockDim.y;
    const int n = (__ldg(lengths + seq) + chunk - 1) / chunk;
    const i64 row = (i64)seq * qHeads + head;
    const i64 base = row * maxSplits;
    float m = NEG_INF, l = 0.f, o = 0.f;
    // The partials are read-only here: __ldg (ld.global.nc), as the compiler chose when they were kernel arguments.
#pragma unroll 8
    for (int i = p; i < n; i += P)  // pm is finite: every counted split has tokens
        lse_fold(m, l, o, __ldg(pm + base + i), __ldg(pl + base + i), __ldg(pacc + (base + i) * D + j));
    if (P > 1) {
        sm[p][j] = m;
        sl[p][j] = l;
        so[p][j] = o;
        __syncthreads();
        if (p == 0) {
            for (int q = 1; q < P; q++)
                if (sm[q][j] != NEG_INF) lse_fold(m, l, o, sm[q][j], sl[q][j], so[q][j]);  // else (j, q) had no split
        }
    }
    if (p == 0) out[row * D + j] = T::store1(n > 0 ? o / l : 0.f);
}

// Blocks of 1…MAX_BLOCK_WARPS warps (block mode: one pair's splits); min 1 block per SM lets ptxas use the registers
// it needs (shared memory, not registers, bounds residency). Why: docs/decisions/006-decode-tensor-cores.md
#define MAX_BLOCK_WARPS 4
// decode_partial_{strided,paged}_*: block mode (`out` given; one warp: it writes its rows), or partials for the
// decode_merge launch. One parameter each, a struct of kernel_params.h.
#define DECODE_PARTIAL(TN, T, D, G)                                                                                \
    extern "C" __global__ void __launch_bounds__(32 * MAX_BLOCK_WARPS, 1)                                          \
        decode_partial_strided_##TN##_d##D##_g##G(const DecodeStridedParams p) {                                   \
        decode_partial_strided<T, D, G>((const u16 *)p.q, (const u16 *)p.keys, (const u16 *)p.values,              \
                                        p.slotStride, p.tokenStride, p.headStride, (const int *)p.slots,           \
                                        (const int *)p.lengths, p.chunk, p.maxSplits, p.stages, p.scaleLog2,       \
                                        (float *)p.partialMax, (float *)p.partialSum, (float *)p.partialAcc,       \
                                        (u16 *)p.out);                                                             \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(32 * MAX_BLOCK_WARPS, 1)                                          \
        decode_partial_paged_##TN##_d##D##_g##G(const DecodePagedParams p) {                                       \
        decode_partial_paged<T, D, G>((const u16 *)p.q, (const u16 *)p.keyPool, (const u16 *)p.valuePool,          \
                                      (const int *)p.blockTables, p.tableStride, p.blockSize, p.blockStride,       \
                                      p.tokenStride, p.headStride, (const int *)p.lengths, p.chunk, p.maxSplits,   \
                                      p.stages, p.scaleLog2, (float *)p.partialMax, (float *)p.partialSum,         \
                                      (float *)p.partialAcc, (u16 *)p.out);                                        \
    }
#define DECODE_MERGE(TN, T, D)                                                                                     \
    extern "C" __global__ void decode_merge_##TN##_d##D(const DecodeMergeParams p) {                               \
        decode_merge<T, D>((const float *)p.partialMax, (const float *)p.partialSum, (const float *)p.partialAcc,  \
                           (const int *)p.lengths, p.chunk, p.maxSplits, (u16 *)p.out);                            \
    }

#define DECODE_ALL_G(TN, T, D)                                                                                     \
    DECODE_PARTIAL(TN, T, D, 1) DECODE_PARTIAL(TN, T, D, 2) DECODE_PARTIAL(TN, T, D, 3)                            \
    DECODE_PARTIAL(TN, T, D, 4) DECODE_PARTIAL(TN, T, D, 8) DECODE_MERGE(TN, T, D)

DECODE_ALL_G(bf16, BF16, 64)
DECODE_ALL_G(bf16, BF16, 128)
DECODE_ALL_G(fp16, FP16, 64)
DECODE_ALL_G(fp16, FP16, 128)

// Device-to-device copy with 16-byte accesses, grid-stride: the bandwidth ceiling `vattn bench attention` reports
// fractions of (bytes read + written).
__device__ __forceinline__ void copy_u128_body(const uint4 *__restrict__ src, uint4 *__restrict__ dst, i64 n) {
    // Four independent 16-byte loads in flight per thread before the stores.
    const i64 stride = (i64)gridDim.x * blockDim.x;
    i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n; i += 4 * stride) {
        uint4 a = src[i], b = src[i + stride], c = src[i + 2 * stride], d = src[i + 3 * stride];
        dst[i] = a; dst[i + stride] = b; dst[i + 2 * stride] = c; dst[i + 3 * stride] = d;
    }
    for (; i < n; i += stride) dst[i] = src[i];
}

extern "C" __global__ void copy_u128(const CopyParams p) {
    copy_u128_body((const uint4 *)p.source, (uint4 *)p.destination, p.count);
}
