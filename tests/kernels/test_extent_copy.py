"""K7 `gather_slots` / `scatter_slots` (Triton, one launch for all layers through a layer pointer table) vs
their row-by-row references vs plain ``index_select`` / ``index_copy_``, on seeded odd shapes: L = 1 and 3,
H = 4, D = 60 with a V head dim of 36, n = 0 / 1 / 63 duplicate-free random slots (int32 and int64), fp32,
fp16 and bf16. Copies are exact, so everything is compared with ``torch.equal``. Gather destinations are
poisoned with NaN (an unwritten row fails) inside a larger buffer whose tail must stay NaN; scatter
poisons the listed pool rows and checks every other row is bit-for-bit untouched. Also: a stacked,
slot-strided pool with token-major staging, cached and sliced pointer tables, and the argument errors."""

from __future__ import annotations

import pytest
import torch

from kernel_support import DEVICE
from mosaic_sglang.kernels.extent_copy import (
    gather_slots, gather_slots_reference, layer_table, scatter_slots, scatter_slots_reference,
)

H, D, DV, NUM_SLOTS = 4, 60, 36, 97  # V head dim != K head dim on purpose
CASES = [(1, 0), (1, 1), (1, 63), (3, 0), (3, 1), (3, 63)]  # (layers, entries)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SLOT_DTYPES = {"i32": torch.int32, "i64": torch.int64}
PARAMS = [(L, n, dt, sd) for L, n in CASES for dt in DTYPES for sd in SLOT_DTYPES]
IDS = [f"L{L}-N{n}-H{H}-D{D}-{dt}-{sd}" for L, n, dt, sd in PARAMS]


def _pool(num_layers, dtype, gen, device="cpu"):
    """A KV pool as SGLang holds it: a list of separate per-layer tensors."""
    k = [torch.randn(NUM_SLOTS, H, D, generator=gen).to(dtype).to(device) for _ in range(num_layers)]
    v = [torch.randn(NUM_SLOTS, H, DV, generator=gen).to(dtype).to(device) for _ in range(num_layers)]
    return k, v


def _slots(n, slot_dtype, gen):
    return torch.randperm(NUM_SLOTS, generator=gen)[:n].to(slot_dtype)  # duplicate-free


def _nan(*shape, dtype, device="cpu"):
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


@pytest.mark.parametrize("num_layers, n, dt, sd", PARAMS, ids=IDS)
def test_gather_equals_reference_and_index_select(num_layers, n, dt, sd):
    dtype, gen = DTYPES[dt], torch.Generator().manual_seed(1000 * num_layers + n)
    k, v = _pool(num_layers, dtype, gen)
    slots = _slots(n, SLOT_DTYPES[sd], gen)
    want_k = torch.stack([layer.index_select(0, slots) for layer in k])  # [L, n, H, D]
    want_v = torch.stack([layer.index_select(0, slots) for layer in v])

    ref_k, ref_v = _nan(num_layers, n, H, D, dtype=dtype), _nan(num_layers, n, H, DV, dtype=dtype)
    gather_slots_reference(k, v, slots, ref_k, ref_v)
    assert torch.equal(ref_k, want_k) and torch.equal(ref_v, want_v)

    # staging = the first n entries of larger NaN buffers (strided in L); the tail must stay unwritten
    buf_k, buf_v = _nan(num_layers, n + 3, H, D, dtype=dtype, device=DEVICE), _nan(num_layers, n + 3, H, DV,
                                                                                  dtype=dtype, device=DEVICE)
    dk, dv = [t.to(DEVICE) for t in k], [t.to(DEVICE) for t in v]
    out_k, out_v = buf_k[:, :n], buf_v[:, :n]
    got_k, got_v = gather_slots(dk, dv, slots.to(DEVICE), out_k, out_v, impl="triton")
    assert got_k is out_k and got_v is out_v
    assert torch.equal(out_k.cpu(), want_k) and torch.equal(out_v.cpu(), want_v)
    assert bool(buf_k[:, n:].isnan().all()) and bool(buf_v[:, n:].isnan().all())


@pytest.mark.parametrize("num_layers, n, dt, sd", PARAMS, ids=IDS)
def test_scatter_equals_reference_and_index_copy(num_layers, n, dt, sd):
    dtype, gen = DTYPES[dt], torch.Generator().manual_seed(2000 * num_layers + n)
    k, v = _pool(num_layers, dtype, gen)
    slots = _slots(n, SLOT_DTYPES[sd], gen)
    src_k = torch.randn(num_layers, n, H, D, generator=gen).to(dtype)
    src_v = torch.randn(num_layers, n, H, DV, generator=gen).to(dtype)
    for layer in k + v:
        layer[slots.long()] = float("nan")  # a listed row the copy misses stays NaN and fails torch.equal
    want_k = [layer.clone().index_copy_(0, slots.long(), s) for layer, s in zip(k, src_k)]
    want_v = [layer.clone().index_copy_(0, slots.long(), s) for layer, s in zip(v, src_v)]

    ref_k, ref_v = [t.clone() for t in k], [t.clone() for t in v]
    scatter_slots_reference(src_k, src_v, slots, ref_k, ref_v)
    assert all(map(torch.equal, ref_k, want_k)) and all(map(torch.equal, ref_v, want_v))

    dk, dv = [t.to(DEVICE) for t in k], [t.to(DEVICE) for t in v]
    scatter_slots(src_k.to(DEVICE), src_v.to(DEVICE), slots.to(DEVICE), dk, dv, impl="triton")
    # whole layers compared: listed rows hold src, every other row is bit-for-bit what it was
    assert all(torch.equal(a.cpu(), b) for a, b in zip(dk, want_k))
    assert all(torch.equal(a.cpu(), b) for a, b in zip(dv, want_v))


@pytest.mark.parametrize("dt", ["fp16", "bf16"])
def test_stacked_strided_pool_token_major_staging_round_trip(dt):
    """The pool as one ``[L, S, H, D]`` tensor (TransferEngine's other form) whose slots are every other
    row of a bigger buffer (slot stride != H·D), and staging laid out token-major ``[n, L, H, D]``."""
    dtype, gen, num_layers, n = DTYPES[dt], torch.Generator().manual_seed(7), 3, 40
    big_k = torch.randn(num_layers, 2 * NUM_SLOTS, H, D, generator=gen).to(dtype).to(DEVICE)
    big_v = torch.randn(num_layers, 2 * NUM_SLOTS, H, DV, generator=gen).to(dtype).to(DEVICE)
    pool_k, pool_v = big_k[:, ::2], big_v[:, ::2]  # [L, S, H, D], stride(1) = 2·H·D
    slots = _slots(n, torch.int64, gen).to(DEVICE)
    stage_k = _nan(n, num_layers, H, D, dtype=dtype, device=DEVICE).transpose(0, 1)  # [L, n, H, D] view
    stage_v = _nan(n, num_layers, H, DV, dtype=dtype, device=DEVICE).transpose(0, 1)
    gather_slots(pool_k, pool_v, slots, stage_k, stage_v, impl="triton")
    assert torch.equal(stage_k, pool_k[:, slots]) and torch.equal(stage_v, pool_v[:, slots])

    other_k, other_v = torch.zeros_like(pool_k), torch.zeros_like(pool_v)
    scatter_slots(stage_k, stage_v, slots, list(other_k), list(other_v), impl="triton")
    assert torch.equal(other_k[:, slots], pool_k[:, slots]) and torch.equal(other_v[:, slots], pool_v[:, slots])
    rest = torch.ones(NUM_SLOTS, dtype=torch.bool, device=DEVICE)
    rest[slots] = False
    assert not other_k[:, rest].any() and not other_v[:, rest].any()


def test_cached_and_sliced_tables():
    """Tables built once serve many calls; `slice_layers` gathers one layer without rebuilding."""
    gen, num_layers = torch.Generator().manual_seed(11), 3
    k, v = _pool(num_layers, torch.float16, gen, DEVICE)
    k_table, v_table = layer_table(k, name="k"), layer_table(v, name="v")
    for n in (5, 33):
        slots = _slots(n, torch.int32, gen).to(DEVICE)
        out_k, out_v = _nan(num_layers, n, H, D, dtype=torch.float16, device=DEVICE), _nan(
            num_layers, n, H, DV, dtype=torch.float16, device=DEVICE)
        gather_slots(k, v, slots, out_k, out_v, k_table=k_table, v_table=v_table, impl="triton")
        assert torch.equal(out_k, torch.stack([t[slots] for t in k]))
        assert torch.equal(out_v, torch.stack([t[slots] for t in v]))
    one_k, one_v = _nan(1, n, H, D, dtype=torch.float16, device=DEVICE), _nan(1, n, H, DV, dtype=torch.float16,
                                                                           device=DEVICE)
    gather_slots(k[1:2], v[1:2], slots, one_k, one_v, k_table=k_table.slice_layers(1, 2),
                 v_table=v_table.slice_layers(1, 2), impl="triton")
    assert torch.equal(one_k[0], k[1][slots]) and torch.equal(one_v[0], v[1][slots])


def _bad_pools():
    k = [torch.zeros(NUM_SLOTS, H, D) for _ in range(3)]
    v = [torch.zeros(NUM_SLOTS, H, DV) for _ in range(3)]
    wide = torch.zeros(2 * NUM_SLOTS, H, D)
    return {
        "dtype": ([k[0], k[1].half(), k[2]], v, r"share dtype.*layer 1 has float16"),
        "shape": ([k[0], k[1], torch.zeros(NUM_SLOTS + 1, H, D)], v, r"share dtype.*layer 2 has float32 \[98"),
        "strides": ([k[0], wide[::2], k[2]], v, r"strides.*layer 1 has .*strides \(480, 60, 1\)"),
        "rows": ([torch.zeros(NUM_SLOTS, D, H).transpose(1, 2)] * 3, v, r"contiguous \[num_kv_heads, head_dim\]"),
        "kv-layers": (k, v[:2], r"layers_k/layers_v: expected the same layer count"),
        "empty": ([], v, r"at least one layer"),
    }


@pytest.mark.parametrize("impl", ["triton", "reference"])
@pytest.mark.parametrize("case", list(_bad_pools()))
def test_layer_errors(case, impl):
    k, v, match = _bad_pools()[case]
    slots = torch.arange(4)
    with pytest.raises(ValueError, match=match):
        gather_slots(k, v, slots, torch.zeros(3, 4, H, D), torch.zeros(3, 4, H, DV), impl=impl)


def test_argument_errors():
    k, v = [torch.zeros(NUM_SLOTS, H, D)] * 2, [torch.zeros(NUM_SLOTS, H, DV)] * 2
    out_k, out_v = torch.zeros(2, 4, H, D), torch.zeros(2, 4, H, DV)
    with pytest.raises(ValueError, match=r"out_v: expected \[2, 4, 4, 36\] torch.float32"):
        gather_slots(k, v, torch.arange(4), out_k, torch.zeros(2, 4, H, D), impl="triton")
    with pytest.raises(ValueError, match=r"src_k: expected .* got float16"):
        scatter_slots(out_k.half(), out_v, torch.arange(4), k, v, impl="triton")
    with pytest.raises(ValueError, match=r"slots: expected \[n\] int32 or int64"):
        gather_slots(k, v, torch.arange(4.0), out_k, out_v, impl="triton")
    with pytest.raises(ValueError, match=r"gather_slots: impl: expected None, 'triton' or 'reference', got 'cuda'"):
        gather_slots(k, v, torch.arange(4), out_k, out_v, impl="cuda")
    with pytest.raises(ValueError, match=r"scatter_slots: impl: .* got 'torch'"):
        scatter_slots(out_k, out_v, torch.arange(4), k, v, impl="torch")
