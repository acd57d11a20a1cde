#ifndef FLOAT_KERNELS_INTERNAL_H
#define FLOAT_KERNELS_INTERNAL_H
#include "FloatKernels.h"

extern const vf_kernels vf_kernels_portable;
extern const vf_kernels vf_kernels_avx2;
extern const vf_kernels vf_kernels_avx512;

#endif
