"""The Python package against the real host backend (mmap + memfd pages): numpy views over the manager's memory."""
import os

import numpy as np
import pytest

from vattention import KVCache, OutOfPages, VAttentionError

SPEC = dict(layers=3, kv_heads=2, head_dim=16, dtype="fp16", max_slots=4, max_context=512, page_size=4096)


def test_views_are_zero_copy_and_survive_growth_and_reuse():
    rng = np.random.default_rng()
    with KVCache(**SPEC, memory_budget=256 * 4096) as kv:
        a = kv.allocate_slot(expected_length=100)
        kv.step({a: 50})
        data = {}
        for layer in range(3):
            for kind, view in (("k", kv.keys(layer)), ("v", kv.values(layer))):
                x = rng.standard_normal((50, 2, 16)).astype(np.float16)
                view[a, :50] = x
                data[(layer, kind)] = x
        # Grow across page boundaries (4 KB pages hold 64 tokens of one layer here) and write the new part.
        kv.step({a: 300})
        for layer in range(3):
            tail = rng.standard_normal((250, 2, 16)).astype(np.float16)
            kv.keys(layer)[a, 50:300] = tail
            data[(layer, "k")] = np.concatenate([data[(layer, "k")], tail])
        for (layer, kind), x in data.items():
            view = kv.keys(layer) if kind == "k" else kv.values(layer)
            np.testing.assert_array_equal(view[a, :len(x)], x)
        # Two views of the same layer are the same memory.
        kv.keys(1)[a, 0, 0, 0] = 7
        assert kv.keys(1)[a, 0, 0, 0] == 7
        kv.check_invariants()
        st = kv.stats()
        assert st["active_slots"] == 1 and st["mapped_pages"] > 0


def test_errors_are_exceptions_and_change_nothing():
    with KVCache(**SPEC, memory_budget=6 * 4 * 4096, background_mapper=False) as kv:  # 4 pages per tensor
        a = kv.allocate_slot()
        kv.step({a: 64 * 3})
        b = kv.allocate_slot()
        before = kv.stats()
        with pytest.raises(OutOfPages):
            kv.step({b: 64 * 2})
        assert kv.stats()["mapped_pages"] == before["mapped_pages"]
        with pytest.raises(VAttentionError):
            kv.step({99: 1})
        with pytest.raises(VAttentionError):
            kv.step({a: 10_000})
        kv.free(a)
        with pytest.raises(VAttentionError):
            kv.free(a)
        kv.step({b: 64 * 2})  # a's pages are reclaimed for b
        kv.check_invariants()
    with pytest.raises(VAttentionError):
        KVCache(**{**SPEC, "page_size": 5000})


# Absurd sizes (issue 14): each is refused with VATTN_E_INVALID and a message; none may trap (an integer overflow is a
# SIGILL in Swift), hang (a pool of billions of pages) or be accepted (a budget larger than the machine's memory).
ABSURD = [
    ("head_dim", {"head_dim": 1 << 50}),
    ("head_dim", {"head_dim": 1 << 62}),
    ("max_slots", {"max_slots": 1 << 50}),
    ("max_slots", {"max_slots": 1 << 62}),
    ("max_context", {"max_context": 1 << 50}),
    ("max_context", {"max_context": 1 << 62}),
    ("kv_heads", {"kv_heads": 1 << 62}),
    ("layers", {"layers": 1 << 62, "layout": "mega"}),
    ("page", {"page_size": 1 << 62}),
]


@pytest.mark.parametrize("what,override", ABSURD)
def test_absurd_spec_sizes_are_refused(what, override):
    with pytest.raises(VAttentionError) as e:
        KVCache(**{**SPEC, **override}, memory_budget=64 * 4096)
    assert e.value.code == 1, e.value  # VATTN_E_INVALID
    assert "exceeds" in str(e.value) or "larger than" in str(e.value), str(e.value)


@pytest.mark.parametrize("exponent", [41, 43, 45, 62])
def test_budgets_beyond_physical_memory_are_refused(exponent):
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert (1 << exponent) > ram, "this machine has more memory than the test assumes"
    with pytest.raises(VAttentionError) as e:
        KVCache(**SPEC, memory_budget=1 << exponent)
    assert e.value.code == 1 and "physical memory" in str(e.value), str(e.value)


def test_negative_budget_and_look_ahead_are_refused():
    with pytest.raises(VAttentionError):
        KVCache(**SPEC, memory_budget=-1)
    with pytest.raises(VAttentionError) as e:
        KVCache(**SPEC, memory_budget=64 * 4096, look_ahead_tokens=1 << 62)
    assert e.value.code == 1
