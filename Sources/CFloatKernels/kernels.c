#include "internal.h"

const vf_kernels *vf_kernels_for(vq_isa isa) {
    if (!vq_isa_supported(isa)) return NULL;
    switch (isa) {
    case VQ_ISA_PORTABLE: return &vf_kernels_portable;
#if defined(__x86_64__)
    case VQ_ISA_AVX2: return &vf_kernels_avx2;
    case VQ_ISA_AVX512_VNNI: return &vf_kernels_avx512;
#endif
    default: return NULL;
    }
}
