// AVX2 + FMA kernels: 8-float vectors, fused multiply-adds; 16 ymm registers, so 2-row register tiles.
#if defined(__x86_64__)
#define VW 8
#define TARGET __attribute__((target("avx2,fma")))
#define NAME(x) x##_avx2
#define FUSED 1
#define PV_ROWS 2
#define PV_COLS 4
#define SCORE_ROWS 2
#include "impl.h"

const vf_kernels vf_kernels_avx2 = {
    VQ_ISA_AVX2, "AVX2", attend_avx2, attend_transposed_avx2, rms_norm_avx2, rope_avx2, silu_mul_avx2, exp_avx2,
};
#endif
