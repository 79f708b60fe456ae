"""`HostKVStore`: extent allocator invariants, byte-exact round trips, double free, full store."""

from __future__ import annotations

import random

import pytest
import torch

from mosaic_sglang.offload.host_store import Extent, HostKVStore, HostStoreFullError


def _store(capacity=97, *, layers=3, heads=2, dim=5, v_dim=7, dtype=torch.float32):
    # Odd sizes on purpose: capacity 97, D=5, Dv=7 catch any assumed alignment.
    return HostKVStore(capacity, num_layers=layers, num_kv_heads=heads, head_dim=dim, v_head_dim=v_dim,
                       dtype=dtype, poison=True)


def _kv(g, n, *, layers=3, heads=2, dim=5, v_dim=7):
    return torch.randn(layers, n, heads, dim, generator=g), torch.randn(layers, n, heads, v_dim, generator=g)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_put_free_keeps_integrity_and_bytes(seed):
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    store = _store()
    held: dict[Extent, tuple[torch.Tensor, torch.Tensor]] = {}
    for _ in range(300):
        if held and (rng.random() < 0.45 or store.num_free < 8):
            extent = rng.choice(list(held))
            store.free(extent)
            del held[extent]
        else:
            n = rng.choice([1, 2, 3, 7, 13])
            k, v = _kv(g, n)
            try:
                extent = store.put(k, v)
            except HostStoreFullError:
                assert store.largest_free < n
                continue
            assert extent.length == n and extent not in held
            held[extent] = (k, v)
        store.check_integrity()
        assert store.num_used == sum(e.length for e in held)
    for extent, (k, v) in held.items():  # nothing else overwrote any held extent
        for layer in range(3):
            rk, rv = store.read_layer([extent], layer)
            assert torch.equal(rk, k[layer]) and torch.equal(rv, v[layer])
    store.clear()
    store.check_integrity()
    assert store.num_free == store.capacity and store.largest_free == store.capacity


def test_read_layer_concatenates_in_the_given_order_fp16_bitwise():
    g = torch.Generator().manual_seed(3)
    store = _store(dtype=torch.float16)
    (k1, v1), (k2, v2) = _kv(g, 5), _kv(g, 1)
    e1 = store.put(k1.half(), v1.half())
    e2 = store.put(k2.half(), v2.half())
    k, v = store.read_layer([e2, e1], 2)
    assert k.dtype == torch.float16 and tuple(k.shape) == (6, 2, 5) and tuple(v.shape) == (6, 2, 7)
    assert torch.equal(k, torch.cat([k2[2], k1[2]]).half()) and torch.equal(v, torch.cat([v2[2], v1[2]]).half())
    assert store.bytes_per_token == 2 * (5 + 7) * 2


def test_first_fit_reuses_low_holes_and_coalesces():
    store = _store(capacity=20)
    a, b, c = store.allocate(4), store.allocate(4), store.allocate(4)
    assert (a.start, b.start, c.start) == (0, 4, 8)
    store.free(a)
    store.free(c)  # c merges with the tail hole [12, 20)
    assert store.largest_free == 12 and abs(store.fragmentation - (1 - 12 / 16)) < 1e-12
    assert store.allocate(3) == Extent(0, 3)  # first fit: the low hole
    store.free(Extent(0, 3))
    store.free(b)  # [0,4) + [4,8) + [8,20) coalesce into one hole
    store.check_integrity()
    assert store.largest_free == 20 and store.fragmentation == 0.0


def test_double_free_and_wrong_extent_raise():
    store = _store()
    e = store.allocate(6)
    store.free(e)
    with pytest.raises(ValueError, match="double free"):
        store.free(e)
    e = store.allocate(6)
    with pytest.raises(ValueError, match="allocated with length 6"):
        store.free(Extent(e.start, 5))
    with pytest.raises(ValueError, match="not allocated"):
        store.free(Extent(e.start + 1, 2))
    store.check_integrity()


def test_full_store_raises_with_capacity_request_and_fragmentation():
    store = _store(capacity=10)
    es = [store.allocate(2) for _ in range(5)]
    with pytest.raises(HostStoreFullError, match=r"requested 1 contiguous token rows, capacity 10, free 0"):
        store.allocate(1)
    store.free(es[1])
    store.free(es[3])  # 4 free rows, in two holes of 2
    with pytest.raises(HostStoreFullError, match=r"requested 3 .* free 4, largest free extent 2 \(fragmented"):
        store.allocate(3)
    store.check_integrity()


def test_freed_rows_are_poisoned_and_bad_inputs_rejected():
    g = torch.Generator().manual_seed(4)
    store = _store()
    e = store.put(*_kv(g, 3))
    store.free(e)
    assert torch.isnan(store.k_buffer[:, e.start : e.start + 3]).all()
    with pytest.raises(AssertionError, match="unallocated"):
        store.read_layer([e], 0)
    with pytest.raises(ValueError, match="expected k"):
        store.put(torch.zeros(3, 2, 2, 4), torch.zeros(3, 2, 2, 7))
    with pytest.raises(ValueError, match="length: expected an integer >= 1"):
        store.allocate(0)
    with pytest.raises(ValueError, match="capacity_tokens"):
        HostKVStore(0, num_layers=1, num_kv_heads=1, head_dim=1)


def test_pinned_only_with_cuda():
    store = HostKVStore(4, num_layers=1, num_kv_heads=1, head_dim=2)
    assert store.k_buffer.is_pinned() == torch.cuda.is_available()
