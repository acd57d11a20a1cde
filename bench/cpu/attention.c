// The attention tile kernels (CFloatKernels) on one thread, SmolLM2's shape (9 query heads, 3 KV heads, head size
// 64, fp32 cache [token, head, dim]): ns per (query head, key) by thread CPU time. Decode: every sequence's cache
// is evicted before its step (64 MB streamed through, as the weights of a decode step do), so the keys come from
// memory as in the engine; prefill: 16 positions × 3 query heads per tile, cache warm. Build and run from the
// repository root:
//   clang -O3 -ffp-contract=off -ISources/CQuantKernels/include -ISources/CFloatKernels/include \
//       bench/cpu/attention.c Sources/CFloatKernels/*.c Sources/CQuantKernels/*.c -o /tmp/attention -lm
//   /tmp/attention decode CONTEXT SEQUENCES [ISA 0=portable 1=AVX2 2=AVX-512]
//   /tmp/attention prefill CHUNK OFFSET [ISA]
#include "FloatKernels.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { Q_HEADS = 9, KV_HEADS = 3, G = 3, D = 64, TILE = 64, ALIGN = VF_ROW_ALIGN };

static double thread_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static float *random_floats(size_t n) {
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = (float)rand() / (float)RAND_MAX * 2 - 1;
    return p;
}

// One work item (a KV head, `rows` query rows) over keys 0 … end − 1 in tiles, as Sources/Kernels does.
static void run_item(const vf_kernels *k, int transposed, int rows, const float *q, const long *limits,
                     const float *kcache, const float *vcache, int head, long end) {
    const int ld = transposed ? (rows + ALIGN - 1) / ALIGN * ALIGN : (TILE + ALIGN - 1) / ALIGN * ALIGN;
    const int per_row = transposed ? ld : rows;
    float *qs = calloc((size_t)(transposed ? D * ld : rows * D), 4), *acc = calloc((size_t)rows * D, 4);
    float *m = malloc(per_row * 4), *s = malloc((size_t)(transposed ? TILE * ld : rows * ld) * 4);
    float *correction = malloc(per_row * 4);
    double *l = calloc(per_row, 8);
    for (int r = 0; r < per_row; r++) m[r] = -INFINITY;
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < D; j++) qs[transposed ? j * ld + r : r * D + j] = q[r * D + j] * 0.125f;
    const vf_tile tile = {rows, D, ld, qs, acc, m, l, limits, s, correction};
    const float *keys[TILE], *values[TILE];
    for (long t = 0; t < end; t += TILE) {
        const int n = end - t < TILE ? (int)(end - t) : TILE;
        for (int i = 0; i < n; i++) {
            keys[i] = kcache + ((t + i) * KV_HEADS + head) * D;
            values[i] = vcache + ((t + i) * KV_HEADS + head) * D;
        }
        (transposed ? k->attend_transposed : k->attend)(&tile, keys, values, t, n);
    }
    free(qs); free(acc); free(m); free(s); free(correction); free(l);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s decode CONTEXT SEQUENCES [ISA] | prefill CHUNK OFFSET [ISA]\n", argv[0]);
        return 2;
    }
    const int decode = strcmp(argv[1], "decode") == 0, a = atoi(argv[2]), b = atoi(argv[3]);
    const int isa = argc > 4 ? atoi(argv[4]) : vq_best_isa();
    const vf_kernels *k = vf_kernels_for((vq_isa)isa);
    if (!k) { fprintf(stderr, "unsupported instruction set\n"); return 2; }
    const long tokens = decode ? (long)a * b : a + b;
    float *kcache = random_floats(tokens * KV_HEADS * D), *vcache = random_floats(tokens * KV_HEADS * D);
    // FLUSH=0 in the environment: decode with a warm cache instead.
    const size_t flush_bytes = getenv("FLUSH") && atoi(getenv("FLUSH")) == 0 ? 64 : (size_t)64 << 20;
    char *flush = malloc(flush_bytes);
    memset(flush, 1, flush_bytes);
    double seconds = 0, pairs = 0;
    for (int rep = 0; rep < 5; rep++) {
        if (decode) {
            for (int seq = 0; seq < b; seq++) {
                volatile char sink = 0;
                for (size_t i = 0; i < flush_bytes; i += 64) sink += flush[i];
                const size_t at = (size_t)seq * a * KV_HEADS * D;
                float *q = random_floats(Q_HEADS * D);
                long limits[G] = {a - 1, a - 1, a - 1};
                const double t0 = thread_seconds();
                for (int h = 0; h < KV_HEADS; h++)
                    run_item(k, 0, G, q + h * G * D, limits, kcache + at, vcache + at, h, a);
                seconds += thread_seconds() - t0;
                pairs += (double)Q_HEADS * a;
                free(q);
            }
        } else {
            const int chunk = a, offset = b;
            float *q = random_floats((size_t)chunk * Q_HEADS * D);
            const double t0 = thread_seconds();
            for (int p0 = 0; p0 < chunk; p0 += 16) {
                const int positions = chunk - p0 < 16 ? chunk - p0 : 16;
                for (int h = 0; h < KV_HEADS; h++) {
                    float rows_q[16 * G * D];
                    long limits[16 * G];
                    for (int p = 0; p < positions; p++)
                        for (int r = 0; r < G; r++) {
                            memcpy(rows_q + (p * G + r) * D, q + ((size_t)(p0 + p) * Q_HEADS + h * G + r) * D, D * 4);
                            limits[p * G + r] = offset + p0 + p;
                        }
                    run_item(k, 1, positions * G, rows_q, limits, kcache, vcache, h, offset + p0 + positions);
                }
            }
            seconds += thread_seconds() - t0;
            for (int p = 0; p < chunk; p++) pairs += (double)Q_HEADS * (offset + p + 1);
            free(q);
        }
    }
    printf("%s %s %d %d: %.2f ns per (query head, key)\n", k->name, argv[1], a, b, seconds / pairs * 1e9);
    return 0;
}
