"""`TransferEngine`: store → residency → engine round trip is byte-exact; counters match the plans."""

from __future__ import annotations

import random

import pytest
import torch

from mosaic_sglang.offload.host_store import HostKVStore
from mosaic_sglang.offload.residency import ClusterResidency
from mosaic_sglang.offload.transfer import TransferEngine

L, H, D, DV = 3, 2, 5, 7  # odd head dims on purpose


def _setup(device="cpu", capacity=41, dtype=torch.float32, seed=0, clusters=30, mapped=False):
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    host = HostKVStore(400, num_layers=L, num_kv_heads=H, head_dim=D, v_head_dim=DV, dtype=dtype,
                       pin_memory=device != "cpu", poison=True)
    data = {}
    for cid in range(clusters):
        n = rng.choice([1, 2, 3, 6, 11])
        k = torch.randn(L, n, H, D, generator=g).to(dtype)
        v = torch.randn(L, n, H, DV, generator=g).to(dtype)
        data[cid] = (host.put(k, v), k, v)
    res = ClusterResidency(capacity, num_layers=L, bytes_per_token=host.bytes_per_token)
    # Poison the device cache too: a slot the plan forgot to fill reads back as NaN.
    dk = torch.full((L, capacity, H, D), float("nan"), dtype=dtype, device=device)
    dv = torch.full((L, capacity, H, DV), float("nan"), dtype=dtype, device=device)
    if not mapped:
        return host, data, res, TransferEngine(host, dk, dv), rng
    # the cache lives in scattered rows of larger per-layer buffers (a KV pool); the rest must stay untouched
    rows = 3 * capacity
    slot_map = torch.randperm(rows, generator=g)[:capacity]
    pool_k = [torch.full((rows, H, D), 7.0, dtype=dtype, device=device) for _ in range(L)]
    pool_v = [torch.full((rows, H, DV), 7.0, dtype=dtype, device=device) for _ in range(L)]
    for layer in range(L):
        pool_k[layer][slot_map.to(device)] = float("nan")
        pool_v[layer][slot_map.to(device)] = float("nan")
    return host, data, res, TransferEngine(host, pool_k, pool_v, slot_map=slot_map), rng


def _run_steps(host, data, res, eng, rng, *, steps=25, budget=30, prefetch=True):
    """Random selections through residency + engine; returns ``(asked, resident)``: clusters asked at
    layers >= 1 and how many of them were resident beforehand (read from the residency, not its stats)."""
    ids_all = sorted(data)
    asked = resident = 0
    for _ in range(steps):
        res.begin_step()
        eng.begin_step()
        for layer in range(L):
            ids, used = [], 0
            for cid in rng.sample(ids_all, len(ids_all)):
                if used + data[cid][0].length <= budget:
                    ids.append(cid)
                    used += data[cid][0].length
            exts = [data[c][0] for c in ids]
            before = eng.stats.ops, eng.stats.bytes
            if layer >= 1:
                asked += len(ids)
                resident += sum(res.slots_of(layer, c) is not None for c in ids)
            acc = res.access(layer, ids, exts)
            eng.submit(acc.plan)
            assert eng.stats.ops - before[0] == len(acc.misses)
            assert eng.stats.bytes - before[1] == host.bytes_per_token * sum(data[c][0].length for c in acc.misses.tolist())
            eng.wait(layer)
            # What attention would gather equals what was offloaded, bitwise.
            rows = eng.rows(acc.slots)
            want_k = torch.cat([data[c][1][layer] for c in ids])
            want_v = torch.cat([data[c][2][layer] for c in ids])
            assert torch.equal(eng.device_k[layer][rows].cpu(), want_k)
            assert torch.equal(eng.device_v[layer][rows].cpu(), want_v)
            if prefetch and layer + 1 < L:
                eng.submit(res.prefetch(layer + 1, ids, exts))
            res.check_integrity()
        host.check_integrity()
    eng.synchronize()
    return asked, resident


@pytest.mark.parametrize("mapped", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cpu_round_trip_is_bitwise_and_counted(seed, dtype, mapped):
    host, data, res, eng, rng = _setup(dtype=dtype, seed=seed, mapped=mapped)
    asked, resident = _run_steps(host, data, res, eng, rng)
    if mapped:  # rows outside the slot map were never written
        outside = torch.ones(eng.device_k[0].shape[0], dtype=torch.bool)
        outside[eng.rows(torch.arange(eng.capacity))] = False
        assert all(bool((k[outside] == 7).all()) and bool((v[outside] == 7).all()) for k, v in zip(eng.device_k, eng.device_v))
    s = res.stats
    assert eng.stats.ops == s.demand_ops + s.prefetch_ops
    assert 0 < eng.stats.runs == eng.stats.launches < eng.stats.ops  # neighbouring extents merged
    assert eng.stats.bytes == (s.demand_tokens + s.prefetch_tokens) * host.bytes_per_token
    # the hit rate is what was resident when asked (counted independently above), and prefetch helped
    assert (s.predicted_selected, s.predicted_hits) == (asked, resident) and 0 < resident < asked
    assert s.prefetch_hit_rate == resident / asked and s.prefetch_used > 0


def test_empty_plan_moves_nothing_and_shape_checks():
    host, data, res, eng, _ = _setup()
    res.begin_step()
    acc = res.access(0, [], [])
    eng.submit(acc.plan)
    assert eng.stats.ops == eng.stats.bytes == 0 and acc.slots.numel() == 0
    with pytest.raises(ValueError, match="expected device_k"):
        TransferEngine(host, torch.zeros(L, 4, H, D + 1), torch.zeros(L, 4, H, DV))
    with pytest.raises(ValueError, match="dtype"):
        TransferEngine(host, torch.zeros(L, 4, H, D, dtype=torch.float16), torch.zeros(L, 4, H, DV, dtype=torch.float16))
    with pytest.raises(ValueError, match="slot_map"):
        TransferEngine(host, torch.zeros(L, 4, H, D), torch.zeros(L, 4, H, DV), slot_map=torch.tensor([0, 4]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_side_stream_round_trip(dtype):
    host, data, res, eng, rng = _setup(device="cuda", dtype=dtype, seed=5, mapped=dtype == torch.bfloat16)
    assert host.k_buffer.is_pinned() and eng.is_cuda
    _run_steps(host, data, res, eng, rng)
    assert eng.stats.launches <= eng.stats.plans
