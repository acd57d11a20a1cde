// AVX2 kernels: one 32-element block per ymm, maddubs (unsigned weight bytes × signed activation bytes, pairs to
// int16) then madd (to int32). Register tiles of up to 2 rows × 2 tokens (16 ymm registers).
#include "internal.h"
#if defined(__x86_64__)
#include <immintrin.h>

#define TARGET __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline)) TARGET


// A weight block: unsigned quants (Q8_0: magnitudes; `signs` holds the signed bytes), its scale in every lane, and
// the offset term's weight side (Q4_0: −8·d, Q4_1: m).
typedef struct { __m256i w, signs; __m256 d, m; } row_step;
// A token's block: quants (and residuals), scale (/128 with residuals), block sum / 8 (8 lanes of offset · sum/8
// sum to it).
typedef struct { __m256i a, residual; __m256 d, s; } token_step;

INLINE row_step load_row(int format, const uint8_t *b) {
    row_step r;
    if (format == Q8_0) {
        r.signs = _mm256_loadu_si256((const __m256i *)(b + 2));
        r.w = _mm256_sign_epi8(r.signs, r.signs);
        r.d = _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(vq_load_u16(b))));
        r.m = _mm256_setzero_ps();
        return r;
    }
    const __m128i q = _mm_loadu_si128((const __m128i *)(b + (format == Q4_0 ? 2 : 4)));
    r.w = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(15));
    r.signs = _mm256_setzero_si256();
    if (format == Q4_0) {
        r.d = _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(vq_load_u16(b))));
        r.m = _mm256_mul_ps(r.d, _mm256_set1_ps(-8));
    } else {
        const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)vq_load_u32(b)));  // d m
        r.d = _mm256_broadcastss_ps(dm);
        r.m = _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
    }
    return r;
}

INLINE token_step load_token(int format, int with_residual, const int8_t *q, const int8_t *residual, const float *d,
                             const float *sum) {
    token_step t;
    t.a = _mm256_loadu_si256((const __m256i *)q);
    t.residual = with_residual ? _mm256_loadu_si256((const __m256i *)residual) : _mm256_setzero_si256();
    t.d = _mm256_broadcast_ss(d);
    if (with_residual) t.d = _mm256_mul_ps(t.d, _mm256_set1_ps(1.0f / 128));
    t.s = format == Q8_0 ? _mm256_setzero_ps() : _mm256_mul_ps(_mm256_broadcast_ss(sum), _mm256_set1_ps(0.125f));
    return t;
}

// The same operations for every (row, token), whatever tile it is in. maddubs cannot saturate: |pair| ≤ 2·128·127.
// With residuals the integer sum is Σ w·(128·q + residual): exact in int32 (|·| < 2^28).
INLINE __m256i dot_pairs(int format, row_step r, __m256i a) {
    if (format == Q8_0) a = _mm256_sign_epi8(a, r.signs);
    return _mm256_madd_epi16(_mm256_maddubs_epi16(r.w, a), _mm256_set1_epi16(1));
}

INLINE __m256 step(int format, int with_residual, row_step r, token_step t, __m256 acc) {
    __m256i sums = dot_pairs(format, r, t.a);
    if (with_residual) sums = _mm256_add_epi32(_mm256_slli_epi32(sums, 7), dot_pairs(format, r, t.residual));
    const __m256 products = _mm256_cvtepi32_ps(sums);
    acc = _mm256_fmadd_ps(_mm256_mul_ps(products, t.d), r.d, acc);
    if (format != Q8_0) acc = _mm256_fmadd_ps(r.m, t.s, acc);
    return acc;
}

INLINE float sum8(__m256 v) {
    const __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
}

INLINE void tile(int format, int with_residual, int R, int T, const uint8_t *w, size_t row_bytes, const int8_t *xq,
                 const int8_t *xr, const float *xd, const float *xs, int k, float *y, size_t y_stride) {
    const int nb = k / 32, bytes = vq_block_bytes(format);
    __m256 acc[2][2];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        row_step rows[2];
        for (int r = 0; r < R; r++) {
            const uint8_t *at = w + r * row_bytes + (size_t)b * bytes;
            _mm_prefetch((const char *)(at + VQ_PREFETCH_ROWS * row_bytes), _MM_HINT_T0);
            rows[r] = load_row(format, at);
        }
        for (int t = 0; t < T; t++) {
            const size_t at = (size_t)t * k + 32 * b;
            const token_step tk = load_token(format, with_residual, xq + at, with_residual ? xr + at : NULL,
                                             xd + (size_t)t * nb + b, xs + (size_t)t * nb + b);
            for (int r = 0; r < R; r++) acc[r][t] = step(format, with_residual, rows[r], tk, acc[r][t]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) y[(size_t)t * y_stride + r] = sum8(acc[r][t]);
}

#define TILE(R, T) tile(format, with_residual, R, T, row, row_bytes, xq, xr, xd, xs, x.k, out, y_stride)

INLINE void matmul(int format, int with_residual, const void *weights, size_t row_bytes, int row_begin, int row_end,
                   vq_activations x, int tokens, float *y, size_t y_stride) {
    const int nb = x.k / 32;
    for (int r = row_begin; r < row_end; r += 2) {
        const int nr = row_end - r < 2 ? row_end - r : 2;
        const uint8_t *row = (const uint8_t *)weights + (size_t)r * row_bytes;
        for (int t = 0; t < tokens; t += 2) {
            const int nt = tokens - t < 2 ? tokens - t : 2;
            const int8_t *xq = x.qs + (size_t)t * x.k, *xr = with_residual ? x.residual + (size_t)t * x.k : NULL;
            const float *xd = x.d + (size_t)t * nb, *xs = x.sum + (size_t)t * nb;
            float *out = y + (size_t)t * y_stride + r;
            switch (nr * 2 + nt) {
            case 3: TILE(1, 1); break;
            case 4: TILE(1, 2); break;
            case 5: TILE(2, 1); break;
            case 6: TILE(2, 2); break;
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

// Four rows of 8 int32 → 32 int8 in element order (the packs work within 128-bit lanes; the permute undoes it).
INLINE __m256i pack_bytes(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

INLINE int hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

// vq_quantize_rows, a block of 32 in four ymm: the portable version's roundings in its order, so the same bytes
// and floats.
static TARGET void quantize(const float *x, int tokens, int k, int8_t *qs, int8_t *residual, float *d, float *sum) {
    const int nb = k / 32;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int t = 0; t < tokens; t++) {
        for (int b = 0; b < nb; b++) {
            const size_t at = (size_t)t * k + 32 * b;
            __m256 xs[4], m = _mm256_setzero_ps();
            for (int i = 0; i < 4; i++) {
                xs[i] = _mm256_loadu_ps(x + at + 8 * i);
                m = _mm256_max_ps(m, _mm256_andnot_ps(sign, xs[i]));
            }
            __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            const float amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
            const float scale = amax / 127, inverse = scale != 0 ? 1 / scale : 0;
            const __m256 vs = _mm256_set1_ps(scale), vi = _mm256_set1_ps(inverse), v128 = _mm256_set1_ps(128);
            __m256i q[4], r[4], total = _mm256_setzero_si256();
            for (int i = 0; i < 4; i++) {
                q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(xs[i], vi));
                total = _mm256_add_epi32(total, q[i]);
            }
            _mm256_storeu_si256((__m256i *)(qs + at), pack_bytes(q[0], q[1], q[2], q[3]));
            if (residual) {
                total = _mm256_slli_epi32(total, 7);
                for (int i = 0; i < 4; i++) {
                    const __m256 e = _mm256_sub_ps(xs[i], _mm256_mul_ps(vs, _mm256_cvtepi32_ps(q[i])));
                    r[i] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_mul_ps(e, vi), v128));
                    total = _mm256_add_epi32(total, r[i]);
                }
                _mm256_storeu_si256((__m256i *)(residual + at), pack_bytes(r[0], r[1], r[2], r[3]));
            }
            const int isum = hsum_epi32(total);
            d[(size_t)t * nb + b] = scale;
            sum[(size_t)t * nb + b] = residual ? scale * (float)isum * (1.0f / 128) : scale * (float)isum;
        }
    }
}

const vq_kernels vq_kernels_avx2 = {
    VQ_ISA_AVX2, "AVX2", matmul_q4_0, matmul_q4_1, matmul_q8_0,
    matmul_q4_0_residual, matmul_q4_1_residual, matmul_q8_0_residual, quantize,
};
#endif
