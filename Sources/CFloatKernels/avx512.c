// AVX-512 kernels (F, DQ, BW, VL: what the matmul's AVX-512 VNNI level implies): 16-float vectors, fused
// multiply-adds, 32 zmm registers, so 4-row register tiles. Attention on a head size that is not a multiple of 16
// takes the AVX2 kernels (a vector would run past a row).
#if defined(__x86_64__)
#define VW 16
#define TARGET __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")))
#define NAME(x) x##_avx512
#define FUSED 1
#define PV_ROWS 4
#define PV_COLS 4
#define SCORE_ROWS 4
#include "impl.h"

static void attend_any_avx512(const vf_tile *w, const float *const *k, const float *const *v, long t0, int n) {
    if (w->head_dim % VW) vf_kernels_avx2.attend(w, k, v, t0, n);
    else attend_avx512(w, k, v, t0, n);
}

static void attend_transposed_any_avx512(const vf_tile *w, const float *const *k, const float *const *v, long t0,
                                         int n) {
    if (w->head_dim % VW) vf_kernels_avx2.attend_transposed(w, k, v, t0, n);
    else attend_transposed_avx512(w, k, v, t0, n);
}

const vf_kernels vf_kernels_avx512 = {
    VQ_ISA_AVX512_VNNI, "AVX-512", attend_any_avx512, attend_transposed_any_avx512, rms_norm_avx512, rope_avx512,
    silu_mul_avx512, exp_avx512,
};
#endif
