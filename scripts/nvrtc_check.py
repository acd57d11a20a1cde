#!/usr/bin/env python3
"""Compile-check the CUDA sources with NVRTC (no GPU needed; pip install nvidia-cuda-nvrtc-cu12).

  python3 scripts/nvrtc_check.py --all [--ptx-out DIR] [--cubin-out DIR]
      every embedded source as the binary compiles it: --gpu-architecture=sm_90 (prefill_attention.cu: sm_90a, the
      Hopper-only wgmma kernels, as PrefillAttentionKernels compiles it on compute capability 9.0), --std=c++17,
      -default-device, --use_fast_math (kernelCompileOptions), every embedded header handed to nvrtcCreateProgram by
      name (the .cuh files of Sources/CUDAKernels/cuda and Sources/CKernelParams/include/kernel_params.h).
  python3 scripts/nvrtc_check.py FILE.cu... [--sm90a] [--ptx-out DIR] [--cubin-out DIR]
      the named files the same way, sm_90 (sm_90a with --sm90a).

-Xptxas=-v is added so the log shows registers and spills per kernel (it changes no code). Exit 1 on an error."""
import ctypes, glob, os, site, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = os.path.join(ROOT, 'Sources/CUDAKernels/cuda')
HEADER_DIRS = [KERNELS, os.path.join(ROOT, 'Sources/CKernelParams/include')]
OPTIONS = [b'--std=c++17', b'-default-device', b'--use_fast_math']

cands = glob.glob(os.path.join(site.getsitepackages()[0], 'nvidia/cuda_nvrtc/lib/libnvrtc.so.*')) + ['libnvrtc.so']
lib = None
for c in cands:
    try: lib = ctypes.CDLL(c); break
    except OSError: pass
assert lib, 'libnvrtc not found (pip install nvidia-cuda-nvrtc-cu12)'


def option(name):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else None


ptx_dir, cubin_dir = option('--ptx-out'), option('--cubin-out')
if '--all' in sys.argv:
    files = sorted(glob.glob(os.path.join(KERNELS, '*.cu')))
else:
    files = [a for a in sys.argv[1:] if not a.startswith('--') and a not in (ptx_dir, cubin_dir)]
headers = {}
for d in HEADER_DIRS:
    for p in sorted(glob.glob(os.path.join(d, '*.cuh')) + glob.glob(os.path.join(d, '*.h'))):
        headers[os.path.basename(p)] = open(p, 'rb').read()
names = sorted(headers)
major, minor = ctypes.c_int(), ctypes.c_int()
lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
print(f'NVRTC {major.value}.{minor.value}; headers by name: {", ".join(names)}')
ok = True
for path in files:
    name = os.path.basename(path)
    hopper = '--sm90a' in sys.argv or ('--all' in sys.argv and name == 'prefill_attention.cu')
    arch = b'sm_90a' if hopper else b'sm_90'
    prog = ctypes.c_void_p()
    texts = (ctypes.c_char_p * len(names))(*[headers[n] for n in names])
    includes = (ctypes.c_char_p * len(names))(*[n.encode() for n in names])
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), open(path, 'rb').read(), name.encode(), len(names), texts,
                                  includes) == 0
    opts = [b'--gpu-architecture=' + arch] + OPTIONS + [b'-Xptxas=-v']
    arr = (ctypes.c_char_p * len(opts))(*opts)
    r = lib.nvrtcCompileProgram(prog, len(opts), arr)
    n = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
    log = ctypes.create_string_buffer(n.value)
    lib.nvrtcGetProgramLog(prog, log)
    print(f'== {name} ({b" ".join(opts).decode()}): {"OK" if r == 0 else "ERROR %d" % r}')
    print(log.value.decode())
    if r != 0:
        ok = False
        continue
    for out, get_size, get in ((ptx_dir, lib.nvrtcGetPTXSize, lib.nvrtcGetPTX),
                               (cubin_dir, lib.nvrtcGetCUBINSize, lib.nvrtcGetCUBIN)):
        if out and get_size(prog, ctypes.byref(n)) == 0:
            b = ctypes.create_string_buffer(n.value)
            get(prog, b)
            suffix = '.ptx' if get is lib.nvrtcGetPTX else '.cubin'
            open(os.path.join(out, name + suffix), 'wb').write(b.raw.rstrip(b'\0') if suffix == '.ptx' else b.raw)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
sys.exit(0 if ok else 1)
