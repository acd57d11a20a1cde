"""On the GPU: unmodified PyTorch SDPA (flash, cuDNN) and FlashInfer non-paged kernels reading K/V that live in a
VAttention-managed virtual tensor, while the slot grows and pages are mapped underneath. Every output is compared with
the same call on ordinary torch.empty tensors holding the same data.

usage: VATTN_LIB=path/libvattention_c.so python gpu_torch_check.py
"""
import sys
import traceback

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, __file__.rsplit("/tests/", 1)[0])
from vattention import KVCache  # noqa: E402

torch.manual_seed(0)
H_Q, H_KV, D = 32, 8, 128
results = []


def record(name, ours, reference):
    equal = torch.equal(ours, reference)
    diff = (ours.float() - reference.float()).abs().max().item()
    ok = equal or diff <= 1e-2 * reference.float().abs().max().item()
    results.append((name, ok, equal, diff))
    print(f"{'PASS' if ok else 'FAIL'} {name}: bitwise equal={equal} max|diff|={diff:.3g}", flush=True)


def ordinary(t):
    """The same data in a fresh torch.empty tensor with the same logical shape."""
    out = torch.empty(t.shape, dtype=t.dtype, device=t.device)
    out.copy_(t)
    return out


def sdpa_cases(kv, slot, length, tag):
    for layer in range(kv.layers):
        k, v = kv.keys(layer)[slot, :length], kv.values(layer)[slot, :length]  # [L, H_KV, D] in our memory
        k_ref, v_ref = ordinary(k), ordinary(v)
        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION):
            for q_len, causal in ((length, True), (1, False)):
                q = torch.randn(1, H_Q, q_len, D, dtype=torch.bfloat16, device="cuda")
                with sdpa_kernel(backend):
                    def run(k_, v_):
                        return torch.nn.functional.scaled_dot_product_attention(
                            q, k_.permute(1, 0, 2).unsqueeze(0), v_.permute(1, 0, 2).unsqueeze(0),
                            is_causal=causal, enable_gqa=True)
                    try:
                        ours, ref = run(k, v), run(k_ref, v_ref)
                    except RuntimeError as e:
                        # cuDNN/flash refuse some strides or shapes; say so instead of hiding it.
                        results.append((f"{tag} layer{layer} {backend.name} q{q_len}", None, False, str(e)[:120]))
                        print(f"SKIP {tag} layer{layer} {backend.name} q_len={q_len}: {str(e)[:160]}", flush=True)
                        continue
                record(f"{tag} layer{layer} {backend.name} q_len={q_len}", ours, ref)


def flashinfer_cases(kv, slot, length, tag):
    try:
        import flashinfer
    except Exception as e:  # noqa: BLE001
        print(f"SKIP FlashInfer: cannot import ({type(e).__name__}: {e})", flush=True)
        return False
    for layer in range(kv.layers):
        k, v = kv.keys(layer)[slot, :length], kv.values(layer)[slot, :length]  # NHD: [kv_len, H_KV, D]
        k_ref, v_ref = ordinary(k), ordinary(v)
        q = torch.randn(length, H_Q, D, dtype=torch.bfloat16, device="cuda")
        qd = torch.randn(H_Q, D, dtype=torch.bfloat16, device="cuda")
        calls = {
            "single_prefill causal": lambda k_, v_: flashinfer.single_prefill_with_kv_cache(q, k_, v_, causal=True),
            "single_decode": lambda k_, v_: flashinfer.single_decode_with_kv_cache(qd, k_, v_),
        }
        for name, call in calls.items():
            try:
                ours = call(k, v)
            except RuntimeError as e:
                # e.g. single_decode insists on a contiguous K: true of the per-layer layout, not of mega.
                results.append((f"{tag} layer{layer} flashinfer.{name}", None, False, str(e)[:120]))
                print(f"SKIP {tag} layer{layer} flashinfer.{name}: {str(e).splitlines()[-1][:160]}", flush=True)
                continue
            record(f"{tag} layer{layer} flashinfer.{name}", ours, call(k_ref, v_ref))
    return True


def fill(kv, slot, start, end):
    for layer in range(kv.layers):
        kv.keys(layer)[slot, start:end] = torch.randn(end - start, H_KV, D, dtype=torch.bfloat16, device="cuda")
        kv.values(layer)[slot, start:end] = torch.randn(end - start, H_KV, D, dtype=torch.bfloat16, device="cuda")


def main():
    for layout in ("per_layer", "mega"):
        # bf16, 8 KV heads × 128: 2 KB per token per layer → a 2 MB page holds 1024 tokens (per-layer layout).
        with KVCache(layers=2, kv_heads=H_KV, head_dim=D, dtype="bf16", max_slots=4, max_context=8192,
                     layout=layout, backend="cuda", memory_budget=64 * (2 << 20)) as kv:
            other = kv.allocate_slot(expected_length=500)
            kv.step({other: 500})
            fill(kv, other, 0, 500)
            slot = kv.allocate_slot(expected_length=3000)
            kv.step({slot: 1000})
            fill(kv, slot, 0, 1000)
            torch.cuda.synchronize()
            mapped_before = kv.stats()["mapped_pages"]
            sdpa_cases(kv, slot, 1000, f"{layout} L=1000")
            flashinfer_cases(kv, slot, 1000, f"{layout} L=1000")
            # Grow across the page boundary at 1024 tokens between two calls: new pages mapped underneath.
            kv.step({slot: 2100})
            fill(kv, slot, 1000, 2100)
            torch.cuda.synchronize()
            assert kv.stats()["mapped_pages"] > mapped_before, "growth mapped no page"
            sdpa_cases(kv, slot, 2100, f"{layout} L=2100 (grown across pages)")
            flashinfer_cases(kv, slot, 2100, f"{layout} L=2100 (grown across pages)")
            kv.check_invariants()
            print(f"{layout}: {kv.stats()}", flush=True)
    failed = [r for r in results if r[1] is False]
    passed = [r for r in results if r[1]]
    skipped = [r for r in results if r[1] is None]
    print(f"{len(passed)} passed, {len(failed)} failed, {len(skipped)} skipped")
    sys.exit(1 if failed or not passed else 0)


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.exit(2)
