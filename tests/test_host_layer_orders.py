"""Per-layer row orders in the host tier (`offload/layer_orders.py`): with one cluster membership per layer,
each layer's clusters are contiguous sub-ranges of their extent's plane, so a layer's cluster is one copy;
every read (cached, direct, keys, spilled) gives the K/V of the rows asked, in every layer."""

from __future__ import annotations

import pytest
import torch

from mosaic_sglang.integration.hicache_spill import HiCacheSpillBackend
from mosaic_sglang.offload import HostKVStore, HostTier, SpillTier
from mosaic_sglang.offload.checksums import OffloadCorruptionError
from mosaic_sglang.offload.layer_orders import extent_order

L, H, D = 2, 2, 4


def _pool(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(L, n, H, D, generator=g), torch.randn(L, n, H, D, generator=g)


@pytest.fixture
def debug(monkeypatch):
    monkeypatch.setenv("MOSAIC_DEBUG", "1")  # integrity after every change, checksums on every read


def test_extent_order_sorts_each_layer_by_cluster_keeping_position_order():
    layout = extent_order(torch.tensor([[3, 1, 3, 1, 2], [0, 0, 0, 0, 0]]))
    assert layout.rank.tolist() == [[3, 0, 4, 1, 2], [0, 1, 2, 3, 4]]
    assert layout.sub.tolist() == [[3, 0, 3, 0, 2], [0, 0, 0, 0, 0]]
    assert layout.length.tolist() == [[2, 2, 2, 2, 1], [5, 5, 5, 5, 5]]
    assert layout.permute(torch.arange(10).view(2, 5)).tolist() == [[1, 3, 4, 0, 2], [5, 6, 7, 8, 9]]


# Two extents; layer 0 and layer 1 cluster the same 10 positions differently.
GROUPS = [torch.tensor([2, 3, 5, 7, 8, 9]), torch.tensor([20, 21, 22, 23])]
CLUSTERS = [torch.tensor([[0, 1, 0, 1, 2, 2], [4, 4, 4, 5, 5, 6]]), torch.tensor([[3, 3, 4, 4], [7, 8, 7, 8]])]


def _tier(capacity=32, **kw):
    return HostTier(HostKVStore(capacity, num_layers=L, num_kv_heads=H, head_dim=D, dtype=torch.float32),
                    layer_orders=True, **kw)


def test_every_read_gives_the_rows_asked_in_every_layer_and_a_cluster_is_one_copy(debug):
    k, v = _pool()
    tier = _tier()
    read_kv = lambda s: (k[:, s], v[:, s])
    rows = tier.put_clusters(read_kv, GROUPS, CLUSTERS)
    host, positions = torch.cat(rows), torch.cat(GROUPS)
    for layer in range(L):
        got_k, got_v, counts = tier.read(layer, host, "cpu")
        assert torch.equal(got_k, k[layer, positions]) and torch.equal(got_v, v[layer, positions])
        distinct = sum(int(c[layer].unique().numel()) for c in CLUSTERS)
        assert counts.copies == distinct  # one per (layer) cluster touched, not one per extent or per run
    assert torch.equal(tier.read_keys(host), k[:, positions])
    assert torch.equal(tier.read_keys(host, 1), k[1, positions])
    # layer 1's cluster 5 (positions 7, 8) through a cluster cache: one copy of exactly its two rows
    tier.begin_forward([9])
    want = rows[0][[3, 4]]
    got_k, _, counts = tier.read_cached(9, 16, 1, want, "cpu")
    assert torch.equal(got_k, k[1, torch.tensor([7, 8])])
    assert (counts.copies, counts.copy_bytes) == (1, 2 * 2 * H * D * 4)
    # the same rows at layer 0 lie in two clusters there (ids 1 and 2): two copies, then all hits
    got_k, _, counts = tier.read_cached(9, 16, 0, want, "cpu")
    assert torch.equal(got_k, k[0, torch.tensor([7, 8])]) and counts.copies == 2
    tier.begin_forward([9])
    assert tier.read_cached(9, 16, 0, want, "cpu").counts.copies == 0
    tier.check_integrity()


def test_freed_rows_reused_by_a_new_extent_are_never_served_from_an_old_cached_sub_range(debug):
    """The new extent has the same rows and the same sub-ranges (two of two rows) with other data: every id
    of the freed extent must leave the caches, not only its start."""
    k, v = _pool()
    tier = _tier(capacity=4)
    read_kv = lambda s: (k[:, s], v[:, s])
    (a,) = tier.put_clusters(read_kv, [torch.arange(0, 4)], [torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]])])
    tier.begin_forward([3])
    assert tier.read_cached(3, 16, 0, a, "cpu").counts.copies == 2
    tier.release(a)
    (b,) = tier.put_clusters(read_kv, [torch.arange(40, 44)], [torch.tensor([[5, 5, 6, 6], [5, 5, 6, 6]])])
    assert torch.equal(a, b)  # the same host rows, other data
    tier.begin_forward([3])
    got_k, _, counts = tier.read_cached(3, 16, 0, b, "cpu")
    assert torch.equal(got_k, k[0, 40:44]) and counts.copies == 2
    tier.check_integrity()


def test_a_selection_larger_than_the_cache_reads_one_copy_per_sub_range_and_prefetch_is_not_planned(debug):
    k, v = _pool()
    tier = _tier()
    rows = tier.put_clusters(lambda s: (k[:, s], v[:, s]), GROUPS, CLUSTERS)
    host = torch.cat(rows)
    tier.begin_forward([2])
    got_k, _, counts = tier.read_cached(2, 4, 1, host, "cpu")  # 10 rows, a 4-slot cache: read around it
    assert torch.equal(got_k, k[1, torch.cat(GROUPS)])
    assert (counts.overflow_reads, counts.copies) == (1, 5)  # layer 1: clusters 4, 5, 6 and 7, 8
    got_k, _, counts = tier.read_cached(2, 16, 0, rows[1], "cpu", prefetch_next=True)
    assert torch.equal(got_k, k[0, GROUPS[1]]) and counts.prefetch_copies == 0  # layer 1's clusters differ


def test_a_corrupt_cached_sub_range_is_caught(debug):
    k, v = _pool()
    tier = _tier()
    rows = tier.put_clusters(lambda s: (k[:, s], v[:, s]), GROUPS, CLUSTERS)
    tier.begin_forward([1])
    tier.read_cached(1, 16, 0, rows[1], "cpu")
    cache = tier.caches._caches[1]
    cache.engine.device_k[0].fill_(7.0)  # every cached slot of layer 0 now differs from the host store
    tier.begin_forward([1])
    with pytest.raises(OffloadCorruptionError, match="sub-range"):
        tier.read_cached(1, 16, 0, rows[1], "cpu")
    tier.store.k_buffer[1].fill_(7.0)  # the host store itself, before any copy: its checksum catches it
    tier.begin_forward([1])
    with pytest.raises(OffloadCorruptionError, match="host store"):
        tier.read_cached(1, 16, 1, rows[0], "cpu")


def test_spilled_extents_come_back_in_their_per_layer_order(tmp_path, debug):
    k, v = _pool()
    store = HostKVStore(6, num_layers=L, num_kv_heads=H, head_dim=D, dtype=torch.float32)
    backend = HiCacheSpillBackend("file", str(tmp_path), model_name="tiny")
    tier = HostTier(store, spill=SpillTier(backend, store), spill_tokens=32, layer_orders=True)
    read_kv = lambda s: (k[:, s], v[:, s])
    (a,) = tier.put_clusters(read_kv, GROUPS[:1], CLUSTERS[:1])
    tier.begin_forward([])
    (b,) = tier.put_clusters(read_kv, GROUPS[1:], CLUSTERS[1:])  # a is spilled to make room
    assert tier.spilled_tokens == 6
    assert torch.equal(tier.read_keys(a), k[:, GROUPS[0]])  # from the blob, each layer in its order
    tier.begin_forward([])
    for layer in range(L):
        got_k, got_v, _ = tier.read(layer, torch.cat([a, b]), "cpu")
        assert torch.equal(got_k, k[layer, torch.cat(GROUPS)]) and torch.equal(got_v, v[layer, torch.cat(GROUPS)])
    tier.check_integrity()


def test_layer_clusters_are_required_exactly_with_per_layer_orders():
    k, v = _pool()
    with pytest.raises(ValueError, match="layer_clusters"):
        _tier().put_clusters(lambda s: (k[:, s], v[:, s]), GROUPS)
    plain = HostTier(HostKVStore(16, num_layers=L, num_kv_heads=H, head_dim=D, dtype=torch.float32))
    with pytest.raises(ValueError, match="layer_clusters"):
        plain.put_clusters(lambda s: (k[:, s], v[:, s]), GROUPS, CLUSTERS)
