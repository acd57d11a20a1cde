#ifndef VATTN_KERNEL_PARAMS_H
#define VATTN_KERNEL_PARAMS_H
// The parameters of every kernel that Sources/CUDAKernels launches, one struct per kernel (or family), passed by
// value as the kernel's only argument: `extern "C" __global__ void k(const XParams p)`. This one header is read by
// NVRTC (the EmbedCUDASources plugin embeds it beside the .cu files; they `#include "kernel_params.h"`) and by
// Swift's C importer (target CKernelParams), so host and device agree on the layout by construction, and the
// asserts at the end make both compilers check it.
//
// Only fixed-width integers, float and 64-bit device addresses (kp_u64, cast to a typed pointer in the kernel):
// no pointers, no size_t, nothing whose size differs between the host and NVPTX. Fields keep the order the
// kernels' old positional parameters had (each struct's layout is that parameter list's layout in param space).
// Element counts and strides are in elements of the storage type unless a name says bytes.

#ifdef __CUDACC_RTC__
// NVRTC has no <stdint.h> or <stddef.h> (and no offsetof: see the asserts at the end).
typedef int kp_i32;
typedef unsigned int kp_u32;
typedef long long kp_i64;
typedef unsigned long long kp_u64;
#define KP_AT(T, field, offset) 1
#else
#include <stddef.h>
#include <stdint.h>
typedef int32_t kp_i32;
typedef uint32_t kp_u32;
typedef int64_t kp_i64;
typedef uint64_t kp_u64;
#define KP_AT(T, field, offset) (offsetof(T, field) == (offset))
#endif

#ifdef __cplusplus
#define KP_ASSERT(condition, message) static_assert(condition, message)
#define KP_ALIGNOF(T) alignof(T)
#else
#define KP_ASSERT(condition, message) _Static_assert(condition, message)
#define KP_ALIGNOF(T) _Alignof(T)
#endif

// ---- llama.cu: the Llama forward's small kernels and the sampler. bf16 arrays unless noted. ----

/// embed_rows: x[t, :] = table[tokens[t], :] as fp32. tokens: int32 [n].
typedef struct {
    kp_u64 table;   // bf16 [vocab, width]
    kp_u64 tokens;  // int32 [n]
    kp_u64 x;       // fp32 [n, width]
    kp_i32 width;
} EmbedRowsParams;

/// add_rmsnorm: x += delta (if delta != 0), then h = RMSNorm(x)·weight in bf16, one block per row.
typedef struct {
    kp_u64 x;       // fp32 [rows, width], updated in place
    kp_u64 delta;   // fp32 [rows, width] or 0
    kp_u64 weight;  // fp32 [width]
    kp_u64 h;       // bf16 [rows, width]
    kp_i32 width;
    float epsilon;
} AddRMSNormParams;

/// rope_append_strided: RoPE on fused QKV rows; Q to `q`, K and V into the vAttention tensors at
/// (slots[t], positions[t]).
typedef struct {
    kp_u64 qkv;  // bf16 [n, (qHeads + 2·kvHeads)·headDim]
    kp_i32 qHeads;
    kp_i32 kvHeads;
    kp_i32 headDim;             // then 4 bytes of padding
    kp_u64 positions;           // int32 [n]; −1: an empty lane
    kp_u64 slots;               // int32 [n]
    kp_u64 inverseFrequencies;  // fp32 [headDim / 2]
    kp_u64 q;                   // bf16 [n, qHeads, headDim]
    kp_u64 keys;
    kp_u64 values;
    kp_i64 slotStride;
    kp_i64 tokenStride;
    kp_i64 headStride;
} RopeAppendStridedParams;

/// rope_append_paged: as rope_append_strided, K and V to position positions[t] of block-table row sequences[t].
typedef struct {
    kp_u64 qkv;
    kp_i32 qHeads;
    kp_i32 kvHeads;
    kp_i32 headDim;    // then 4 bytes of padding
    kp_u64 positions;  // int32 [n]; −1: an empty lane
    kp_u64 sequences;  // int32 [n]
    kp_u64 inverseFrequencies;
    kp_u64 q;
    kp_u64 keyPool;      // [numBlocks, blockSize, kvHeads, headDim]
    kp_u64 valuePool;
    kp_u64 blockTables;  // int32 [batch, tableStride]
    kp_i32 tableStride;
    kp_i32 blockSize;
} RopeAppendPagedParams;

/// silu_mul: out[t, j] = silu(gateUp[t, j]) · gateUp[t, width + j], grid-stride over `total` = rows · width.
typedef struct {
    kp_u64 gateUp;  // bf16 [rows, 2·width]
    kp_u64 out;     // bf16 [rows, width]
    kp_i32 width;  // then 4 bytes of padding
    kp_i64 total;
} SiluMulParams;

/// gather_rows: out[i, :] = h[rows[i], :].
typedef struct {
    kp_u64 h;
    kp_u64 rows;  // int32 [count]
    kp_u64 out;
    kp_i32 width;
} GatherRowsParams;

/// fill_dummy_bf16: `count` values of DummyWeights.value(seed:nameHash:index:rowLength:), times `scale`.
typedef struct {
    kp_u64 out;
    kp_i64 count;
    kp_u64 seed;
    kp_u64 nameHash;
    float scale;
} FillDummyParams;

/// sample_tokens: one token per logits row by `sampleToken`'s rule, one 1024-thread block per row.
typedef struct {
    kp_u64 logits;  // fp32 rows, rowStride floats apart
    kp_i64 rowStride;
    kp_u64 settings;  // int32 [rows, 4]: temperature bits, top-k, top-p bits, 24-bit draw
    kp_u64 out;       // int32 [rows]
    kp_i32 vocab;
} SampleTokensParams;

// ---- kv_append.cu: new tokens' K and V into the cache (a bit copy: bf16 or fp16) ----

/// kv_append_strided: token i to (slots[i], positions[i]) of the vAttention tensors.
typedef struct {
    kp_u64 keys;    // [tokens, kvHeads, headDim]
    kp_u64 values;
    kp_u64 keyCache;
    kp_u64 valueCache;
    kp_i64 slotStride;
    kp_i64 tokenStride;
    kp_i64 headStride;
    kp_u64 slots;      // int32 [tokens]
    kp_u64 positions;  // int32 [tokens]
    kp_i32 kvHeads;
    kp_i32 headDim;
} KVAppendStridedParams;

/// kv_append_paged: token i to position positions[i] of sequence sequences[i] through its block table.
typedef struct {
    kp_u64 keys;
    kp_u64 values;
    kp_u64 keyPool;
    kp_u64 valuePool;
    kp_u64 blockTables;  // int32 [batch, tableStride]
    kp_i32 tableStride;
    kp_i32 blockSize;
    kp_i64 blockStride;
    kp_i64 tokenStride;
    kp_i64 headStride;
    kp_u64 sequences;  // int32 [tokens]
    kp_u64 positions;  // int32 [tokens]
    kp_i32 kvHeads;
    kp_i32 headDim;
} KVAppendPagedParams;

// ---- decode_attention.cu: split-KV decode attention, one query token per sequence ----

/// decode_partial_strided_<dtype>_d<D>_g<G>: K/V of slot slots[b] of the vAttention tensors. With `out` != 0 (block
/// merge, or one split) the kernel writes the output; else each split writes fp32 partials for decode_merge_*.
typedef struct {
    kp_u64 q;  // [batch, qHeads, headDim]
    kp_u64 keys;
    kp_u64 values;
    kp_i64 slotStride;
    kp_i64 tokenStride;
    kp_i64 headStride;
    kp_u64 slots;    // int32 [batch]
    kp_u64 lengths;  // int32 [batch]
    kp_i32 chunk;    // tokens per split
    kp_i32 maxSplits;  // the partials' row stride (the workspace's)
    kp_i32 stages;     // cp.async pipeline depth
    float scaleLog2;   // softmax scale · log2(e)
    kp_u64 partialMax;  // fp32 [batch, qHeads, maxSplits]
    kp_u64 partialSum;  // fp32 [batch, qHeads, maxSplits]
    kp_u64 partialAcc;  // fp32 [batch, qHeads, maxSplits, headDim]
    kp_u64 out;         // [batch, qHeads, headDim] or 0
} DecodeStridedParams;

/// decode_partial_paged_<dtype>_d<D>_g<G>: as the strided kernel, K/V through row b of the block table.
typedef struct {
    kp_u64 q;
    kp_u64 keyPool;
    kp_u64 valuePool;
    kp_u64 blockTables;  // int32 [batch, tableStride]
    kp_i32 tableStride;
    kp_i32 blockSize;
    kp_i64 blockStride;
    kp_i64 tokenStride;
    kp_i64 headStride;
    kp_u64 lengths;
    kp_i32 chunk;
    kp_i32 maxSplits;
    kp_i32 stages;
    float scaleLog2;
    kp_u64 partialMax;
    kp_u64 partialSum;
    kp_u64 partialAcc;
    kp_u64 out;
} DecodePagedParams;

/// decode_merge_<dtype>_d<D>: combines the ceil(lengths[b] / chunk) partials of each (sequence, query head).
typedef struct {
    kp_u64 partialMax;
    kp_u64 partialSum;
    kp_u64 partialAcc;
    kp_u64 lengths;
    kp_i32 chunk;
    kp_i32 maxSplits;
    kp_u64 out;
} DecodeMergeParams;

/// copy_u128: device-to-device copy of `count` 16-byte units (the bandwidth ceiling the decode bench reports).
typedef struct {
    kp_u64 source;
    kp_u64 destination;
    kp_i64 count;
} CopyParams;

// ---- prefill_attention.cu: causal prefill of one chunk of one sequence ----

/// prefill_<dtype>_d<D>_<config>_<contig|paged>: query row i is position offset + i and attends to K/V positions
/// 0…offset + i. Contiguous: keys/values at token 0 of the slot, `table` 0, `blockSize` 0. Paged: keys/values are
/// the pools, `table` the sequence's int32 block table, `blockSize` a power of two.
typedef struct {
    kp_u64 q;    // [n, qHeads, headDim]
    kp_u64 out;  // [n, qHeads, headDim]
    kp_u64 keys;
    kp_u64 values;
    kp_u64 table;
    kp_i32 n;
    kp_i32 offset;
    kp_i32 qHeads;
    kp_i32 kvHeads;
    float scaleLog2;  // softmax scale · log2(e); then 4 bytes of padding
    kp_i64 tokenStride;
    kp_i64 headStride;
    kp_i32 blockSize;
} PrefillParams;

// ---- kv_pattern.cu: the kernels of `vattn check cuda` (patterns through KV views, the zero page, graph replay). ----

/// kv_pattern_write: writes the pattern of (request, tensor, token, element) into tokens
/// [tokenStart, tokenStart + gridDim.x) of `slot`, one block per token.
typedef struct {
    kp_u64 base;         // bf16 view base
    kp_i64 slotStride;   // elements
    kp_i64 tokenStride;  // elements
    kp_i64 tokenStart;
    kp_u64 request;
    kp_i32 slot;
    kp_i32 tokenElements;  // kvHeads·headDim, contiguous
    kp_i32 tensor;         // layer·2 + K/V; then 4 bytes of padding
} KVPatternWriteParams;

/// kv_pattern_check: adds to *mismatches the elements of tokens [0, gridDim.x) of `slot` that differ from the pattern.
typedef struct {
    kp_u64 base;
    kp_i64 slotStride;
    kp_i64 tokenStride;
    kp_u64 request;
    kp_u64 mismatches;  // uint32 counter
    kp_i32 slot;
    kp_i32 tokenElements;
    kp_i32 tensor;  // then 4 bytes of padding
} KVPatternCheckParams;

/// count_nonzero: adds to *nonzero the non-zero bf16 elements of [base, base + count).
typedef struct {
    kp_u64 base;
    kp_i64 count;
    kp_u64 nonzero;  // uint32 counter
} CountNonzeroParams;

/// graph_step: x[i] = x[i]·a + b + i (mod 2^32) for i < n.
typedef struct {
    kp_u64 x;  // uint32 [n]
    kp_i32 n;
    kp_u32 a;
    kp_u32 b;  // then 4 bytes of padding
} GraphStepParams;

// ---- Layout: both compilers check it (C11 _Static_assert for the host, static_assert under NVRTC) ----
// A struct's layout follows from its fields' sizes and alignments (each field at the next multiple of its alignment,
// in declaration order), so equal field types on both sides, checked first, make equal layouts; both compilers then
// check each struct's size, and the host (NVRTC has no offsetof) the offsets after every padding gap.

KP_ASSERT(sizeof(kp_i32) == 4 && sizeof(kp_u32) == 4 && sizeof(kp_i64) == 8 && sizeof(kp_u64) == 8 &&
              sizeof(float) == 4,
          "fixed-width types");
KP_ASSERT(KP_ALIGNOF(kp_i32) == 4 && KP_ALIGNOF(kp_u32) == 4 && KP_ALIGNOF(kp_i64) == 8 && KP_ALIGNOF(kp_u64) == 8 &&
              KP_ALIGNOF(float) == 4,
          "natural alignment of the field types");
KP_ASSERT(sizeof(EmbedRowsParams) == 32 && KP_AT(EmbedRowsParams, width, 24), "EmbedRowsParams");
KP_ASSERT(sizeof(AddRMSNormParams) == 40 && KP_AT(AddRMSNormParams, width, 32) &&
              KP_AT(AddRMSNormParams, epsilon, 36),
          "AddRMSNormParams");
KP_ASSERT(sizeof(RopeAppendStridedParams) == 96 && KP_AT(RopeAppendStridedParams, headDim, 16) &&
              KP_AT(RopeAppendStridedParams, positions, 24) &&
              KP_AT(RopeAppendStridedParams, headStride, 88),
          "RopeAppendStridedParams");
KP_ASSERT(sizeof(RopeAppendPagedParams) == 88 && KP_AT(RopeAppendPagedParams, positions, 24) &&
              KP_AT(RopeAppendPagedParams, blockTables, 72) &&
              KP_AT(RopeAppendPagedParams, tableStride, 80) &&
              KP_AT(RopeAppendPagedParams, blockSize, 84),
          "RopeAppendPagedParams");
KP_ASSERT(sizeof(SiluMulParams) == 32 && KP_AT(SiluMulParams, width, 16) && KP_AT(SiluMulParams, total, 24),
          "SiluMulParams");
KP_ASSERT(sizeof(GatherRowsParams) == 32 && KP_AT(GatherRowsParams, width, 24), "GatherRowsParams");
KP_ASSERT(sizeof(FillDummyParams) == 40 && KP_AT(FillDummyParams, nameHash, 24) &&
              KP_AT(FillDummyParams, scale, 32),
          "FillDummyParams");
KP_ASSERT(sizeof(SampleTokensParams) == 40 && KP_AT(SampleTokensParams, out, 24) &&
              KP_AT(SampleTokensParams, vocab, 32),
          "SampleTokensParams");
KP_ASSERT(sizeof(KVAppendStridedParams) == 80 && KP_AT(KVAppendStridedParams, slotStride, 32) &&
              KP_AT(KVAppendStridedParams, slots, 56) && KP_AT(KVAppendStridedParams, kvHeads, 72) &&
              KP_AT(KVAppendStridedParams, headDim, 76),
          "KVAppendStridedParams");
KP_ASSERT(sizeof(KVAppendPagedParams) == 96 && KP_AT(KVAppendPagedParams, tableStride, 40) &&
              KP_AT(KVAppendPagedParams, blockStride, 48) && KP_AT(KVAppendPagedParams, sequences, 72) &&
              KP_AT(KVAppendPagedParams, kvHeads, 88) && KP_AT(KVAppendPagedParams, headDim, 92),
          "KVAppendPagedParams");
KP_ASSERT(sizeof(DecodeStridedParams) == 112 && KP_AT(DecodeStridedParams, slots, 48) &&
              KP_AT(DecodeStridedParams, chunk, 64) && KP_AT(DecodeStridedParams, scaleLog2, 76) &&
              KP_AT(DecodeStridedParams, partialMax, 80) && KP_AT(DecodeStridedParams, out, 104),
          "DecodeStridedParams");
KP_ASSERT(sizeof(DecodePagedParams) == 120 && KP_AT(DecodePagedParams, tableStride, 32) &&
              KP_AT(DecodePagedParams, blockStride, 40) && KP_AT(DecodePagedParams, lengths, 64) &&
              KP_AT(DecodePagedParams, chunk, 72) && KP_AT(DecodePagedParams, scaleLog2, 84) &&
              KP_AT(DecodePagedParams, partialMax, 88) && KP_AT(DecodePagedParams, out, 112),
          "DecodePagedParams");
KP_ASSERT(sizeof(DecodeMergeParams) == 48 && KP_AT(DecodeMergeParams, chunk, 32) &&
              KP_AT(DecodeMergeParams, maxSplits, 36) && KP_AT(DecodeMergeParams, out, 40),
          "DecodeMergeParams");
KP_ASSERT(sizeof(CopyParams) == 24 && KP_AT(CopyParams, count, 16), "CopyParams");
KP_ASSERT(sizeof(PrefillParams) == 88 && KP_AT(PrefillParams, n, 40) && KP_AT(PrefillParams, scaleLog2, 56) &&
              KP_AT(PrefillParams, tokenStride, 64) && KP_AT(PrefillParams, headStride, 72) &&
              KP_AT(PrefillParams, blockSize, 80),
          "PrefillParams");

KP_ASSERT(sizeof(KVPatternWriteParams) == 56 && KP_AT(KVPatternWriteParams, request, 32) &&
              KP_AT(KVPatternWriteParams, slot, 40) && KP_AT(KVPatternWriteParams, tensor, 48),
          "KVPatternWriteParams");
KP_ASSERT(sizeof(KVPatternCheckParams) == 56 && KP_AT(KVPatternCheckParams, mismatches, 32) &&
              KP_AT(KVPatternCheckParams, slot, 40) && KP_AT(KVPatternCheckParams, tensor, 48),
          "KVPatternCheckParams");
KP_ASSERT(sizeof(CountNonzeroParams) == 24 && KP_AT(CountNonzeroParams, nonzero, 16), "CountNonzeroParams");
KP_ASSERT(sizeof(GraphStepParams) == 24 && KP_AT(GraphStepParams, n, 8) && KP_AT(GraphStepParams, b, 16),
          "GraphStepParams");

#endif
