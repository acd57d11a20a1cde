#ifndef QUANT_KERNELS_H
#define QUANT_KERNELS_H
// Integer matrix products of ggml-quantized weights (Q4_0, Q4_1, Q8_0, in their stored layout) with activations
// quantized to 8 bits per block of 32, one function per instruction set; see docs/decisions/001-cpu-integer-matmul.md.
#include <stddef.h>
#include <stdint.h>

/// Instruction sets a kernel can be built for, best last.
typedef enum {
    VQ_ISA_PORTABLE = 0,
    VQ_ISA_AVX2 = 1,
    VQ_ISA_AVX512_VNNI = 2,
} vq_isa;

/// The best instruction set this CPU and its OS support (cpuid, and xgetbv for the saved register state).
vq_isa vq_best_isa(void);
/// Whether kernels for `isa` can run here.
int vq_isa_supported(vq_isa isa);

/// Activations quantized per token, per block of 32: x[t][32b + j] ≈ d[t][b] · qs[t][32b + j], or, with a
/// `residual`, ≈ d[t][b] · (qs + residual / 128) (error ≤ d/256 instead of d/2); sum[t][b] = d[t][b] · Σ_j of
/// that quantized value (the offset term of Q4_0 and Q4_1 weights needs it).
/// Rows are `k` int8 apart in `qs` and `residual`, `k / 32` floats apart in `d` and `sum`.
typedef struct {
    const int8_t *qs;
    const int8_t *residual;  // NULL: 8 bits only
    const float *d;
    const float *sum;
    int k;
} vq_activations;

/// Quantizes `tokens` rows of `k` floats (k a multiple of 32) into `qs`, `residual` (may be NULL), `d`, `sum`
/// (sizes as in vq_activations): d = max |x| / 127 per block, q = x / d and residual = (x − d·q) / (d / 128), each
/// rounded to nearest even. Each row is quantized on its own. Every instruction set's version gives the same bytes
/// and floats (the same roundings in the same order); this one runs the best one's.
void vq_quantize_rows(const float *x, int tokens, int k, int8_t *qs, int8_t *residual, float *d, float *sum);
typedef void (*vq_quantize_fn)(const float *x, int tokens, int k, int8_t *qs, int8_t *residual, float *d,
                               float *sum);

/// y[t · y_stride + r] = row r of the weights · token t, for rows [row_begin, row_end) and tokens [0, tokens).
/// `weights` is row 0 of a tensor whose rows are `row_bytes` apart and `x.k` elements long.
/// Every (row, token) result is computed by the same sequence of operations whatever `tokens`, the row range and
/// the neighbours in the batch are: results are batch-invariant. The `_residual` kernels read x.residual too.
typedef void (*vq_matmul_fn)(const void *weights, size_t row_bytes, int row_begin, int row_end,
                             vq_activations x, int tokens, float *y, size_t y_stride);

/// One instruction set's kernels, per weight format.
typedef struct {
    vq_isa isa;
    const char *name;
    vq_matmul_fn q4_0;
    vq_matmul_fn q4_1;
    vq_matmul_fn q8_0;
    vq_matmul_fn q4_0_residual;
    vq_matmul_fn q4_1_residual;
    vq_matmul_fn q8_0_residual;
    vq_quantize_fn quantize;
} vq_kernels;

/// The kernels for `isa`, or NULL where this CPU cannot run them.
const vq_kernels *vq_kernels_for(vq_isa isa);

#endif
