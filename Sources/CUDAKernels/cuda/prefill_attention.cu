// Causal prefill attention (chunked prefill included), FlashAttention-2 style, for one sequence.
//
// Query row i of the chunk is position offset+i and attends to KV positions 0...offset+i of its sequence; the
// chunk's own K/V must already be in the cache (kvLen = offset + n). Queries and outputs are contiguous
// [n, qHeads, D] (bf16 or fp16); query head h reads KV head h / (qHeads/kvHeads) (GQA).
//
// One block = one query head × BM = 16·NW query rows; each warp owns 16 rows. K/V stream through shared memory in
// tiles of BN (32 or 64) tokens, double-buffered with cp.async; S = Q·Kᵀ and O += P·V run on mma.sync m16n8k16
// (bf16/fp16 in, fp32 accumulate), operands fetched with ldmatrix from XOR-swizzled tiles; online softmax in base 2.
//
// Addressing is the only difference between the two variants, and it is only used by the tile loader:
//   contiguous (vAttention): token t of the slot at  k + t·tokenStride + kvHead·headStride   (k already at the slot)
//   paged (vLLM layout [numBlocks, blockSize, kvHeads, D]): k + (table[t/bs]·bs + t%bs)·tokenStride + kvHead·headStride
#include "kernel_params.h"
#include "tensor_core.cuh"

// 16 bytes global → shared; bytes past srcBytes (0 or 16) are zero-filled.
__device__ __forceinline__ void cp_async16(u32 dst, const void *src, int srcBytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(srcBytes));
}

// Element offset of 16-byte chunk `c` of row `r` in a [rows][D] tile: chunks XOR-swizzled by row so that the 8 rows an
// ldmatrix reads in one phase hit 8 different bank groups.
template <int D> __device__ __forceinline__ int swz(int r, int c) { return r * D + ((c ^ (r & 7)) << 3); }

template <bool PAGED> struct TokenAddress;
template <> struct TokenAddress<false> {
    i64 tokenStride;
    __device__ __forceinline__ i64 operator()(int t) const { return (i64)t * tokenStride; }
};
template <> struct TokenAddress<true> {  // blockSize is a power of two (vLLM's are)
    i64 tokenStride;
    const int *table;
    int blockShift;
    __device__ __forceinline__ i64 operator()(int t) const {
        int b = t >> blockShift;
        return (((i64)__ldg(table + b) << blockShift) + (t & ((1 << blockShift) - 1))) * tokenStride;
    }
};

// The loads both prefill bodies share: the block's query rows and K/V tiles to shared memory by 16-byte cp.async
// (rows past the chunk or past the keys are zero-filled). `at(r, c)` is the body's shared layout: the byte offset of
// 16-byte chunk c of row r in a tile.
template <int D, bool PAGED> struct PrefillLoads {
    static constexpr int CH = D / 8;  // 16-byte chunks per row
    TokenAddress<PAGED> addr;
    const u16 *q, *kh, *vh;  // q at this block's query head, K and V at its KV head
    i64 qTok;                // elements between query rows
    int n, kvLen;
    __device__ __forceinline__ PrefillLoads(const u16 *q_, const u16 *k, const u16 *v, const int *table, int n_,
                                            int offset, int qHeads, int kvHeads, int qh, i64 tokenStride,
                                            i64 headStride, int blockSize) {
        addr.tokenStride = tokenStride;
        if constexpr (PAGED) {
            addr.table = table;
            addr.blockShift = __ffs(blockSize) - 1;
        }
        const int kvh = qh / (qHeads / kvHeads);
        kh = k + (i64)kvh * headStride;
        vh = v + (i64)kvh * headStride;
        q = q_ + (i64)qh * D;
        qTok = (i64)qHeads * D;
        n = n_;
        kvLen = offset + n_;
    }
    // Query rows p0 … p0 + R − 1 of the chunk (rows past it are never stored).
    template <int R, int NT, class At> __device__ __forceinline__ void queries(u32 dst, int p0, At at) const {
#pragma unroll
        for (int i = threadIdx.x; i < R * CH; i += NT) {
            int r = i / CH, c = i % CH, p = p0 + r;
            cp_async16(dst + at(r, c), q + (i64)min(p, n - 1) * qTok + c * 8, p < n ? 16 : 0);
        }
    }
    // K and V of tokens tile·R … tile·R + R − 1.
    template <int R, int NT, class At>
    __device__ __forceinline__ void keysValues(u32 dK, u32 dV, int tile, At at) const {
#pragma unroll
        for (int i = threadIdx.x; i < R * CH; i += NT) {
            int r = i / CH, c = i % CH, t = tile * R + r;
            bool valid = t < kvLen;
            i64 o = addr(valid ? t : kvLen - 1) + c * 8;
            cp_async16(dK + at(r, c), kh + o, valid ? 16 : 0);
            cp_async16(dV + at(r, c), vh + o, valid ? 16 : 0);
        }
    }
};

// Fragment math both bodies share. A warp's 16-row fragment f[i][e]: n8 block i; e = 0, 1 → row g = lane / 4, column
// 8i + 2(lane % 4) + e; e = 2, 3 → row g + 8 (the mma.sync C layout, which wgmma's accumulator repeats per warp).

// Causal mask of one key tile starting at t0: keys past a row's position (rowPos: row g's) become −inf.
template <int NB> __device__ __forceinline__ void causal_mask(float (*s)[4], int t0, int rowPos, int lane) {
#pragma unroll
    for (int i = 0; i < NB; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            int key = t0 + i * 8 + (lane & 3) * 2 + (e & 1);
            if (key > rowPos + (e >> 1) * 8) s[i][e] = NEG_INF;
        }
}

// Online softmax in base 2 over one key tile (p = 2^(s·scaleLog2 − m·scaleLog2), one FFMA + EX2 per score); a row's
// scores live in a quad of lanes. Raw scores become probabilities; the running max m and this thread's share of the
// sum l advance; corr is the factor the rows' accumulators must be scaled by.
template <int NB>
__device__ __forceinline__ void online_softmax(float (*s)[4], float m[2], float l[2], float scaleLog2, float corr[2]) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float mx = NEG_INF;
#pragma unroll
        for (int i = 0; i < NB; ++i) mx = fmaxf(mx, fmaxf(s[i][2 * h], s[i][2 * h + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        float mNew = fmaxf(m[h], mx);
        float mScaled = mNew == NEG_INF ? 0.f : mNew * scaleLog2;
        corr[h] = exp2f(m[h] * scaleLog2 - mScaled);
        m[h] = mNew;
        float sum = 0.f;
#pragma unroll
        for (int i = 0; i < NB; ++i) {
            float a = exp2f(fmaf(s[i][2 * h], scaleLog2, -mScaled));
            float b = exp2f(fmaf(s[i][2 * h + 1], scaleLog2, -mScaled));
            s[i][2 * h] = a;
            s[i][2 * h + 1] = b;
            sum += a + b;
        }
        l[h] = l[h] * corr[h] + sum;  // per-thread partial; the quad is summed at the end
    }
}

template <int NB> __device__ __forceinline__ void rescale(float (*acc)[4], const float corr[2]) {
#pragma unroll
    for (int i = 0; i < NB; ++i) {
        acc[i][0] *= corr[0];
        acc[i][1] *= corr[0];
        acc[i][2] *= corr[1];
        acc[i][3] *= corr[1];
    }
}

// Probabilities of keys 16kk … 16kk + 15 as an m16n8k16 A fragment (the accumulator layout is the A layout).
template <class T> __device__ __forceinline__ void p_fragment(const float (*s)[4], int kk, u32 a[4]) {
    a[0] = T::pack2(s[2 * kk][0], s[2 * kk][1]);
    a[1] = T::pack2(s[2 * kk][2], s[2 * kk][3]);
    a[2] = T::pack2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    a[3] = T::pack2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
}

// The finished rows: sum l over the quad, normalize, store query rows row0 (= row g) and row0 + 8 that lie in the
// chunk (output [n, qHeads, D]).
template <class T, int D>
__device__ __forceinline__ void store_rows(const float (*acc)[4], float l[2], u16 *out, int row0, int n, int qHeads,
                                           int qh, int lane) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
        l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
    }
    const float inv0 = 1.f / l[0], inv1 = 1.f / l[1];
    const int row1 = row0 + 8;
    u16 *o0 = out + ((i64)row0 * qHeads + qh) * D + (lane & 3) * 2;
    u16 *o1 = out + ((i64)row1 * qHeads + qh) * D + (lane & 3) * 2;
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
        if (row0 < n) *(u32 *)(o0 + i * 8) = T::pack2(acc[i][0] * inv0, acc[i][1] * inv0);
        if (row1 < n) *(u32 *)(o1 + i * 8) = T::pack2(acc[i][2] * inv1, acc[i][3] * inv1);
    }
}

template <class T, int D, int NW, int MT, int BN, int STAGES, bool PAGED>
__device__ __forceinline__ void prefill_body(const u16 *__restrict__ q, u16 *__restrict__ out,
                                             const u16 *__restrict__ k, const u16 *__restrict__ v,
                                             const int *__restrict__ table, int n, int offset, int qHeads,
                                             int kvHeads, float scaleLog2, i64 tokenStride, i64 headStride,
                                             int blockSize) {
    // MT m16 tiles (16·MT query rows) per warp. MT = 1 keeps Q fragments in registers; MT = 2 re-reads them from
    // shared memory but reuses every K/V fragment for two row tiles (half the shared-memory traffic per mma).
    constexpr int BM = 16 * MT * NW, NT = 32 * NW;
    constexpr bool Q_IN_REGS = MT == 1;
    extern __shared__ __align__(128) u16 smem[];
    u16 *sQ = smem;             // BM × D
    u16 *sK = sQ + BM * D;           // STAGES × BN × D
    u16 *sV = sK + STAGES * BN * D;  // STAGES × BN × D

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int qh = blockIdx.x;
    const int p0 = (gridDim.y - 1 - blockIdx.y) * BM;  // heaviest tiles first
    const int kvLen = offset + n;
    const int keyEnd = min(offset + p0 + BM, kvLen);  // exclusive bound of the keys any row of this block sees
    const int nTiles = (keyEnd + BN - 1) / BN;

    const PrefillLoads<D, PAGED> loads(q, k, v, table, n, offset, qHeads, kvHeads, qh, tokenStride, headStride,
                                       blockSize);
    auto at = [](int r, int c) { return (u32)swz<D>(r, c) * 2; };
    loads.template queries<BM, NT>(smem_u32(sQ), p0, at);
    auto load_kv = [&](int tileIndex, int stage) {
        loads.template keysValues<BN, NT>(smem_u32(sK + stage * BN * D), smem_u32(sV + stage * BN * D), tileIndex, at);
    };
    // Prologue: tiles 0..STAGES-2 in flight (Q rides with tile 0), one commit group each.
#pragma unroll
    for (int st = 0; st < STAGES - 1; ++st) {
        if (st < nTiles) load_kv(st, st);
        cp_async_commit();
    }

    u32 qf[Q_IN_REGS ? D / 16 : 1][4];
    float acc[MT][D / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < D / 8; ++i) acc[mt][i][0] = acc[mt][i][1] = acc[mt][i][2] = acc[mt][i][3] = 0.f;
    float mRow[MT][2], lRow[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) mRow[mt][0] = mRow[mt][1] = NEG_INF, lRow[mt][0] = lRow[mt][1] = 0.f;
    const int warpRow = warp * 16 * MT;                        // first row of this warp in the block
    const int rowPos0 = offset + p0 + warpRow + (lane >> 2);  // position of row (mt=0, first half); +16·mt, +8
    const int warpLastPos = offset + p0 + warpRow + 16 * MT - 1;

    for (int j = 0; j < nTiles; ++j) {
        // Tile j has landed once at most STAGES-2 younger groups are pending; the barrier also means every warp is
        // done with tile j-1, whose stage the prefetch of tile j+STAGES-1 reuses: one barrier per tile.
        cp_async_wait<STAGES - 2>();
        __syncthreads();
        if (j + STAGES - 1 < nTiles) load_kv(j + STAGES - 1, (j + STAGES - 1) % STAGES);
        cp_async_commit();
        if (Q_IN_REGS && j == 0) {
#pragma unroll
            for (int kk = 0; kk < D / 16; ++kk) {
                int r = warpRow + (lane & 7) + ((lane >> 3) & 1) * 8, c = 2 * kk + (lane >> 4);
                ldsm_x4(qf[Q_IN_REGS ? kk : 0], smem_u32(sQ + swz<D>(r, c)));
            }
        }
        const u16 *cK = sK + (j % STAGES) * BN * D, *cV = sV + (j % STAGES) * BN * D;
        const int t0 = j * BN;
        if (t0 <= warpLastPos) {  // else every key of this tile is in all of this warp's rows' future: skip
            // S = Q Kᵀ (16·MT rows × 64 keys per warp), raw scores.
            float s[MT][BN / 8][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int i = 0; i < BN / 8; ++i) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < D / 16; ++kk) {
                u32 a[MT][4];
                if constexpr (Q_IN_REGS) {
#pragma unroll
                    for (int x = 0; x < 4; ++x) a[0][x] = qf[kk][x];
                } else {
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        int r = warpRow + mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, c = 2 * kk + (lane >> 4);
                        ldsm_x4(a[mt], smem_u32(sQ + swz<D>(r, c)));
                    }
                }
#pragma unroll
                for (int jj = 0; jj < BN / 16; ++jj) {
                    u32 b[4];
                    int r = jj * 16 + (lane & 7) + ((lane >> 4) << 3), c = 2 * kk + ((lane >> 3) & 1);
                    ldsm_x4(b, smem_u32(cK + swz<D>(r, c)));
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        mma16816<T>(s[mt][2 * jj], a[mt], b[0], b[1]);
                        mma16816<T>(s[mt][2 * jj + 1], a[mt], b[2], b[3]);
                    }
                }
            }

            // Causal mask (only tiles reaching past the block's first position need it).
            if (t0 + BN - 1 > offset + p0) {
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) causal_mask<BN / 8>(s[mt], t0, rowPos0 + mt * 16, lane);
            }
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                float corr[2];
                online_softmax<BN / 8>(s[mt], mRow[mt], lRow[mt], scaleLog2, corr);
                // Rescale only when some row of the warp saw a new maximum (corr is exactly 1 otherwise): once the
                // running maxima settle this skips D/2 multiplies per row tile and key tile.
                if (__any_sync(0xffffffffu, corr[0] != 1.f || corr[1] != 1.f)) rescale<D / 8>(acc[mt], corr);
            }

            // O += P V.
#pragma unroll
            for (int kk = 0; kk < BN / 16; ++kk) {
                u32 a[MT][4];
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) p_fragment<T>(s[mt], kk, a[mt]);
#pragma unroll
                for (int jd = 0; jd < D / 16; ++jd) {
                    u32 b[4];
                    int r = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, c = 2 * jd + (lane >> 4);
                    ldsm_x4_t(b, smem_u32(cV + swz<D>(r, c)));
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        mma16816<T>(acc[mt][2 * jd], a[mt], b[0], b[1]);
                        mma16816<T>(acc[mt][2 * jd + 1], a[mt], b[2], b[3]);
                    }
                }
            }
        }
    }

#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
        store_rows<T, D>(acc[mt], lRow[mt], out, p0 + warpRow + mt * 16 + (lane >> 2), n, qHeads, qh, lane);
}

// One parameter, PrefillParams (kernel_params.h), the same for every configuration and both addressings.
#define PREFILL_KERNEL(NAME, T, D, NW, MT, BN, S, PAGED)                                                          \
    extern "C" __global__ void __launch_bounds__(32 * NW, NW == 4 ? 2 : 1) NAME(const PrefillParams p) {          \
        prefill_body<T, D, NW, MT, BN, S, PAGED>((const u16 *)p.q, (u16 *)p.out, (const u16 *)p.keys,             \
                                                 (const u16 *)p.values, (const int *)p.table, p.n, p.offset,      \
                                                 p.qHeads, p.kvHeads, p.scaleLog2, p.tokenStride, p.headStride,   \
                                                 p.blockSize);                                                    \
    }
#define PREFILL_PAIR(DT, T, D, NW, MT, BN, S)                                                                    \
    PREFILL_KERNEL(prefill_##DT##_d##D##_w##NW##m##MT##n##BN##s##S##_contig, T, D, NW, MT, BN, S, false)         \
    PREFILL_KERNEL(prefill_##DT##_d##D##_w##NW##m##MT##n##BN##s##S##_paged, T, D, NW, MT, BN, S, true)

// Names: prefill_<dtype>_d<D>_w<warps>m<row tiles per warp>n<keys per tile>s<stages>_<contig|paged>; 16·warps·m
// query rows per block. Shared memory: (16·warps·m + 2·stages·n)·D·2 bytes. Scores are raw; scaleLog2 = scale·log2(e).
PREFILL_PAIR(bf16, BF16, 64, 4, 2, 64, 2)
PREFILL_PAIR(bf16, BF16, 64, 4, 1, 64, 2)
PREFILL_PAIR(bf16, BF16, 128, 4, 2, 64, 2)
PREFILL_PAIR(bf16, BF16, 128, 4, 2, 32, 2)
PREFILL_PAIR(bf16, BF16, 128, 4, 2, 32, 3)
PREFILL_PAIR(bf16, BF16, 128, 8, 2, 32, 3)
PREFILL_PAIR(bf16, BF16, 128, 4, 1, 64, 2)
PREFILL_PAIR(fp16, FP16, 64, 4, 2, 64, 2)
PREFILL_PAIR(fp16, FP16, 64, 4, 1, 64, 2)
PREFILL_PAIR(fp16, FP16, 128, 4, 2, 32, 3)
PREFILL_PAIR(fp16, FP16, 128, 4, 1, 64, 2)

// ---------------------------------------------------------------------------------------------------------------------
// Hopper (sm_90a) variant: the same algorithm with warpgroup MMA (wgmma) instead of mma.sync. One block = two
// warpgroups × 64 query rows (BM = 128) of one query head; K/V tiles of BN = 64 tokens, double-buffered with
// cp.async (all 256 threads load). S = Q·Kᵀ: wgmma m64n64k16 with both operands in shared memory (K-major); O += P·V:
// wgmma m64nDk16 with P from registers (the S accumulator layout is the A-fragment layout, as with mma.sync) and V in
// shared memory read MN-major (transposed by the instruction). Shared tiles use the 128-byte swizzle the descriptors
// name: a [R][D] tile is D/64 column halves of [R][128 B]; 16-byte chunk c of row r sits at chunk c ^ (r % 8); every
// tile starts 1024-byte aligned. cp.async writes through the generic proxy, so a proxy fence precedes the barrier
// that hands a tile to wgmma. The paged twin again differs only in the loader's token address.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
typedef unsigned long long u64;

// Shared-memory matrix descriptor: start address, leading/stride byte offsets (16-byte units), 128-byte swizzle.
__device__ __forceinline__ u64 wgmma_desc(u32 addr, u32 leadingBytes, u32 strideBytes) {
    return (u64)((addr & 0x3FFFF) >> 4) | ((u64)(leadingBytes >> 4) << 16) | ((u64)(strideBytes >> 4) << 32) |
           (1ull << 62);
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory"); }
// Keeps the compiler from moving accumulator reads/writes across the asynchronous MMA's issue and wait.
template <int N> __device__ __forceinline__ void pin(float *r) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}

// D (64×N fp32, N/2 registers per thread) = A·B (+ D): A and B from shared memory, both K-major.
template <class T, int N> __device__ __forceinline__ void wgmma_ss(float *d, u64 a, u64 b, int accumulate);
// D += A·B: A (64×16) from registers, B from shared memory MN-major.
template <class T, int N> __device__ __forceinline__ void wgmma_rs_mn(float *d, const u32 a[4], u64 b);
// Accumulator operands of the asm statements below: N/2 fp32 registers per thread.
#define WGMMA_D32 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}"
#define WGMMA_D64 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31," \
    "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}"
#define WGMMA_OUT32(d)                                                                                                 \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),                    \
    "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),              \
    "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),            \
    "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define WGMMA_OUT64(d)                                                                                                 \
    WGMMA_OUT32(d),                                                                                                    \
    "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),            \
    "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),            \
    "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),            \
    "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
#define WGMMA_WRAPPERS(T, DT)                                                                                          \
    template <> __device__ __forceinline__ void wgmma_ss<T, 64>(float *d, u64 a, u64 b, int accumulate) {              \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                                      \
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32." DT "." DT " " WGMMA_D32 ", %32, %33, p, 1, 1, 0, 0;\n}" \
                     : WGMMA_OUT32(d)                                                                                  \
                     : "l"(a), "l"(b), "r"(accumulate));                                                               \
    }                                                                                                                  \
    template <> __device__ __forceinline__ void wgmma_rs_mn<T, 64>(float *d, const u32 a[4], u64 b) {                  \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                                      \
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32." DT "." DT " " WGMMA_D32 ", {%32,%33,%34,%35}, %36, p, 1, 1, 1;\n}" \
                     : WGMMA_OUT32(d)                                                                                  \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));                                    \
    }                                                                                                                  \
    template <> __device__ __forceinline__ void wgmma_rs_mn<T, 128>(float *d, const u32 a[4], u64 b) {                 \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                                      \
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32." DT "." DT " " WGMMA_D64 ", {%64,%65,%66,%67}, %68, p, 1, 1, 1;\n}" \
                     : WGMMA_OUT64(d)                                                                                  \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));                                    \
    }
// The shapes used, per element type (PTX spelling DT): Q·Kᵀ n64; P·V n64 (d 64) and n128 (d 128).
WGMMA_WRAPPERS(BF16, "bf16")
WGMMA_WRAPPERS(FP16, "f16")

// Byte offset of 16-byte chunk c of row r in an R-row tile (layout above).
template <int R> __device__ __forceinline__ u32 swz128(int r, int c) {
    return (u32)((c >> 3) * R * 128 + r * 128 + (((c & 7) ^ (r & 7)) << 4));
}

template <class T, int D, bool PAGED>
__device__ __forceinline__ void prefill_wgmma_body(const u16 *__restrict__ q, u16 *__restrict__ out,
                                                   const u16 *__restrict__ k, const u16 *__restrict__ v,
                                                   const int *__restrict__ table, int n, int offset, int qHeads,
                                                   int kvHeads, float scaleLog2, i64 tokenStride, i64 headStride,
                                                   int blockSize) {
    constexpr int BM = 128, BN = 64, NT = 256;
    extern __shared__ __align__(1024) unsigned char smemRaw[];
    const u32 sQ = (smem_u32(smemRaw) + 1023) & ~1023u;  // BM × D
    const u32 sK = sQ + BM * D * 2;                       // 2 stages × BN × D
    const u32 sV = sK + 2 * BN * D * 2;                   // 2 stages × BN × D

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, wg = warp >> 2;
    const int qh = blockIdx.x;
    const int p0 = (gridDim.y - 1 - blockIdx.y) * BM;  // heaviest tiles first
    const int kvLen = offset + n;
    const int keyEnd = min(offset + p0 + BM, kvLen);
    const int nTiles = (keyEnd + BN - 1) / BN;

    const PrefillLoads<D, PAGED> loads(q, k, v, table, n, offset, qHeads, kvHeads, qh, tokenStride, headStride,
                                       blockSize);
    loads.template queries<BM, NT>(sQ, p0, [](int r, int c) { return swz128<BM>(r, c); });
    auto load_kv = [&](int tileIndex, int stage) {
        loads.template keysValues<BN, NT>(sK + stage * BN * D * 2, sV + stage * BN * D * 2, tileIndex,
                                          [](int r, int c) { return swz128<BN>(r, c); });
    };
    load_kv(0, 0);
    cp_async_commit();

    float o[D / 8][4], s[BN / 8][4];  // fragments (layout above); wgmma takes them as flat register lists
#pragma unroll
    for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
#pragma unroll
    for (int i = 0; i < BN / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
    float mRow[2] = {NEG_INF, NEG_INF}, lRow[2] = {0.f, 0.f};
    const int wgFirstPos = offset + p0 + wg * 64;
    const int rowPos0 = wgFirstPos + (warp & 3) * 16 + (lane >> 2);  // this thread's rows: rowPos0, rowPos0 + 8

    for (int j = 0; j < nTiles; ++j) {
        cp_async_wait<0>();
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
        __syncthreads();  // tile j visible to wgmma; every warpgroup is done with tile j − 1's stage
        if (j + 1 < nTiles) load_kv(j + 1, (j + 1) & 1);
        cp_async_commit();
        const int t0 = j * BN;
        if (t0 > wgFirstPos + 63) continue;  // all of this tile is in every row's future (uniform per warpgroup)
        const u32 kT = sK + (j & 1) * BN * D * 2, vT = sV + (j & 1) * BN * D * 2;

        pin<BN / 2>(&s[0][0]);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            const u32 colBytes = (kk & 3) * 32;  // k step within the 128-byte row of its column half
            const u64 da = wgmma_desc(sQ + (kk >> 2) * BM * 128 + wg * 64 * 128 + colBytes, 16, 1024);
            const u64 db = wgmma_desc(kT + (kk >> 2) * BN * 128 + colBytes, 16, 1024);
            wgmma_ss<T, BN>(&s[0][0], da, db, kk > 0);
        }
        wgmma_commit();
        wgmma_wait0();
        pin<BN / 2>(&s[0][0]);

        if (t0 + BN - 1 > wgFirstPos) causal_mask<BN / 8>(s, t0, rowPos0, lane);
        float corr[2];
        online_softmax<BN / 8>(s, mRow, lRow, scaleLog2, corr);
        rescale<D / 8>(o, corr);
        u32 pa[BN / 16][4];
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) p_fragment<T>(s, kk, pa[kk]);
        pin<D / 2>(&o[0][0]);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk)  // tokens 16kk…16kk+15: two 8-row groups of 1024 bytes
            wgmma_rs_mn<T, D>(&o[0][0], pa[kk], wgmma_desc(vT + kk * 2048, BN * 128, 1024));
        wgmma_commit();
        wgmma_wait0();
        pin<D / 2>(&o[0][0]);
    }
    cp_async_wait<0>();
    store_rows<T, D>(o, lRow, out, p0 + wg * 64 + (warp & 3) * 16 + (lane >> 2), n, qHeads, qh, lane);
}

// Registers fitted for two resident blocks per SM (≤ 128 per thread).
// Why: docs/decisions/008-prefill-wgmma-residency.md
#define PREFILL_WGMMA_KERNEL(NAME, T, D, PAGED)                                                                   \
    extern "C" __global__ void __launch_bounds__(256, 2) NAME(const PrefillParams p) {                            \
        prefill_wgmma_body<T, D, PAGED>((const u16 *)p.q, (u16 *)p.out, (const u16 *)p.keys, (const u16 *)p.values, \
                                        (const int *)p.table, p.n, p.offset, p.qHeads, p.kvHeads, p.scaleLog2,     \
                                        p.tokenStride, p.headStride, p.blockSize);                                 \
    }
#define PREFILL_WGMMA_PAIR(DT, T, D)                                                                                  \
    PREFILL_WGMMA_KERNEL(prefill_##DT##_d##D##_wg2n64_contig, T, D, false)                                           \
    PREFILL_WGMMA_KERNEL(prefill_##DT##_d##D##_wg2n64_paged, T, D, true)

// Names: prefill_<dtype>_d<D>_wg2n64_<contig|paged>. Shared memory: (128 + 4·64)·D·2 bytes + 1 KB for the 1024-byte
// alignment.
PREFILL_WGMMA_PAIR(bf16, BF16, 128)
PREFILL_WGMMA_PAIR(bf16, BF16, 64)
PREFILL_WGMMA_PAIR(fp16, FP16, 128)
PREFILL_WGMMA_PAIR(fp16, FP16, 64)
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
