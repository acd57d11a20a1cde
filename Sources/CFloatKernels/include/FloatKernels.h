#ifndef FLOAT_KERNELS_H
#define FLOAT_KERNELS_H
// Float kernels of the CPU forward pass besides the matmul, one set per instruction set (portable C vectors, AVX2,
// AVX-512), picked with the matmul's dispatch (vq_best_isa in CQuantKernels): the attention tile (scores, online
// softmax, P·V), RMSNorm, RoPE and SiLU·mul. See docs/decisions/010-cpu-host-isa-and-simd-ops.md.
//
// Every result of a row (a query row, a token's activations) is computed by the same operations in the same order
// whatever the other rows are: results do not depend on the batch. Paths of different instruction sets differ in
// rounding (fused multiply-adds, vector width); each is tested against a float64 reference.
#include <stddef.h>
#include <stdint.h>
#include "QuantKernels.h"

/// Rows of a transposed query block, and the row arrays of a tile, are padded to this many (the widest vector).
enum { VF_ROW_ALIGN = 16 };

/// One attention work item's state: `rows` query rows streaming key tiles through an online softmax
/// (FlashAttention style). All arrays are the caller's and outlive the call.
typedef struct {
    int rows;
    int head_dim;       // a multiple of 8
    /// `vf_attend`: the row stride of `s` (at least the key tile rounded up to VF_ROW_ALIGN).
    /// `vf_attend_transposed`: the row count rounded up to VF_ROW_ALIGN, the key stride of `q` and `s`.
    int ld;
    /// `vf_attend`: rows × head_dim, row-major. `vf_attend_transposed`: head_dim × ld (q[j·ld + r]), padding zero.
    /// Pre-scaled by the softmax scale.
    float *q;
    float *acc;         // rows × head_dim: Σ exp(score − m) · v so far
    float *m;           // ld (transposed) or rows: running max score (−inf before the first key)
    double *l;          // same length: Σ exp(score − m) so far
    const long *limit;  // rows: the last key position each row may see (the causal mask)
    float *s;           // scores and probabilities: rows × ld, or key tile × ld (transposed)
    float *correction;  // ld or rows: scratch
} vf_tile;

/// Attends every row of `tile` to keys t0 ..< t0 + n (row pointers `keys[i]`, `values[i]`, head_dim floats each;
/// a row skips keys beyond its limit), updating m, l and acc.
/// `attend`: one dot product per (row, key), for few rows (decode: one position's query heads).
/// `attend_transposed`: the scores of a block of rows (vector lanes) and keys at once from the transposed query,
/// broadcast multiply-adds and no horizontal sums, for many rows (prefill: positions × query heads of a KV head).
/// Either way a row's numbers depend only on its own query, limit and the keys, not on the other rows.
typedef void (*vf_attend_fn)(const vf_tile *tile, const float *const *keys, const float *const *values, long t0,
                             int n);

/// y[r] = x[r] / sqrt(mean(x[r]²) + epsilon) ⊙ weight for `rows` rows of `width` floats (sum of squares in float64).
typedef void (*vf_rms_norm_fn)(const float *x, int rows, int width, const float *weight, float epsilon, float *y);

/// Rotates adjacent pairs (llama.cpp's "normal" RoPE) of `heads` heads of `head_dim` floats in place:
/// (a, b) → (a·cos θ − b·sin θ, a·sin θ + b·cos θ). `cos_sin` is 2·head_dim floats: cos θ_i twice per pair i,
/// then (−sin θ_i, sin θ_i) per pair.
typedef void (*vf_rope_fn)(float *x, int heads, int head_dim, const float *cos_sin);

/// gate[i] = silu(gate[i]) · up[i] = gate[i] / (1 + e^−gate[i]) · up[i], for `count` floats.
typedef void (*vf_silu_mul_fn)(float *gate, const float *up, size_t count);

/// e^x for `count` floats by the kernels' polynomial (Cephes expf, a few ulp; 0 below −87.3): for tests.
typedef void (*vf_exp_fn)(const float *x, float *y, size_t count);

/// One instruction set's kernels.
typedef struct {
    vq_isa isa;
    const char *name;
    vf_attend_fn attend;
    vf_attend_fn attend_transposed;
    vf_rms_norm_fn rms_norm;
    vf_rope_fn rope;
    vf_silu_mul_fn silu_mul;
    vf_exp_fn exp;
} vf_kernels;

/// The kernels for `isa`, or NULL where this CPU cannot run them.
const vf_kernels *vf_kernels_for(vq_isa isa);

#endif
