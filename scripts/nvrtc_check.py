#!/usr/bin/env python3
"""Compile-check .cu files with NVRTC (no GPU needed): python3 scripts/nvrtc_check.py FILE.cu [--ptx-out DIR] [--sm90a]
Uses the options loadKernelModule passes (-default-device --use_fast_math), sm_90 (sm_90a with --sm90a: the Hopper-only
wgmma prefill, as PrefillAttentionKernels compiles it). Prints the log incl. registers/spills; exit 1 on error."""
import ctypes, glob, os, sys, site
cands = glob.glob(os.path.join(site.getsitepackages()[0], 'nvidia/cuda_nvrtc/lib/libnvrtc.so.*')) + ['libnvrtc.so']
lib = None
for c in cands:
    try: lib = ctypes.CDLL(c); break
    except OSError: pass
assert lib, 'libnvrtc not found (pip install nvidia-cuda-nvrtc-cu12)'
ok = True
ptx_dir = sys.argv[sys.argv.index('--ptx-out') + 1] if '--ptx-out' in sys.argv else None
args = [a for a in sys.argv[1:] if not a.startswith('--') and a != ptx_dir]
for path in args:
    src = open(path, 'rb').read()
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), src, os.path.basename(path).encode(), 0, None, None) == 0
    arch = b'sm_90a' if '--sm90a' in sys.argv else b'sm_90'
    # The .cuh headers beside the file (the binary hands NVRTC every embedded header by name instead).
    opts = [b'--gpu-architecture=' + arch, b'--std=c++17', b'-default-device', b'--use_fast_math', b'-Xptxas=-v',
            b'--include-path=' + os.path.dirname(os.path.abspath(path)).encode()]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    r = lib.nvrtcCompileProgram(prog, len(opts), arr)
    n = ctypes.c_size_t(); lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
    log = ctypes.create_string_buffer(n.value); lib.nvrtcGetProgramLog(prog, log)
    print(f'== {path}: {"OK" if r == 0 else "ERROR %d" % r}')
    print(log.value.decode())
    if r != 0: ok = False; continue
    if ptx_dir:
        lib.nvrtcGetPTXSize(prog, ctypes.byref(n)); ptx = ctypes.create_string_buffer(n.value); lib.nvrtcGetPTX(prog, ptx)
        open(os.path.join(ptx_dir, os.path.basename(path) + '.ptx'), 'wb').write(ptx.value)
sys.exit(0 if ok else 1)
