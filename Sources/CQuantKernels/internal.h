#ifndef QUANT_KERNELS_INTERNAL_H
#define QUANT_KERNELS_INTERNAL_H
#include "QuantKernels.h"
#include <string.h>

// Block sizes in bytes (ggml-common.h): Q4_0 = f16 d + 16 nibble bytes, Q4_1 = f16 d, f16 m + 16 nibble bytes,
// Q8_0 = f16 d + 32 int8.
enum { VQ_Q4_0_BYTES = 18, VQ_Q4_1_BYTES = 20, VQ_Q8_0_BYTES = 34 };

// The weight formats, as the SIMD kernels' `format` argument (a constant in each kernel, so branches on it fold).
enum { Q4_0, Q4_1, Q8_0 };

static inline __attribute__((always_inline)) int vq_block_bytes(int format) {
    return format == Q4_0 ? VQ_Q4_0_BYTES : format == Q4_1 ? VQ_Q4_1_BYTES : VQ_Q8_0_BYTES;
}

// The SIMD kernels prefetch the blocks this many rows on: in decode the weights stream from DRAM once per token,
// and the hardware prefetcher alone left the kernels waiting on them (docs/decisions/001-cpu-integer-matmul.md).
enum { VQ_PREFETCH_ROWS = 16 };

static inline uint16_t vq_load_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t vq_load_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

extern const vq_kernels vq_kernels_portable;
extern const vq_kernels vq_kernels_avx2;
extern const vq_kernels vq_kernels_avx512_vnni;

#endif
