// One integer matmul kernel on one thread, on random weights: GMAC/s by thread CPU time (so another process on the
// machine distorts it less than wall time would). Build and run from the repository root:
//   clang -O3 -ISources/CQuantKernels/include bench/cpu/kernels.c Sources/CQuantKernels/*.c -o /tmp/kernels -lm
//   /tmp/kernels ROWS K TOKENS RESIDUAL(0|1) [FORMAT 0=Q4_0 1=Q4_1 2=Q8_0] [ISA 0=portable 1=AVX2 2=AVX-512 VNNI]
// e.g. `/tmp/kernels 65536 576 1 1` streams 24 MB of Q4_1 from memory like a decode step; `1536 576 64 1` stays in
// L2 like a prefill chunk.
#include "QuantKernels.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double thread_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s ROWS K TOKENS RESIDUAL [FORMAT] [ISA]\n", argv[0]);
        return 2;
    }
    const int rows = atoi(argv[1]), k = atoi(argv[2]), tokens = atoi(argv[3]), residual = atoi(argv[4]);
    const int format = argc > 5 ? atoi(argv[5]) : 1, isa = argc > 6 ? atoi(argv[6]) : vq_best_isa();
    const vq_kernels *kernels = vq_kernels_for((vq_isa)isa);
    if (!kernels || k % 32 || format < 0 || format > 2) {
        fprintf(stderr, "unsupported instruction set, format or K\n");
        return 2;
    }
    const int block = format == 0 ? 18 : format == 1 ? 20 : 34;
    const size_t row_bytes = (size_t)block * k / 32;
    uint8_t *w = malloc(row_bytes * rows);
    for (size_t i = 0; i < row_bytes * rows; i++) w[i] = (uint8_t)rand();
    const uint16_t scale = 0x2000;  // 2^-7 as a half: finite scales and minimums
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < k / 32; b++) {
            memcpy(w + r * row_bytes + (size_t)b * block, &scale, 2);
            if (format == 1) memcpy(w + r * row_bytes + (size_t)b * block + 2, &scale, 2);
        }
    float *x = malloc(sizeof(float) * tokens * k), *y = malloc(sizeof(float) * tokens * rows);
    for (int i = 0; i < tokens * k; i++) x[i] = (float)(rand() / (RAND_MAX + 1.0) - 0.5);
    int8_t *qs = malloc((size_t)tokens * k), *res = malloc((size_t)tokens * k);
    float *d = malloc(sizeof(float) * tokens * k / 32), *sum = malloc(sizeof(float) * tokens * k / 32);
    vq_quantize_rows(x, tokens, k, qs, residual ? res : NULL, d, sum);
    const vq_activations a = {qs, residual ? res : NULL, d, sum, k};
    const vq_matmul_fn fns[2][3] = {{kernels->q4_0, kernels->q4_1, kernels->q8_0},
                                    {kernels->q4_0_residual, kernels->q4_1_residual, kernels->q8_0_residual}};
    const vq_matmul_fn f = fns[residual != 0][format];
    const double macs = (double)rows * k * tokens;
    int repetitions = (int)(4e9 / macs);
    if (repetitions < 3) repetitions = 3;
    f(w, row_bytes, 0, rows, a, tokens, y, rows);
    const double start = thread_seconds();
    for (int i = 0; i < repetitions; i++) f(w, row_bytes, 0, rows, a, tokens, y, rows);
    const double seconds = thread_seconds() - start;
    printf("%s, %s, %d rows x %d, %d tokens, %s activations: %.1f GMAC/s\n", kernels->name,
           format == 0 ? "Q4_0" : format == 1 ? "Q4_1" : "Q8_0", rows, k, tokens, residual ? "16-bit" : "8-bit",
           macs * repetitions / seconds / 1e9);
    return 0;
}
