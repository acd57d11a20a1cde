// Writes new tokens' K and V (bf16 or fp16: a bit copy, so one kernel serves both) into the cache.
// Input rows: k/v [tokens, kvHeads, headDim]; token i goes to (slots[i], positions[i]) of the strided virtual
// tensors (vAttention, either layout), or to position positions[i] of sequence seqs[i] through its block table in
// the paged pool [numBlocks, blockSize, kvHeads, headDim]. Slots/positions live in device memory (graph-capturable).
// One block per token; each thread moves 16 bytes. headDim·2 must be a multiple of 16. Parameters: kernel_params.h.
#include "kernel_params.h"

typedef unsigned short u16;
typedef long long i64;

__device__ __forceinline__ void copy_token(const u16 *__restrict__ k, const u16 *__restrict__ v, u16 *kDst,
                                           u16 *vDst, i64 dstOffset, i64 headStride, int kvHeads, int headDim) {
    const int i = blockIdx.x;
    const int chunks = headDim / 8, total = kvHeads * chunks;
    for (int c = threadIdx.x; c < total; c += blockDim.x) {
        int h = c / chunks, j = (c - h * chunks) * 8;
        i64 src = ((i64)i * kvHeads + h) * headDim + j;
        i64 dst = dstOffset + h * headStride + j;
        *reinterpret_cast<uint4 *>(kDst + dst) = *reinterpret_cast<const uint4 *>(k + src);
        *reinterpret_cast<uint4 *>(vDst + dst) = *reinterpret_cast<const uint4 *>(v + src);
    }
}

extern "C" __global__ void kv_append_strided(const KVAppendStridedParams p) {
    const u16 *k = (const u16 *)p.keys, *v = (const u16 *)p.values;
    u16 *kCache = (u16 *)p.keyCache, *vCache = (u16 *)p.valueCache;
    const i64 slotStride = p.slotStride, tokenStride = p.tokenStride, headStride = p.headStride;
    const int *slots = (const int *)p.slots, *positions = (const int *)p.positions;
    const int kvHeads = p.kvHeads, headDim = p.headDim;
    const int i = blockIdx.x;
    i64 off = (i64)slots[i] * slotStride + (i64)positions[i] * tokenStride;
    copy_token(k, v, kCache, vCache, off, headStride, kvHeads, headDim);
}

extern "C" __global__ void kv_append_paged(const KVAppendPagedParams p) {
    const u16 *k = (const u16 *)p.keys, *v = (const u16 *)p.values;
    u16 *kPool = (u16 *)p.keyPool, *vPool = (u16 *)p.valuePool;
    const int *blockTables = (const int *)p.blockTables;
    const int tableStride = p.tableStride, blockSize = p.blockSize;
    const i64 blockStride = p.blockStride, tokenStride = p.tokenStride, headStride = p.headStride;
    const int *seqs = (const int *)p.sequences, *positions = (const int *)p.positions;
    const int kvHeads = p.kvHeads, headDim = p.headDim;
    const int i = blockIdx.x;
    const int pos = positions[i];
    const int b = blockTables[(i64)seqs[i] * tableStride + pos / blockSize];
    i64 off = (i64)b * blockStride + (i64)(pos % blockSize) * tokenStride;
    copy_token(k, v, kPool, vPool, off, headStride, kvHeads, headDim);
}
