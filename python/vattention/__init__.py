"""VAttention from Python: the vAttention KV-cache manager over ctypes (no compiled extension).

Each layer's K and V live in one contiguous virtual tensor [max_slots, max_context, kv_heads, head_dim]; physical
pages are mapped underneath as requests grow. `keys(layer)` / `values(layer)` return zero-copy views of those
tensors — numpy arrays on the host backend, torch tensors on the CUDA backend — that any ordinary attention kernel
can read. Only tokens below a slot's length (after `step`) are backed: never touch the rest.

    with KVCache(layers=32, kv_heads=8, head_dim=128, dtype="bf16", max_slots=64, max_context=8192,
                 backend="cuda", memory_budget=40 << 30) as kv:
        slot = kv.allocate_slot(expected_length=1200)
        kv.step({slot: 1000})               # before each model iteration
        k = kv.keys(layer=0)[slot, :1000]   # [tokens, kv_heads, head_dim], zero copy
        ...
        kv.free(slot)                       # after the last kernel reading it was queued
"""
import ctypes
import os
import pathlib

__all__ = ["KVCache", "VAttentionError", "OutOfPages", "load_library"]

OK, E_INVALID, E_OUT_OF_PAGES, E_NO_SLOT, E_BACKEND, E_NO_DRIVER = range(6)
_DTYPES = {"fp16": 0, "bf16": 1, "fp32": 2}
_LAYOUTS = {"per_layer": 0, "mega": 1}
_BACKENDS = {"host": 0, "cuda": 1}


class VAttentionError(RuntimeError):
    def __init__(self, code, message):
        super().__init__(f"{message} (vattention error {code})")
        self.code = code


class OutOfPages(VAttentionError):
    """Not enough KV memory even after reclaiming: preempt a request and retry."""


class _Spec(ctypes.Structure):
    _fields_ = [("layers", ctypes.c_int64), ("kv_heads", ctypes.c_int64), ("head_dim", ctypes.c_int64),
                ("dtype", ctypes.c_int32), ("layout", ctypes.c_int32), ("max_slots", ctypes.c_int64),
                ("max_context", ctypes.c_int64), ("page_size", ctypes.c_int64)]


class _View(ctypes.Structure):
    _fields_ = [("address", ctypes.c_uint64), ("slot_stride", ctypes.c_int64), ("token_stride", ctypes.c_int64),
                ("head_stride", ctypes.c_int64)]


class _Stats(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int64) for n in ("reserved_bytes", "pool_pages", "free_pages", "mapped_pages",
                                              "active_slots", "used_bytes", "mapped_bytes", "critical_maps",
                                              "background_maps", "unmaps")] + \
               [("critical_nanos", ctypes.c_uint64), ("background_nanos", ctypes.c_uint64)]


_lib = None


def load_library(path=None):
    """Loads libvattention_c.so: `path`, $VATTN_LIB, or the package's own build folders."""
    global _lib
    if _lib is not None and path is None:
        return _lib
    root = pathlib.Path(__file__).resolve().parents[2]
    candidates = [path, os.environ.get("VATTN_LIB"), pathlib.Path(__file__).with_name("libvattention_c.so"),
                  root / ".build/release/libvattention_c.so", root / ".build/debug/libvattention_c.so"]
    for c in candidates:
        if c and pathlib.Path(c).exists():
            lib = ctypes.CDLL(str(c))
            break
    else:
        raise OSError("libvattention_c.so not found: build it with `swift build --product vattention_c` "
                      "or set VATTN_LIB")
    P = ctypes.POINTER
    lib.vattn_last_error.restype = ctypes.c_char_p
    lib.vattn_create.argtypes = [P(_Spec), ctypes.c_int32, ctypes.c_int64, ctypes.c_int32, ctypes.c_int64,
                                 P(ctypes.c_void_p)]
    lib.vattn_destroy.argtypes = [ctypes.c_void_p]
    lib.vattn_destroy.restype = None
    lib.vattn_allocate_slot.argtypes = [ctypes.c_void_p, ctypes.c_int64, P(ctypes.c_int64)]
    lib.vattn_free_slot.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    lib.vattn_step.argtypes = [ctypes.c_void_p, P(ctypes.c_int64), P(ctypes.c_int64), ctypes.c_size_t]
    lib.vattn_map_ahead.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
    lib.vattn_can_admit.argtypes = [ctypes.c_void_p, ctypes.c_int64, P(ctypes.c_int32)]
    lib.vattn_view_of.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, P(_View)]
    lib.vattn_get_stats.argtypes = [ctypes.c_void_p, P(_Stats)]
    lib.vattn_check_invariants.argtypes = [ctypes.c_void_p]
    _lib = lib
    return lib


def _check(code):
    if code != OK:
        message = (_lib.vattn_last_error() or b"unknown error").decode()
        raise (OutOfPages if code == E_OUT_OF_PAGES else VAttentionError)(code, message)


class _CUDAArray:
    """Exposes raw device memory through __cuda_array_interface__ (zero copy; torch.as_tensor reads it)."""

    def __init__(self, address, shape, strides_bytes, typestr):
        self.__cuda_array_interface__ = {"shape": shape, "strides": strides_bytes, "typestr": typestr,
                                         "data": (address, False), "version": 3}


class KVCache:
    def __init__(self, layers, kv_heads, head_dim, dtype="fp16", max_slots=8, max_context=4096, page_size=None,
                 layout="per_layer", backend="host", memory_budget=1 << 30, background_mapper=True,
                 look_ahead_tokens=16, library=None):
        self._lib = load_library(library)
        self.dtype, self.backend = dtype, backend
        self.layers, self.kv_heads, self.head_dim = layers, kv_heads, head_dim
        self.max_slots, self.max_context = max_slots, max_context
        page_size = page_size or (2 << 20 if backend == "cuda" else 64 << 10)
        spec = _Spec(layers, kv_heads, head_dim, _DTYPES[dtype], _LAYOUTS[layout], max_slots, max_context, page_size)
        handle = ctypes.c_void_p()
        _check(self._lib.vattn_create(ctypes.byref(spec), _BACKENDS[backend], memory_budget,
                                      int(background_mapper), look_ahead_tokens, ctypes.byref(handle)))
        self._handle = handle

    # Context manager: the manager (and its memory) goes away at the end of the block.
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._handle:
            self._lib.vattn_destroy(self._handle)
            self._handle = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def allocate_slot(self, expected_length=0):
        slot = ctypes.c_int64()
        _check(self._lib.vattn_allocate_slot(self._handle, expected_length, ctypes.byref(slot)))
        return slot.value

    def free(self, slot):
        _check(self._lib.vattn_free_slot(self._handle, slot))

    def step(self, lengths):
        """lengths: {slot: new length}. Backs every slot up to its length; raises OutOfPages (nothing changed)."""
        n = len(lengths)
        slots = (ctypes.c_int64 * n)(*lengths.keys())
        lens = (ctypes.c_int64 * n)(*lengths.values())
        _check(self._lib.vattn_step(self._handle, slots, lens, n))

    def map_ahead(self, slot, tokens):
        _check(self._lib.vattn_map_ahead(self._handle, slot, tokens))

    def can_admit(self, tokens):
        answer = ctypes.c_int32()
        _check(self._lib.vattn_can_admit(self._handle, tokens, ctypes.byref(answer)))
        return bool(answer.value)

    def stats(self):
        s = _Stats()
        _check(self._lib.vattn_get_stats(self._handle, ctypes.byref(s)))
        return {name: getattr(s, name) for name, _ in _Stats._fields_}

    def check_invariants(self):
        _check(self._lib.vattn_check_invariants(self._handle))

    def view(self, layer, kind):
        v = _View()
        _check(self._lib.vattn_view_of(self._handle, layer, 0 if kind == "k" else 1, ctypes.byref(v)))
        return v

    def keys(self, layer):
        return self._tensor(self.view(layer, "k"))

    def values(self, layer):
        return self._tensor(self.view(layer, "v"))

    def _tensor(self, v):
        element = 4 if self.dtype == "fp32" else 2
        shape = (self.max_slots, self.max_context, self.kv_heads, self.head_dim)
        strides = (v.slot_stride * element, v.token_stride * element, v.head_stride * element, element)
        if self.backend == "host":
            import numpy as np
            np_dtype = {"fp16": np.float16, "fp32": np.float32, "bf16": np.uint16}[self.dtype]  # bf16: raw bits
            extent = (self.max_slots - 1) * strides[0] + (self.max_context - 1) * strides[1] + \
                (self.kv_heads - 1) * strides[2] + self.head_dim * element
            buffer = (ctypes.c_char * extent).from_address(v.address)
            return np.ndarray(shape, dtype=np_dtype, buffer=buffer, strides=strides)
        import torch
        typestr = {"fp16": "<f2", "fp32": "<f4", "bf16": "<i2"}[self.dtype]
        t = torch.as_tensor(_CUDAArray(v.address, shape, strides, typestr), device="cuda")
        return t.view(torch.bfloat16) if self.dtype == "bf16" else t
