#!/usr/bin/env python3
"""Compare two builds of the kernels, kernel by kernel, without a GPU (pip install nvidia-cuda-nvdisasm).

  python3 scripts/nvrtc_check.py --all --cubin-out A    # at one commit
  python3 scripts/nvrtc_check.py --all --cubin-out B    # at another
  python3 scripts/sass_compare.py A B

For every kernel of every A/*.cubin: SASS instruction count, whether the count of every floating-point opcode is the
same (the arithmetic; `HFMA2.MMA R, -RZ, RZ, …` register moves excluded), and local-memory (spill) instructions.
Exit 1 if a kernel's floating-point instructions differ or a kernel is missing."""
import collections, glob, os, re, site, subprocess, sys

ND = (glob.glob(os.path.join(site.getsitepackages()[0], 'nvidia/*/bin/nvdisasm')) + ['nvdisasm'])[0]
FP = re.compile(r'^(FFMA|FMUL|FADD|FMNMX|MUFU|HFMA2|HMUL2|HADD2|HMMA|HGMMA|F2F|F2FP|FSETP|FSEL|FCHK|DFMA|DMUL|DADD|'
                r'F2I|I2F|FRND|FSWZADD)')


def kernels(cubin):
    text = subprocess.run([ND, '-c', cubin], capture_output=True, text=True).stdout
    out, current = {}, None
    for line in text.splitlines():
        m = re.match(r'\s*\.text\.(\w+):', line)
        if m:
            current = m.group(1)
            out[current] = []
            continue
        m = re.match(r'\s+/\*[0-9a-f]{4,}\*/\s+(@!?U?P\w+\s+)?([A-Z0-9_.]+)(.*)', line)
        if current and m and m.group(2) != 'NOP':
            op = m.group(2)
            if op == 'HFMA2.MMA' and '-RZ, RZ' in m.group(3):
                op = 'MOV(HFMA2.MMA)'
            out[current].append(op)
    return out


a_dir, b_dir = sys.argv[1:3]
bad = 0
for cubin in sorted(glob.glob(os.path.join(a_dir, '*.cubin'))):
    name = os.path.basename(cubin)
    a, b = kernels(cubin), kernels(os.path.join(b_dir, name))
    print(f'== {name}')
    for k in sorted(set(a) | set(b)):
        if k not in a or k not in b:
            print(f'  {k}: only in {"A" if k in a else "B"}')
            bad += 1
            continue
        ca, cb = collections.Counter(a[k]), collections.Counter(b[k])
        fa = {o: n for o, n in ca.items() if FP.match(o)}
        fb = {o: n for o, n in cb.items() if FP.match(o)}
        la = sum(n for o, n in ca.items() if o.startswith(('LDL', 'STL')))
        lb = sum(n for o, n in cb.items() if o.startswith(('LDL', 'STL')))
        same = fa == fb
        bad += not same
        print(f'  {k}: {len(a[k])} -> {len(b[k])} instructions, floating point {"same" if same else "DIFFERENT"}, '
              f'local memory {la} -> {lb}')
sys.exit(1 if bad else 0)
