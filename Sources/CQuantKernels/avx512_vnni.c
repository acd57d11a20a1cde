// AVX-512 VNNI kernels: two 32-element blocks per zmm, vpdpbusd (unsigned weight bytes × signed activation bytes).
// Register tiles of up to 4 rows × 4 tokens: each weight block is unpacked once per tile step, not once per token.
#include "internal.h"
#if defined(__x86_64__)
#include <immintrin.h>

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")))
#define INLINE static inline __attribute__((always_inline)) TARGET


// A weight row's two blocks: unsigned quants (Q8_0: magnitudes, with the signs in `negative`), the scale of each
// block in 8 lanes, and the offset term's weight side (Q4_0: −8·d, Q4_1: m).
typedef struct { __m512i w; __m512 d, m; __mmask64 negative; } row_step;
// A token's two blocks: quants (and residuals), scale in 8 lanes (/128 with residuals), block sum / 8 in 8 lanes
// (8 lanes of offset · sum/8 sum to it).
typedef struct { __m512i a, residual; __m512 d, s; } token_step;

// [v[0] in lanes 0–7, v[1] in lanes 8–15].
INLINE __m512 spread_pair(__m128 v) {
    return _mm512_permutexvar_ps(_mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
                                 _mm512_castps128_ps512(v));
}

INLINE row_step load_row(int format, const uint8_t *b0, int two) {
    row_step r;
    const int bytes = vq_block_bytes(format);
    if (format == Q8_0) {
        const __m256i q0 = _mm256_loadu_si256((const __m256i *)(b0 + 2));
        const __m512i z = two ? _mm512_inserti64x4(_mm512_castsi256_si512(q0),
                                                   _mm256_loadu_si256((const __m256i *)(b0 + bytes + 2)), 1)
                              : _mm512_zextsi256_si512(q0);
        r.negative = _mm512_movepi8_mask(z);
        r.w = _mm512_abs_epi8(z);
        const uint32_t h = vq_load_u16(b0) | (two ? (uint32_t)vq_load_u16(b0 + bytes) << 16 : 0);
        r.d = spread_pair(_mm_cvtph_ps(_mm_cvtsi32_si128((int)h)));
        r.m = _mm512_setzero_ps();
        return r;
    }
    const int offset = format == Q4_0 ? 2 : 4;
    const __m256i lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(b0 + offset)));
    __m512i z = two ? _mm512_inserti64x4(_mm512_castsi256_si512(lo),
                                         _mm256_broadcastsi128_si256(
                                             _mm_loadu_si128((const __m128i *)(b0 + bytes + offset))), 1)
                    : _mm512_zextsi256_si512(lo);
    // Each block's 16 bytes sit twice in a row: low nibbles (elements 0–15) from the first copy, high (16–31) from
    // the second.
    z = _mm512_mask_blend_epi64(0xCC, z, _mm512_srli_epi16(z, 4));
    r.w = _mm512_and_si512(z, _mm512_set1_epi8(15));
    r.negative = 0;
    if (format == Q4_0) {
        const uint32_t h = vq_load_u16(b0) | (two ? (uint32_t)vq_load_u16(b0 + bytes) << 16 : 0);
        r.d = spread_pair(_mm_cvtph_ps(_mm_cvtsi32_si128((int)h)));
        r.m = _mm512_mul_ps(r.d, _mm512_set1_ps(-8));
    } else {
        const int dm1 = two ? (int)vq_load_u32(b0 + bytes) : 0;
        const __m128 dm = _mm_cvtph_ps(_mm_set_epi32(0, 0, dm1, (int)vq_load_u32(b0)));
        const __m512 v = _mm512_castps128_ps512(dm);  // d0 m0 d1 m1
        r.d = _mm512_permutexvar_ps(_mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0), v);
        r.m = _mm512_permutexvar_ps(_mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1), v);
    }
    return r;
}

INLINE __m512i load_quants(const int8_t *q, int two) {
    return two ? _mm512_loadu_si512(q) : _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)q));
}

INLINE token_step load_token(int format, int with_residual, const int8_t *q, const int8_t *residual, const float *d,
                             const float *sum, int two) {
    token_step t;
    t.a = load_quants(q, two);
    t.residual = with_residual ? load_quants(residual, two) : _mm512_setzero_si512();
    t.d = spread_pair(two ? _mm_castpd_ps(_mm_load_sd((const double *)d)) : _mm_load_ss(d));
    if (with_residual) t.d = _mm512_mul_ps(t.d, _mm512_set1_ps(1.0f / 128));
    t.s = format == Q8_0 ? _mm512_setzero_ps()
                         : _mm512_mul_ps(spread_pair(two ? _mm_castpd_ps(_mm_load_sd((const double *)sum))
                                                         : _mm_load_ss(sum)),
                                         _mm512_set1_ps(0.125f));
    return t;
}

// The same operations for every (row, token), whatever tile it is in.
// With residuals the integer sum is Σ w·(128·q + residual): exact in int32 (|·| < 2^28).
INLINE __m512 step(int format, int with_residual, row_step r, token_step t, __m512 acc) {
    const __m512i zero = _mm512_setzero_si512();
    __m512i a = t.a, residual = t.residual;
    if (format == Q8_0) {
        a = _mm512_mask_sub_epi8(a, r.negative, zero, a);
        if (with_residual) residual = _mm512_mask_sub_epi8(residual, r.negative, zero, residual);
    }
    __m512i sums = _mm512_dpbusd_epi32(zero, r.w, a);
    if (with_residual) sums = _mm512_dpbusd_epi32(_mm512_slli_epi32(sums, 7), r.w, residual);
    const __m512 products = _mm512_cvtepi32_ps(sums);
    acc = _mm512_fmadd_ps(_mm512_mul_ps(products, t.d), r.d, acc);
    if (format != Q8_0) acc = _mm512_fmadd_ps(r.m, t.s, acc);
    return acc;
}

INLINE void tile(int format, int with_residual, int R, int T, const uint8_t *w, size_t row_bytes, const int8_t *xq,
                 const int8_t *xr, const float *xd, const float *xs, int k, float *y, size_t y_stride) {
    const int nb = k / 32, bytes = vq_block_bytes(format);
    __m512 acc[4][4];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = _mm512_setzero_ps();
    int b = 0;
    for (; b + 2 <= nb; b += 2) {
        row_step rows[4];
        for (int r = 0; r < R; r++) {
            const uint8_t *at = w + r * row_bytes + (size_t)b * bytes;
            // Both blocks, VQ_PREFETCH_ROWS rows on (without it ~2.5× slower on SmolLM2's shapes).
            _mm_prefetch((const char *)(at + VQ_PREFETCH_ROWS * row_bytes), _MM_HINT_T0);
            _mm_prefetch((const char *)(at + VQ_PREFETCH_ROWS * row_bytes + 64), _MM_HINT_T0);
            rows[r] = load_row(format, at, 1);
        }
        for (int t = 0; t < T; t++) {
            const size_t at = (size_t)t * k + 32 * b;
            const token_step tk = load_token(format, with_residual, xq + at, with_residual ? xr + at : NULL,
                                             xd + (size_t)t * nb + b, xs + (size_t)t * nb + b, 1);
            for (int r = 0; r < R; r++) acc[r][t] = step(format, with_residual, rows[r], tk, acc[r][t]);
        }
    }
    if (b < nb) {
        row_step rows[4];
        for (int r = 0; r < R; r++) rows[r] = load_row(format, w + r * row_bytes + (size_t)b * bytes, 0);
        for (int t = 0; t < T; t++) {
            const size_t at = (size_t)t * k + 32 * b;
            const token_step tk = load_token(format, with_residual, xq + at, with_residual ? xr + at : NULL,
                                             xd + (size_t)t * nb + b, xs + (size_t)t * nb + b, 0);
            for (int r = 0; r < R; r++) acc[r][t] = step(format, with_residual, rows[r], tk, acc[r][t]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) y[(size_t)t * y_stride + r] = _mm512_reduce_add_ps(acc[r][t]);
}

#define TILE(R, T) tile(format, with_residual, R, T, row, row_bytes, xq, xr, xd, xs, x.k, out, y_stride)

INLINE void matmul(int format, int with_residual, const void *weights, size_t row_bytes, int row_begin, int row_end,
                   vq_activations x, int tokens, float *y, size_t y_stride) {
    const int nb = x.k / 32;
    for (int r = row_begin; r < row_end; r += 4) {
        const int nr = row_end - r < 4 ? row_end - r : 4;
        const uint8_t *row = (const uint8_t *)weights + (size_t)r * row_bytes;
        for (int t = 0; t < tokens; t += 4) {
            const int nt = tokens - t < 4 ? tokens - t : 4;
            const int8_t *xq = x.qs + (size_t)t * x.k, *xr = with_residual ? x.residual + (size_t)t * x.k : NULL;
            const float *xd = x.d + (size_t)t * nb, *xs = x.sum + (size_t)t * nb;
            float *out = y + (size_t)t * y_stride + r;
            switch (nr * 4 + nt) {
            case 5: TILE(1, 1); break;
            case 6: TILE(1, 2); break;
            case 7: TILE(1, 3); break;
            case 8: TILE(1, 4); break;
            case 9: TILE(2, 1); break;
            case 10: TILE(2, 2); break;
            case 11: TILE(2, 3); break;
            case 12: TILE(2, 4); break;
            case 13: TILE(3, 1); break;
            case 14: TILE(3, 2); break;
            case 15: TILE(3, 3); break;
            case 16: TILE(3, 4); break;
            case 17: TILE(4, 1); break;
            case 18: TILE(4, 2); break;
            case 19: TILE(4, 3); break;
            case 20: TILE(4, 4); break;
            }
        }
    }
}

#define KERNEL(name, format, with_residual)                                                                \
    static TARGET void name(const void *w, size_t rb, int r0, int r1, vq_activations x, int n, float *y,      \
                            size_t ys) {                                                                       \
        matmul(format, with_residual, w, rb, r0, r1, x, n, y, ys);                                              \
    }
KERNEL(matmul_q4_0, Q4_0, 0)
KERNEL(matmul_q4_1, Q4_1, 0)
KERNEL(matmul_q8_0, Q8_0, 0)
KERNEL(matmul_q4_0_residual, Q4_0, 1)
KERNEL(matmul_q4_1_residual, Q4_1, 1)
KERNEL(matmul_q8_0_residual, Q8_0, 1)

// vq_quantize_rows, a block of 32 in two zmm: the portable version's roundings in its order (max is exact, the
// conversions round to nearest even as rintf does, the integer sum is exact), so the same bytes and floats.
static TARGET void quantize(const float *x, int tokens, int k, int8_t *qs, int8_t *residual, float *d, float *sum) {
    const int nb = k / 32;
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (int t = 0; t < tokens; t++) {
        for (int b = 0; b < nb; b++) {
            const size_t at = (size_t)t * k + 32 * b;
            const __m512 x0 = _mm512_loadu_ps(x + at), x1 = _mm512_loadu_ps(x + at + 16);
            const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_andnot_ps(sign, x0),
                                                                  _mm512_andnot_ps(sign, x1)));
            const float scale = amax / 127, inverse = scale != 0 ? 1 / scale : 0;
            const __m512 vs = _mm512_set1_ps(scale), vi = _mm512_set1_ps(inverse);
            const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, vi));
            const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, vi));
            _mm_storeu_si128((__m128i *)(qs + at), _mm512_cvtsepi32_epi8(q0));
            _mm_storeu_si128((__m128i *)(qs + at + 16), _mm512_cvtsepi32_epi8(q1));
            __m512i total = _mm512_add_epi32(q0, q1);
            if (residual) {
                const __m512 v128 = _mm512_set1_ps(128);
                const __m512i r0 = _mm512_cvtps_epi32(_mm512_mul_ps(
                    _mm512_mul_ps(_mm512_sub_ps(x0, _mm512_mul_ps(vs, _mm512_cvtepi32_ps(q0))), vi), v128));
                const __m512i r1 = _mm512_cvtps_epi32(_mm512_mul_ps(
                    _mm512_mul_ps(_mm512_sub_ps(x1, _mm512_mul_ps(vs, _mm512_cvtepi32_ps(q1))), vi), v128));
                _mm_storeu_si128((__m128i *)(residual + at), _mm512_cvtsepi32_epi8(r0));
                _mm_storeu_si128((__m128i *)(residual + at + 16), _mm512_cvtsepi32_epi8(r1));
                total = _mm512_add_epi32(_mm512_slli_epi32(total, 7), _mm512_add_epi32(r0, r1));
            }
            const int isum = _mm512_reduce_add_epi32(total);
            d[(size_t)t * nb + b] = scale;
            sum[(size_t)t * nb + b] = residual ? scale * (float)isum * (1.0f / 128) : scale * (float)isum;
        }
    }
}

const vq_kernels vq_kernels_avx512_vnni = {
    VQ_ISA_AVX512_VNNI, "AVX-512 VNNI", matmul_q4_0, matmul_q4_1, matmul_q8_0,
    matmul_q4_0_residual, matmul_q4_1_residual, matmul_q8_0_residual, quantize,
};
#endif
