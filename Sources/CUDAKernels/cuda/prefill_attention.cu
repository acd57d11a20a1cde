// Causal prefill attention (chunked prefill included), FlashAttention-2 style, for one sequence.
//
// Query row i of the chunk is position offset+i and attends to KV positions 0...offset+i of its sequence; the
// chunk's own K/V must already be in the cache (kvLen = offset + n). Queries and outputs are contiguous
// [n, qHeads, D] (bf16 or fp16); query head h reads KV head h / (qHeads/kvHeads) (GQA).
//
// One block = one query head × BM = 16·NW query rows; each warp owns 16 rows. K/V stream through shared memory in
// tiles of BN = 64 tokens, double-buffered with cp.async; S = Q·Kᵀ and O += P·V run on mma.sync m16n8k16
// (bf16/fp16 in, fp32 accumulate), operands fetched with ldmatrix from XOR-swizzled tiles; online softmax in base 2.
//
// Addressing is the only difference between the two variants, and it is only used by the tile loader:
//   contiguous (vAttention): token t of the slot at  k + t·tokenStride + kvHead·headStride   (k already at the slot)
//   paged (vLLM layout [numBlocks, blockSize, kvHeads, D]): k + (table[t/bs]·bs + t%bs)·tokenStride + kvHead·headStride
typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;
#define NEG_INF __int_as_float(0xff800000)

struct BF16 {};
struct F16 {};

template <class T> __device__ __forceinline__ void mma16816(float c[4], const u32 a[4], u32 b0, u32 b1);
template <> __device__ __forceinline__ void mma16816<BF16>(float c[4], const u32 a[4], u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <> __device__ __forceinline__ void mma16816<F16>(float c[4], const u32 a[4], u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats → packed pair, `lo` in the low half (the lower column index).
template <class T> __device__ __forceinline__ u32 pack2(float lo, float hi);
template <> __device__ __forceinline__ u32 pack2<BF16>(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
template <> __device__ __forceinline__ u32 pack2<F16>(float lo, float hi) {
    u32 r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ u32 smem_u32(const void *p) { return (u32)__cvta_generic_to_shared(p); }

// 16 bytes global → shared; bytes past srcBytes (0 or 16) are zero-filled.
__device__ __forceinline__ void cp_async16(u32 dst, const void *src, int srcBytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(srcBytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

__device__ __forceinline__ void ldsm_x4(u32 r[4], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(u32 r[4], u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// Element offset of 16-byte chunk `c` of row `r` in a [rows][D] tile: chunks XOR-swizzled by row so that the 8 rows an
// ldmatrix reads in one phase hit 8 different bank groups.
template <int D> __device__ __forceinline__ int swz(int r, int c) { return r * D + ((c ^ (r & 7)) << 3); }

template <bool PAGED> struct TokenAddress;
template <> struct TokenAddress<false> {
    i64 tokenStride;
    __device__ __forceinline__ i64 operator()(int t) const { return (i64)t * tokenStride; }
};
template <> struct TokenAddress<true> {
    i64 tokenStride;
    const int *table;
    int blockSize;
    __device__ __forceinline__ i64 operator()(int t) const {
        int b = t / blockSize;
        return ((i64)__ldg(table + b) * blockSize + (t - b * blockSize)) * tokenStride;
    }
};

template <class T, int D, int NW, bool PAGED>
__device__ __forceinline__ void prefill_body(const u16 *__restrict__ q, u16 *__restrict__ out,
                                             const u16 *__restrict__ k, const u16 *__restrict__ v,
                                             const int *__restrict__ table, int n, int offset, int qHeads,
                                             int kvHeads, float scaleLog2, i64 tokenStride, i64 headStride,
                                             int blockSize) {
    constexpr int BM = 16 * NW, BN = 64, NT = 32 * NW, CH = D / 8;
    extern __shared__ __align__(128) u16 smem[];
    u16 *sQ = smem;             // BM × D
    u16 *sK = sQ + BM * D;      // 2 stages × BN × D
    u16 *sV = sK + 2 * BN * D;  // 2 stages × BN × D

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int qh = blockIdx.x;
    const int p0 = (gridDim.y - 1 - blockIdx.y) * BM;  // heaviest tiles first
    const int kvh = qh / (qHeads / kvHeads);
    const int kvLen = offset + n;
    const int keyEnd = min(offset + p0 + BM, kvLen);  // exclusive bound of the keys any row of this block sees
    const int nTiles = (keyEnd + BN - 1) / BN;

    TokenAddress<PAGED> addr;
    addr.tokenStride = tokenStride;
    if constexpr (PAGED) {
        addr.table = table;
        addr.blockSize = blockSize;
    }
    const u16 *kh = k + (i64)kvh * headStride;
    const u16 *vh = v + (i64)kvh * headStride;

    // Q tile (rows past the chunk are zero-filled and never stored).
    const i64 qTok = (i64)qHeads * D;
#pragma unroll
    for (int i = tid; i < BM * CH; i += NT) {
        int r = i / CH, c = i % CH, p = p0 + r;
        const u16 *src = q + (i64)min(p, n - 1) * qTok + (i64)qh * D + c * 8;
        cp_async16(smem_u32(sQ + swz<D>(r, c)), src, p < n ? 16 : 0);
    }
    auto load_kv = [&](int tileIndex, int stage) {
        u16 *dK = sK + stage * BN * D, *dV = sV + stage * BN * D;
#pragma unroll
        for (int i = tid; i < BN * CH; i += NT) {
            int r = i / CH, c = i % CH, t = tileIndex * BN + r;
            bool valid = t < kvLen;
            i64 o = addr(valid ? t : kvLen - 1) + c * 8;
            cp_async16(smem_u32(dK + swz<D>(r, c)), kh + o, valid ? 16 : 0);
            cp_async16(smem_u32(dV + swz<D>(r, c)), vh + o, valid ? 16 : 0);
        }
    };
    load_kv(0, 0);
    cp_async_commit();

    u32 qf[D / 16][4];
    float acc[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
    float mRow[2] = {NEG_INF, NEG_INF}, lRow[2] = {0.f, 0.f};
    const int rowPos0 = offset + p0 + warp * 16 + (lane >> 2);  // position of this thread's first row; second is +8

    for (int j = 0; j < nTiles; ++j) {
        if (j + 1 < nTiles) load_kv(j + 1, (j + 1) & 1);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        if (j == 0) {
#pragma unroll
            for (int kk = 0; kk < D / 16; ++kk) {
                int r = warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, c = 2 * kk + (lane >> 4);
                ldsm_x4(qf[kk], smem_u32(sQ + swz<D>(r, c)));
            }
        }
        const u16 *cK = sK + (j & 1) * BN * D, *cV = sV + (j & 1) * BN * D;

        // S = Q Kᵀ (16 rows × 64 keys per warp).
        float s[BN / 8][4];
#pragma unroll
        for (int i = 0; i < BN / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
            for (int jj = 0; jj < BN / 16; ++jj) {
                u32 b[4];
                int r = jj * 16 + (lane & 7) + ((lane >> 4) << 3), c = 2 * kk + ((lane >> 3) & 1);
                ldsm_x4(b, smem_u32(cK + swz<D>(r, c)));
                mma16816<T>(s[2 * jj], qf[kk], b[0], b[1]);
                mma16816<T>(s[2 * jj + 1], qf[kk], b[2], b[3]);
            }
        }

        // Scale into base 2, causal mask (only tiles that reach past the block's first position need it).
        const int t0 = j * BN;
        const bool needMask = t0 + BN - 1 > offset + p0;
#pragma unroll
        for (int i = 0; i < BN / 8; ++i) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                float x = s[i][e] * scaleLog2;
                if (needMask) {
                    int key = t0 + i * 8 + (lane & 3) * 2 + (e & 1);
                    int pos = rowPos0 + (e >> 1) * 8;
                    if (key > pos) x = NEG_INF;
                }
                s[i][e] = x;
            }
        }

        // Online softmax: rows r0 (e = 0, 1) and r1 (e = 2, 3); a row's 64 scores live in a quad of lanes.
        float corr[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float mx = NEG_INF;
#pragma unroll
            for (int i = 0; i < BN / 8; ++i) mx = fmaxf(mx, fmaxf(s[i][2 * h], s[i][2 * h + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            float mNew = fmaxf(mRow[h], mx);
            float mUse = mNew == NEG_INF ? 0.f : mNew;
            corr[h] = exp2f(mRow[h] - mUse);
            mRow[h] = mNew;
            float sum = 0.f;
#pragma unroll
            for (int i = 0; i < BN / 8; ++i) {
                float a = exp2f(s[i][2 * h] - mUse), b = exp2f(s[i][2 * h + 1] - mUse);
                s[i][2 * h] = a;
                s[i][2 * h + 1] = b;
                sum += a + b;
            }
            lRow[h] = lRow[h] * corr[h] + sum;  // per-thread partial; the quad is summed at the end
        }
#pragma unroll
        for (int i = 0; i < D / 8; ++i) {
            acc[i][0] *= corr[0];
            acc[i][1] *= corr[0];
            acc[i][2] *= corr[1];
            acc[i][3] *= corr[1];
        }

        // O += P V.
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
            u32 a[4];
            a[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
            a[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
            a[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            a[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int jd = 0; jd < D / 16; ++jd) {
                u32 b[4];
                int r = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, c = 2 * jd + (lane >> 4);
                ldsm_x4_t(b, smem_u32(cV + swz<D>(r, c)));
                mma16816<T>(acc[2 * jd], a, b[0], b[1]);
                mma16816<T>(acc[2 * jd + 1], a, b[2], b[3]);
            }
        }
        __syncthreads();  // the next iteration refills this stage
    }

#pragma unroll
    for (int h = 0; h < 2; ++h) {
        lRow[h] += __shfl_xor_sync(0xffffffffu, lRow[h], 1);
        lRow[h] += __shfl_xor_sync(0xffffffffu, lRow[h], 2);
    }
    const float inv0 = 1.f / lRow[0], inv1 = 1.f / lRow[1];
    const int row0 = p0 + warp * 16 + (lane >> 2), row1 = row0 + 8;
    u16 *o0 = out + ((i64)row0 * qHeads + qh) * D + (lane & 3) * 2;
    u16 *o1 = out + ((i64)row1 * qHeads + qh) * D + (lane & 3) * 2;
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
        if (row0 < n) *(u32 *)(o0 + i * 8) = pack2<T>(acc[i][0] * inv0, acc[i][1] * inv0);
        if (row1 < n) *(u32 *)(o1 + i * 8) = pack2<T>(acc[i][2] * inv1, acc[i][3] * inv1);
    }
}

#define PREFILL_KERNEL(NAME, T, D, NW, PAGED)                                                                     \
    extern "C" __global__ void __launch_bounds__(32 * NW, NW == 4 ? 2 : 1)                                      \
        NAME(const u16 *q, u16 *out, const u16 *k, const u16 *v, const int *table, int n, int offset,           \
             int qHeads, int kvHeads, float scaleLog2, long long tokenStride, long long headStride,              \
             int blockSize) {                                                                                    \
        prefill_body<T, D, NW, PAGED>(q, out, k, v, table, n, offset, qHeads, kvHeads, scaleLog2, tokenStride,  \
                                      headStride, blockSize);                                                    \
    }

// Names: prefill_<dtype>_d<D>_w<warps>_<contig|paged>. Shared memory: (16·NW + 4·64)·D·2 bytes.
PREFILL_KERNEL(prefill_bf16_d64_w4_contig, BF16, 64, 4, false)
PREFILL_KERNEL(prefill_bf16_d64_w4_paged, BF16, 64, 4, true)
PREFILL_KERNEL(prefill_bf16_d128_w4_contig, BF16, 128, 4, false)
PREFILL_KERNEL(prefill_bf16_d128_w4_paged, BF16, 128, 4, true)
PREFILL_KERNEL(prefill_fp16_d64_w4_contig, F16, 64, 4, false)
PREFILL_KERNEL(prefill_fp16_d64_w4_paged, F16, 64, 4, true)
PREFILL_KERNEL(prefill_fp16_d128_w4_contig, F16, 128, 4, false)
PREFILL_KERNEL(prefill_fp16_d128_w4_paged, F16, 128, 4, true)
PREFILL_KERNEL(prefill_bf16_d128_w8_contig, BF16, 128, 8, false)
PREFILL_KERNEL(prefill_bf16_d128_w8_paged, BF16, 128, 8, true)
