/* VAttention C ABI: the vAttention KV-cache memory manager for any language (Python via ctypes, C, C++).
 * Every function returns VATTN_OK (0) or an error code; vattn_last_error() then describes the failure (per thread).
 * Nothing here aborts the process on bad input.
 *
 * Sizes: vattn_create refuses (VATTN_E_INVALID, with a message) a spec whose sizes are not positive or whose derived
 * sizes overflow or exceed 2^47 bytes of address space (bytes per token × max_context, × max_slots, × tensors), a
 * page size above 2^47, a memory budget larger than the backend's physical memory (host: the machine's RAM; cuda:
 * the device's memory) or of more than 2^26 pages, and a look-ahead outside 0..2^40 tokens. */
#ifndef VATTENTION_H
#define VATTENTION_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    VATTN_OK = 0,
    VATTN_E_INVALID = 1,       /* bad argument: unknown slot, length out of range, bad spec */
    VATTN_E_OUT_OF_PAGES = 2,  /* not enough KV memory even after reclaiming: preempt and retry */
    VATTN_E_NO_SLOT = 3,       /* every slot is in use */
    VATTN_E_BACKEND = 4,       /* the memory system (CUDA driver, mmap) failed */
    VATTN_E_NO_DRIVER = 5      /* backend "cuda" asked for on a machine without an NVIDIA driver */
};

enum { VATTN_DTYPE_FP16 = 0, VATTN_DTYPE_BF16 = 1, VATTN_DTYPE_FP32 = 2 };
enum { VATTN_LAYOUT_PER_LAYER = 0, VATTN_LAYOUT_MEGA = 1 };
enum { VATTN_BACKEND_HOST = 0, VATTN_BACKEND_CUDA = 1 };
enum { VATTN_KEY = 0, VATTN_VALUE = 1 };

typedef struct {
    int64_t layers, kv_heads, head_dim;
    int32_t dtype;      /* VATTN_DTYPE_* */
    int32_t layout;     /* VATTN_LAYOUT_* */
    int64_t max_slots, max_context;
    int64_t page_size;  /* bytes: a multiple of 4096 (host) or 2 MiB (cuda) */
} vattn_spec;

typedef struct {
    uint64_t address;   /* element (slot, token, head, d) is at address + (slot*slot_stride + token*token_stride
                           + head*head_stride + d) * element size */
    int64_t slot_stride, token_stride, head_stride;  /* in elements */
} vattn_view;

typedef struct {
    int64_t reserved_bytes, pool_pages, free_pages, mapped_pages, active_slots, used_bytes, mapped_bytes;
    int64_t critical_maps, background_maps, unmaps;
    uint64_t critical_nanos, background_nanos;
} vattn_stats;

typedef struct vattn_manager vattn_manager;

const char *vattn_last_error(void);
int vattn_create(const vattn_spec *spec, int32_t backend, int64_t memory_budget, int32_t background_mapper,
                 int64_t look_ahead_tokens, vattn_manager **out);
void vattn_destroy(vattn_manager *m);
int vattn_allocate_slot(vattn_manager *m, int64_t expected_length, int64_t *slot);
int vattn_free_slot(vattn_manager *m, int64_t slot);
int vattn_step(vattn_manager *m, const int64_t *slots, const int64_t *lengths, size_t count);
int vattn_map_ahead(vattn_manager *m, int64_t slot, int64_t tokens);
int vattn_can_admit(vattn_manager *m, int64_t tokens, int32_t *answer);
int vattn_view_of(vattn_manager *m, int64_t layer, int32_t kind, vattn_view *out);
int vattn_get_stats(vattn_manager *m, vattn_stats *out);
int vattn_check_invariants(vattn_manager *m);

#ifdef __cplusplus
}
#endif
#endif
