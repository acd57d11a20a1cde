// The portable kernels: 4-float vectors (SSE2 on x86-64, NEON on arm64), no target attribute, so they run on any
// CPU the binary runs on.
#define VW 4
#define TARGET
#define NAME(x) x##_portable
#if defined(__aarch64__) || defined(__FMA__)
#define FUSED 1
#else
#define FUSED 0
#endif
#define PV_ROWS 2
#define PV_COLS 4
#define SCORE_ROWS 2
#include "impl.h"

const vf_kernels vf_kernels_portable = {
    VQ_ISA_PORTABLE, "portable C", attend_portable, attend_transposed_portable, rms_norm_portable, rope_portable,
    silu_mul_portable, exp_portable,
};
