#include "internal.h"
#include <math.h>

#if defined(__x86_64__)
#include <cpuid.h>

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static vq_isa detect(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return VQ_ISA_PORTABLE;
    const int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!(osxsave && avx && fma && f16c)) return VQ_ISA_PORTABLE;
    const uint64_t xcr0 = xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return VQ_ISA_PORTABLE;  // the OS saves xmm and ymm state
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return VQ_ISA_PORTABLE;
    const int avx2 = (b >> 5) & 1;
    if (!avx2) return VQ_ISA_PORTABLE;
    const int avx512f = (b >> 16) & 1, avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1, vnni = (c >> 11) & 1;
    const int zmm_saved = (xcr0 & 0xe6) == 0xe6;  // opmask, upper zmm0-15, zmm16-31
    if (avx512f && avx512bw && avx512vl && vnni && zmm_saved) return VQ_ISA_AVX512_VNNI;
    return VQ_ISA_AVX2;
}
#else
static vq_isa detect(void) { return VQ_ISA_PORTABLE; }
#endif

vq_isa vq_best_isa(void) {
    static int best = -1;  // atomic: threads may make the first call at once (they store the same value)
    int isa = __atomic_load_n(&best, __ATOMIC_RELAXED);
    if (isa < 0) {
        isa = (int)detect();
        __atomic_store_n(&best, isa, __ATOMIC_RELAXED);
    }
    return (vq_isa)isa;
}

int vq_isa_supported(vq_isa isa) { return isa >= VQ_ISA_PORTABLE && isa <= vq_best_isa(); }

const vq_kernels *vq_kernels_for(vq_isa isa) {
    if (!vq_isa_supported(isa)) return NULL;
    switch (isa) {
    case VQ_ISA_PORTABLE: return &vq_kernels_portable;
#if defined(__x86_64__)
    case VQ_ISA_AVX2: return &vq_kernels_avx2;
    case VQ_ISA_AVX512_VNNI: return &vq_kernels_avx512_vnni;
#endif
    default: return NULL;
    }
}

void vq_quantize_rows(const float *x, int tokens, int k, int8_t *qs, int8_t *residual, float *d, float *sum) {
    static vq_quantize_fn best;  // atomic: threads may make the first call at once (they store the same value)
    vq_quantize_fn f = __atomic_load_n(&best, __ATOMIC_RELAXED);
    if (!f) {
        f = vq_kernels_for(vq_best_isa())->quantize;
        __atomic_store_n(&best, f, __ATOMIC_RELAXED);
    }
    f(x, tokens, k, qs, residual, d, sum);
}

static void quantize_portable(const float *x, int tokens, int k, int8_t *qs, int8_t *residual, float *d,
                              float *sum) {
    const int nb = k / 32;
    for (int t = 0; t < tokens; t++) {
        for (int b = 0; b < nb; b++) {
            const size_t at = (size_t)t * k + 32 * b;
            const float *xb = x + at;
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(xb[j]));
            const float scale = amax / 127, inverse = scale != 0 ? 1 / scale : 0;
            int total = 0;
            for (int j = 0; j < 32; j++) {
                const int q = (int)rintf(xb[j] * inverse);
                qs[at + j] = (int8_t)q;
                if (residual) {
                    // |x − scale·q| ≤ scale/2, so |r| ≤ 64.
                    const int r = (int)rintf((xb[j] - scale * (float)q) * inverse * 128);
                    residual[at + j] = (int8_t)r;
                    total += 128 * q + r;
                } else {
                    total += q;
                }
            }
            d[(size_t)t * nb + b] = scale;
            sum[(size_t)t * nb + b] = residual ? scale * (float)total * (1.0f / 128) : scale * (float)total;
        }
    }
}

// The portable kernels: one (row, token) dot at a time, an exact int32 sum per block, then float.

static float half_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        const float v = (float)mant * 5.9604644775390625e-08f;  // 2^-24: zero and subnormals
        return sign ? -v : v;
    }
    bits = exp == 31 ? sign | 0x7f800000u | (mant << 13) : sign | ((exp + 112) << 23) | (mant << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// The activation as one integer per element, 128·q + residual with a residual, and its block scale to match.
static inline int act(const int8_t *q, const int8_t *r, int j) { return r ? 128 * q[j] + r[j] : q[j]; }
static inline float act_scale(const int8_t *r, float d) { return r ? d * (1.0f / 128) : d; }

// Q4_0: w = d·(U − 8), so w·a summed = d·da·Σ U·q − 8·d·(da·Σ q).
// Q4_1: w = d·U + m, so the offset term is m·(da·Σ q).
static inline float dot_q4(int format, const uint8_t *row, const int8_t *q, const int8_t *res, const float *da,
                           const float *sum, int nb) {
    const int bytes = vq_block_bytes(format), quants = format == Q4_0 ? 2 : 4;
    float acc = 0;
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = row + bytes * b;
        const int8_t *qb = q + 32 * b, *rb = res ? res + 32 * b : NULL;
        const float dw = half_to_float(vq_load_u16(blk));
        const float offset = format == Q4_0 ? -8 * dw : half_to_float(vq_load_u16(blk + 2));
        int isum = 0;
        for (int j = 0; j < 16; j++)
            isum += (blk[quants + j] & 15) * act(qb, rb, j) + (blk[quants + j] >> 4) * act(qb, rb, 16 + j);
        acc += dw * act_scale(res, da[b]) * (float)isum;
        acc += offset * sum[b];
    }
    return acc;
}

static float dot_q4_0(const uint8_t *row, const int8_t *q, const int8_t *res, const float *da, const float *sum,
                      int nb) {
    return dot_q4(Q4_0, row, q, res, da, sum, nb);
}

static float dot_q4_1(const uint8_t *row, const int8_t *q, const int8_t *res, const float *da, const float *sum,
                      int nb) {
    return dot_q4(Q4_1, row, q, res, da, sum, nb);
}

static float dot_q8_0(const uint8_t *row, const int8_t *q, const int8_t *res, const float *da, const float *sum,
                      int nb) {
    (void)sum;
    float acc = 0;
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = row + VQ_Q8_0_BYTES * b;
        const int8_t *w = (const int8_t *)(blk + 2), *qb = q + 32 * b, *rb = res ? res + 32 * b : NULL;
        int isum = 0;
        for (int j = 0; j < 32; j++) isum += w[j] * act(qb, rb, j);
        acc += half_to_float(vq_load_u16(blk)) * act_scale(res, da[b]) * (float)isum;
    }
    return acc;
}

typedef float (*dot_fn)(const uint8_t *, const int8_t *, const int8_t *, const float *, const float *, int);

static void matmul_portable(dot_fn dot, const void *weights, size_t row_bytes, int row_begin, int row_end,
                            vq_activations x, int tokens, float *y, size_t y_stride) {
    const int nb = x.k / 32;
    for (int r = row_begin; r < row_end; r++) {
        const uint8_t *row = (const uint8_t *)weights + (size_t)r * row_bytes;
        for (int t = 0; t < tokens; t++) {
            const size_t at = (size_t)t * x.k;
            y[(size_t)t * y_stride + r] = dot(row, x.qs + at, x.residual ? x.residual + at : NULL,
                                              x.d + (size_t)t * nb, x.sum + (size_t)t * nb, nb);
        }
    }
}

#define PORTABLE(fmt)                                                                                          \
    static void matmul_##fmt##_portable(const void *w, size_t rb, int r0, int r1, vq_activations x, int n,    \
                                        float *y, size_t ys) {                                                \
        matmul_portable(dot_##fmt, w, rb, r0, r1, x, n, y, ys);                                               \
    }
PORTABLE(q4_0)
PORTABLE(q4_1)
PORTABLE(q8_0)

// The portable kernels read x.residual when there is one.
const vq_kernels vq_kernels_portable = {
    VQ_ISA_PORTABLE, "portable C", matmul_q4_0_portable, matmul_q4_1_portable, matmul_q8_0_portable,
    matmul_q4_0_portable, matmul_q4_1_portable, matmul_q8_0_portable, quantize_portable,
};
