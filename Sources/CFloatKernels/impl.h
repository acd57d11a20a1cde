// The float kernels, written once on clang's vector types and compiled once per instruction set: portable.c,
// avx2.c and avx512.c define, before including this file,
//   VW          floats per vector: 4, 8, 16
//   TARGET      the functions' attribute (target("…"), or nothing for portable)
//   NAME(x)     x with the instruction set's suffix
//   FUSED       1 where the instruction set has FMA: MADD is then one rounding
//   PV_ROWS     rows of a P·V register tile (PV_COLS vectors of columns each)
//   SCORE_ROWS  row vectors (up to 4) of a transposed-scores register tile, × SCORE_KEYS (4) keys
// The target is built with -ffp-contract=off: every rounding is one this file asks for.
#include "internal.h"
#include <math.h>
#include <string.h>

enum { SCORE_KEYS = 4 };

typedef float vf __attribute__((ext_vector_type(VW)));
typedef int vi __attribute__((ext_vector_type(VW)));
typedef double vd __attribute__((ext_vector_type(VW / 2)));
typedef float f2 __attribute__((ext_vector_type(2)));
typedef float f4 __attribute__((ext_vector_type(4)));
typedef float f8 __attribute__((ext_vector_type(8)));
typedef double d2 __attribute__((ext_vector_type(2)));
typedef double d4 __attribute__((ext_vector_type(4)));

#define INLINE static inline __attribute__((always_inline)) TARGET

INLINE vf load(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
INLINE void store(float *p, vf v) { memcpy(p, &v, sizeof v); }
INLINE vf splat(float x) { return (vf)(x); }

#if FUSED
INLINE vf madd(vf a, vf b, vf c) { return __builtin_elementwise_fma(a, b, c); }
#else
INLINE vf madd(vf a, vf b, vf c) { return a * b + c; }
#endif

INLINE vf select(vi mask, vf a, vf b) { return mask ? a : b; }
INLINE vf vmax(vf a, vf b) { return select(a > b, a, b); }

// Horizontal sum and max, halves first: a fixed tree.
INLINE float hsum(vf v) {
#if VW == 16
    const f8 h = v.lo + v.hi;
    const f4 q = h.lo + h.hi;
#elif VW == 8
    const f4 q = v.lo + v.hi;
#else
    const f4 q = v;
#endif
    const f2 p = q.lo + q.hi;
    return p.x + p.y;
}

INLINE float hmax(vf v) {
    float m = v[0];
    for (int i = 1; i < VW; i++) m = v[i] > m ? v[i] : m;
    return m;
}

INLINE double hsum_d(vd v) {
#if VW == 16
    const d4 h = v.lo + v.hi;
    const d2 q = h.lo + h.hi;
#elif VW == 8
    const d2 q = v.lo + v.hi;
#else
    const d2 q = v;
#endif
    return q.x + q.y;
}

// e^x: Cephes expf (round(x / ln 2) range reduction, degree-6 polynomial, a few ulp). Below −87.33654 (−inf
// included) exactly 0, which masked scores need; NaN stays NaN; e^0 is exactly 1.
INLINE vf vexp(vf x) {
    const vf lo = splat(-87.33654f), hi = splat(88.37626f), magic = splat(12582912.0f);  // 1.5·2^23
    const vi underflow = x < lo;
    x = select(underflow, lo, x);
    x = select(x > hi, hi, x);
    const vf t = madd(x, splat(1.44269504f), magic);
    const vf n = t - magic;
    vf r = madd(n, splat(-0.693359375f), x);
    r = madd(n, splat(2.12194440e-4f), r);
    vf y = splat(1.9875691500e-4f);
    y = madd(y, r, splat(1.3981999507e-3f));
    y = madd(y, r, splat(8.3334519073e-3f));
    y = madd(y, r, splat(4.1665795894e-2f));
    y = madd(y, r, splat(1.6666665459e-1f));
    y = madd(y, r, splat(5.0000001201e-1f));
    y = madd(y, r * r, r) + 1;
    const vi pow2 = (((vi)t - (vi)magic) + 127) << 23;
    return select(underflow, splat(0), y * (vf)pow2);
}

INLINE float exp1(float x) { return vexp(splat(x))[0]; }

// MARK: attention

INLINE int visible(long limit, long t0, int n) {
    const long v = limit + 1 - t0;
    return v < 0 ? 0 : v > n ? n : (int)v;
}

// Key rows this many ahead are fetched into the cache while the current one is used.
enum { PREFETCH_KEYS = 16 };

INLINE void prefetch_row(const float *row, int d) {
    const char *p = (const char *)row;
    for (int b = 0; b < d * 4; b += 64) __builtin_prefetch(p + b);
    __builtin_prefetch(p + d * 4 - 1);  // the last line of a row that does not start on one
}

INLINE float dot(const float *a, const float *b, int d) {
    vf s0 = splat(0), s1 = splat(0);
    int j = 0;
    for (; j + 2 * VW <= d; j += 2 * VW) {
        s0 = madd(load(a + j), load(b + j), s0);
        s1 = madd(load(a + j + VW), load(b + j + VW), s1);
    }
    if (j < d) s0 = madd(load(a + j), load(b + j), s0);
    return hsum(s0 + s1);
}

// acc[r] = acc[r]·correction[r] + Σ_i p(r, i)·values[i] for the G rows r0 … r0 + G − 1 (same limit, `valid` keys),
// PV_COLS vectors of columns at a time in registers; p(r, i) = p[r·p_row + i·p_key]. A row's operations are the
// same for every G.
INLINE void pv_rows(const int G, const vf_tile *w, int r0, const float *const *values, int valid, const float *p,
                    int p_row, int p_key, const float *correction) {
    const int d = w->head_dim;
    int j = 0;
    for (; j + PV_COLS * VW <= d; j += PV_COLS * VW) {
        vf a[PV_ROWS][PV_COLS];
        for (int g = 0; g < G; g++)
            for (int c = 0; c < PV_COLS; c++)
                a[g][c] = load(w->acc + (size_t)(r0 + g) * d + j + c * VW) * correction[r0 + g];
        for (int i = 0; i < valid; i++) {
            vf v[PV_COLS];
            for (int c = 0; c < PV_COLS; c++) v[c] = load(values[i] + j + c * VW);
            for (int g = 0; g < G; g++) {
                const vf pi = splat(p[(r0 + g) * p_row + i * p_key]);
                for (int c = 0; c < PV_COLS; c++) a[g][c] = madd(pi, v[c], a[g][c]);
            }
        }
        for (int g = 0; g < G; g++)
            for (int c = 0; c < PV_COLS; c++) store(w->acc + (size_t)(r0 + g) * d + j + c * VW, a[g][c]);
    }
    for (; j < d; j += VW) {
        vf a[PV_ROWS];
        for (int g = 0; g < G; g++) a[g] = load(w->acc + (size_t)(r0 + g) * d + j) * correction[r0 + g];
        for (int i = 0; i < valid; i++) {
            const vf v = load(values[i] + j);
            for (int g = 0; g < G; g++) a[g] = madd(splat(p[(r0 + g) * p_row + i * p_key]), v, a[g]);
        }
        for (int g = 0; g < G; g++) store(w->acc + (size_t)(r0 + g) * d + j, a[g]);
    }
}

// P·V for every row with a visible key, in groups of up to PV_ROWS consecutive rows of the same limit (the query
// heads of one position share each V row loaded).
INLINE void pv(const vf_tile *w, const float *const *values, long t0, int n, const float *p, int p_row, int p_key) {
    int r = 0;
    while (r < w->rows) {
        int g = 1;
        while (g < PV_ROWS && r + g < w->rows && w->limit[r + g] == w->limit[r]) g++;
        const int valid = visible(w->limit[r], t0, n);
        if (valid > 0) {
            switch (g) {
#define PV_CASE(G) case G: pv_rows(G, w, r, values, valid, p, p_row, p_key, w->correction); break;
            PV_CASE(1)
            PV_CASE(2)
#if PV_ROWS > 2
            PV_CASE(3)
            PV_CASE(4)
#endif
#undef PV_CASE
            }
        }
        r += g;
    }
}

TARGET static void NAME(attend)(const vf_tile *w, const float *const *keys, const float *const *values, long t0,
                                int n) {
    const int rows = w->rows, d = w->head_dim, ld = w->ld;
    int most = 0;
    for (int r = 0; r < rows; r++) {
        const int v = visible(w->limit[r], t0, n);
        most = v > most ? v : most;
    }
    if (most == 0) return;
    // Scores: key-outer, so each key row is read once for all rows. In decode the cache has usually been evicted by
    // the weights streaming through since the last step: the rows come from memory, so fetch them ahead.
    for (int i = 0; i < PREFETCH_KEYS && i < most; i++) prefetch_row(keys[i], d);
    for (int i = 0; i < most; i++) {
        if (i + PREFETCH_KEYS < most) prefetch_row(keys[i + PREFETCH_KEYS], d);
        prefetch_row(values[i], d);  // used after all the scores
        for (int r = 0; r < rows; r++)
            if (t0 + i <= w->limit[r]) w->s[r * ld + i] = dot(w->q + (size_t)r * d, keys[i], d);
    }
    for (int r = 0; r < rows; r++) {
        const int valid = visible(w->limit[r], t0, n);
        if (valid == 0) continue;
        float *s = w->s + r * ld;
        const int padded = (valid + VW - 1) / VW * VW;
        for (int i = valid; i < padded; i++) s[i] = -INFINITY;
        vf mx = splat(-INFINITY);
        for (int i = 0; i < padded; i += VW) mx = vmax(mx, load(s + i));
        const float m_old = w->m[r], m_tile = hmax(mx), m_new = m_tile > m_old ? m_tile : m_old;
        w->correction[r] = m_old == -INFINITY ? 0 : exp1(m_old - m_new);
        w->m[r] = m_new;
        vd sum0 = 0, sum1 = 0;
        for (int i = 0; i < padded; i += VW) {
            const vf p = vexp(load(s + i) - m_new);
            store(s + i, p);
            sum0 += __builtin_convertvector(p.lo, vd);
            sum1 += __builtin_convertvector(p.hi, vd);
        }
        w->l[r] = w->l[r] * (double)w->correction[r] + hsum_d(sum0 + sum1);
    }
    pv(w, values, t0, n, w->s, ld, 1);
}

// Transposed scores for row vectors rv … rv + RV − 1 and keys i … i + K − 1:
// s[key][rows] = Σ_j k[key][j]·q[j][rows], j in order (each (key, row) a chain of multiply-adds of its own).
INLINE void scores_block(const int RV, const int K, const vf_tile *w, const float *const *keys, int rv, int i) {
    const int d = w->head_dim, ld = w->ld;
    vf a[SCORE_KEYS][SCORE_ROWS];
    for (int k = 0; k < K; k++)
        for (int v = 0; v < RV; v++) a[k][v] = splat(0);
    const float *q = w->q + rv * VW;
    for (int j = 0; j < d; j++) {
        vf qv[SCORE_ROWS];
        for (int v = 0; v < RV; v++) qv[v] = load(q + (size_t)j * ld + v * VW);
        for (int k = 0; k < K; k++) {
            const vf kj = splat(keys[i + k][j]);
            for (int v = 0; v < RV; v++) a[k][v] = madd(kj, qv[v], a[k][v]);
        }
    }
    for (int k = 0; k < K; k++)
        for (int v = 0; v < RV; v++) store(w->s + (size_t)(i + k) * ld + (rv + v) * VW, a[k][v]);
}

TARGET static void NAME(attend_transposed)(const vf_tile *w, const float *const *keys, const float *const *values,
                                           long t0, int n) {
    const int rows = w->rows, ld = w->ld, vectors = (rows + VW - 1) / VW;
    int most = 0;
    for (int r = 0; r < rows; r++) {
        const int v = visible(w->limit[r], t0, n);
        most = v > most ? v : most;
    }
    if (most == 0) return;
    for (int rv = 0; rv < vectors; rv += SCORE_ROWS) {
        const int nv = vectors - rv < SCORE_ROWS ? vectors - rv : SCORE_ROWS;
        for (int i = 0; i < most; i += SCORE_KEYS) {
            const int nk = most - i < SCORE_KEYS ? most - i : SCORE_KEYS;
            switch ((nv - 1) * 4 + nk - 1) {
#define SCORES(RV, K) case (RV - 1) * 4 + K - 1: scores_block(RV, K, w, keys, rv, i); break;
            SCORES(1, 1) SCORES(1, 2) SCORES(1, 3) SCORES(1, 4)
#if SCORE_ROWS > 1
            SCORES(2, 1) SCORES(2, 2) SCORES(2, 3) SCORES(2, 4)
#endif
#if SCORE_ROWS > 2
            SCORES(3, 1) SCORES(3, 2) SCORES(3, 3) SCORES(3, 4)
            SCORES(4, 1) SCORES(4, 2) SCORES(4, 3) SCORES(4, 4)
#endif
#undef SCORES
            }
        }
    }
    // The online softmax, a vector of rows at a time: keys past a row's limit (and padding rows) are −inf.
    for (int rv = 0; rv < vectors; rv++) {
        const int r0 = rv * VW;
        vi last;  // the last visible key of each row, relative to t0 (−1: none)
        for (int k = 0; k < VW; k++) last[k] = r0 + k < rows ? visible(w->limit[r0 + k], t0, n) - 1 : -1;
        vf mx = splat(-INFINITY);
        for (int i = 0; i < most; i++) {
            float *s = w->s + (size_t)i * ld + r0;
            const vf x = select((vi)(i) > last, splat(-INFINITY), load(s));
            store(s, x);
            mx = vmax(mx, x);
        }
        const vf m_old = load(w->m + r0), m_new = vmax(mx, m_old);
        const vf m_safe = select(m_new == -INFINITY, splat(0), m_new);  // no key yet: p = e^−inf = 0, not NaN
        const vf correction = select(m_old == -INFINITY, splat(0), vexp(m_old - m_new));
        store(w->m + r0, m_new);
        store(w->correction + r0, correction);
        vd sum0 = 0, sum1 = 0;
        for (int i = 0; i < most; i++) {
            float *s = w->s + (size_t)i * ld + r0;
            const vf p = vexp(load(s) - m_safe);
            store(s, p);
            sum0 += __builtin_convertvector(p.lo, vd);
            sum1 += __builtin_convertvector(p.hi, vd);
        }
        vd l0, l1;
        memcpy(&l0, w->l + r0, sizeof l0);
        memcpy(&l1, w->l + r0 + VW / 2, sizeof l1);
        l0 = l0 * __builtin_convertvector(correction.lo, vd) + sum0;
        l1 = l1 * __builtin_convertvector(correction.hi, vd) + sum1;
        memcpy(w->l + r0, &l0, sizeof l0);
        memcpy(w->l + r0 + VW / 2, &l1, sizeof l1);
    }
    pv(w, values, t0, n, w->s, 1, ld);
}

// MARK: RMSNorm, RoPE, SiLU·mul

TARGET static void NAME(rms_norm)(const float *x, int rows, int width, const float *weight, float epsilon,
                                  float *y) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * width;
        float *yr = y + (size_t)r * width;
        vd sum0 = 0, sum1 = 0;
        int j = 0;
        for (; j + VW <= width; j += VW) {
            const vf v = load(xr + j), sq = v * v;
            sum0 += __builtin_convertvector(sq.lo, vd);
            sum1 += __builtin_convertvector(sq.hi, vd);
        }
        double sum = hsum_d(sum0 + sum1);
        for (; j < width; j++) sum += (double)(xr[j] * xr[j]);
        const float inverse = 1 / (float)sqrt(sum / width + (double)epsilon);
        j = 0;
        for (; j + VW <= width; j += VW) store(yr + j, load(xr + j) * inverse * load(weight + j));
        for (; j < width; j++) yr[j] = xr[j] * inverse * weight[j];
    }
}

// (a, b) pairs swapped: (b, a).
INLINE vf swap_pairs(vf v) {
#if VW == 16
    return __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
#elif VW == 8
    return __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
#else
    return __builtin_shufflevector(v, v, 1, 0, 3, 2);
#endif
}

// a·cos − b·sin and b·cos + a·sin, each a product pair then one add (not fused: the same numbers on every path).
TARGET static void NAME(rope)(float *x, int heads, int head_dim, const float *cos_sin) {
    const float *c = cos_sin, *s = cos_sin + head_dim;
    for (int h = 0; h < heads; h++) {
        float *p = x + (size_t)h * head_dim;
        int j = 0;
        for (; j + VW <= head_dim; j += VW) {
            const vf v = load(p + j);
            store(p + j, v * load(c + j) + swap_pairs(v) * load(s + j));
        }
        for (; j < head_dim; j += 2) {
            const float a = p[j], b = p[j + 1];
            p[j] = a * c[j] + b * s[j];
            p[j + 1] = b * c[j + 1] + a * s[j + 1];
        }
    }
}

TARGET static void NAME(silu_mul)(float *gate, const float *up, size_t count) {
    size_t i = 0;
    for (; i + VW <= count; i += VW) {
        const vf g = load(gate + i);
        store(gate + i, g / (1 + vexp(-g)) * load(up + i));
    }
    for (; i < count; i++) gate[i] = gate[i] / (1 + exp1(-gate[i])) * up[i];
}

TARGET static void NAME(exp)(const float *x, float *y, size_t count) {
    size_t i = 0;
    for (; i + VW <= count; i += VW) store(y + i, vexp(load(x + i)));
    for (; i < count; i++) y[i] = exp1(x[i]);
}
