"""HostTier: clusters into extents, piecemeal release by the tree, full store, what each read cost."""

import torch

from mosaic_sglang.offload.host_store import HostKVStore
from mosaic_sglang.offload.host_tier import HostReadCounts, HostTier, decode_host, encode_host

L, H, D = 2, 2, 4


def _tier(capacity=20):
    return HostTier(HostKVStore(capacity, num_layers=L, num_kv_heads=H, head_dim=D, dtype=torch.float32))


def _pool(n=64):
    g = torch.Generator().manual_seed(0)
    return torch.randn(L, n, H, D, generator=g), torch.randn(L, n, H, D, generator=g)


def test_round_trip_and_encoding():
    k, v = _pool()
    tier = _tier()
    groups = [torch.tensor([5, 9, 11]), torch.tensor([2, 30])]
    rows = tier.put_clusters(lambda s: (k[:, s], v[:, s]), groups)
    assert [r.numel() for r in rows] == [3, 2]
    assert torch.equal(decode_host(encode_host(rows[0])), rows[0]) and bool((encode_host(rows[0]) < 0).all())
    for layer in range(L):
        hk, hv, counts = tier.read(layer, torch.cat(rows), "cpu")
        assert torch.equal(hk, k[layer, torch.cat(groups)]) and torch.equal(hv, v[layer, torch.cat(groups)])
        # one copy per extent; bytes = 5 tokens x (K + V) x H x D x 4 bytes
        assert counts == HostReadCounts(copies=2, copy_bytes=5 * 2 * H * D * 4)
    assert torch.equal(tier.read_keys(rows[1]), k[:, groups[1]])
    tier.check_integrity()


def test_piecemeal_release_frees_an_extent_once_empty():
    k, v = _pool()
    tier = _tier()
    (rows,) = tier.put_clusters(lambda s: (k[:, s], v[:, s]), [torch.tensor([1, 2, 3, 4])])
    tier.release(rows[:2])
    assert tier.used_tokens == 4  # half the cluster is still referenced by the tree
    tier.release(rows[2:])
    assert tier.used_tokens == 0
    tier.check_integrity()


def test_full_store_offloads_what_fits_and_clear_empties():
    k, v = _pool()
    tier = _tier(capacity=6)
    rows = tier.put_clusters(lambda s: (k[:, s], v[:, s]), [torch.arange(4), torch.arange(4, 8), torch.arange(8, 9)])
    assert len(rows) == 1 and tier.used_tokens == 4  # the second cluster did not fit: the rest stayed
    tier.clear()
    assert tier.used_tokens == 0
    tier.check_integrity()


def test_cluster_cache_hits_misses_bound_and_no_stale_copies():
    k, v = _pool()
    tier = _tier(capacity=20)
    read_kv = lambda s: (k[:, s], v[:, s])
    a, b, c = tier.put_clusters(read_kv, [torch.tensor([1, 2, 3]), torch.tensor([10, 11]), torch.tensor([20, 21, 22, 23])])
    tier.begin_forward([7])
    got_k, got_v, counts = tier.read_cached(7, 6, 0, torch.cat([b, a[1:]]), "cpu")
    assert torch.equal(got_k, k[0, torch.tensor([10, 11, 2, 3])]) and torch.equal(got_v, v[0, torch.tensor([10, 11, 2, 3])])
    assert counts.copies == 2 and counts.copy_bytes == 5 * 2 * H * D * 4  # two clusters missed: one copy each
    assert counts.cache_lookups == 0  # layer 0 is not a lookup (no predecessor layer in the step)
    tier.begin_forward([7])
    assert tier.read_cached(7, 6, 0, a, "cpu").counts == HostReadCounts()  # hit: nothing moved
    tier.begin_forward([7])
    got_k, _, counts = tier.read_cached(7, 6, 0, c, "cpu")  # 4 more tokens: evicts the least recently used cluster
    assert counts.copies == 1
    assert torch.equal(got_k, k[0, torch.tensor([20, 21, 22, 23])]) and tier.resident_tokens(7) <= 6
    # the tree frees cluster c; a new cluster reuses its host rows: the cache must not serve the old copy
    tier.release(c)
    (d,) = tier.put_clusters(read_kv, [torch.tensor([40, 41, 42, 43])])
    tier.begin_forward([7])
    got_k, _, _ = tier.read_cached(7, 6, 0, d, "cpu")
    assert torch.equal(got_k, k[0, torch.tensor([40, 41, 42, 43])])
    # a selection larger than the cache falls back to a direct read (one copy per extent, counted as overflow)
    got_k, _, counts = tier.read_cached(7, 6, 1, torch.cat([a, b, d]), "cpu")
    assert torch.equal(got_k, k[1, torch.tensor([1, 2, 3, 10, 11, 40, 41, 42, 43])])
    assert (counts.copies, counts.overflow_reads, counts.cache_lookups) == (3, 1, 0)


def test_prefetch_fills_the_next_layer_so_it_hits_and_serves_correct_rows():
    k, v = _pool()
    tier = _tier(capacity=20)
    read_kv = lambda s: (k[:, s], v[:, s])
    a, b = tier.put_clusters(read_kv, [torch.tensor([1, 2, 3]), torch.tensor([10, 11])])
    tier.begin_forward([3])
    first = tier.read_cached(3, 8, 0, torch.cat([a, b]), "cpu", prefetch_next=True).counts
    assert (first.copies, first.prefetch_copies) == (4, 2)  # 2 demand copies at layer 0, 2 prefetched into layer 1
    stats = tier.cache_stats(3)
    got_k, got_v, second = tier.read_cached(3, 8, 1, torch.cat([b, a[:1]]), "cpu", prefetch_next=True)  # last layer
    assert torch.equal(got_k, k[1, torch.tensor([10, 11, 1])]) and torch.equal(got_v, v[1, torch.tensor([10, 11, 1])])
    assert (second.copies, second.cache_lookups, second.cache_hits) == (0, 2, 2)  # both prefetched clusters hit
    assert stats.prefetch_used == 2
    # without prefetch the next layer misses
    plain = _tier(capacity=20)
    a, b = plain.put_clusters(read_kv, [torch.tensor([1, 2, 3]), torch.tensor([10, 11])])
    plain.begin_forward([3])
    assert plain.read_cached(3, 8, 0, torch.cat([a, b]), "cpu").counts.copies == 2
    missed = plain.read_cached(3, 8, 1, torch.cat([a, b]), "cpu").counts
    assert (missed.copies, missed.prefetch_copies, missed.cache_lookups, missed.cache_hits) == (2, 0, 2, 0)


def _debug_tier(monkeypatch, capacity=20):
    monkeypatch.setenv("MOSAIC_DEBUG", "1")
    return _tier(capacity)


def test_debug_checksums_catch_corrupt_host_rows_and_cache_slots(monkeypatch):
    import pytest

    from mosaic_sglang.offload.checksums import OffloadCorruptionError

    k, v = _pool()
    tier = _debug_tier(monkeypatch)
    a, b = tier.put_clusters(lambda s: (k[:, s], v[:, s]), [torch.tensor([1, 2, 3]), torch.tensor([10, 11])])
    assert len(tier.checksums) == 2
    tier.begin_forward([5])
    tier.read_cached(5, 8, 0, torch.cat([a, b]), "cpu")  # clean load-back: verified, no error
    tier.read(1, a, "cpu")
    # a host row overwritten behind the tier's back: the next copy into the cache (layer 1) is refused
    tier.store.v_buffer[1, int(b[0])] += 1.0
    with pytest.raises(OffloadCorruptionError, match=f"host row {int(b[0])}, layer 1"):
        tier.read_cached(5, 8, 1, b, "cpu")
    with pytest.raises(OffloadCorruptionError, match="from the host store"):
        tier.read(1, b, "cpu")
    # a corrupt device cache slot is caught on a hit too (nothing copied, still verified)
    cache = tier.caches.get(5, 8)
    rows = cache.engine.rows(torch.tensor(cache.residency.slots_of(0, int(a[0]))))
    cache.engine.device_k[0][rows[0]] += 1.0
    with pytest.raises(OffloadCorruptionError, match="device cluster cache"):
        tier.read_cached(5, 8, 0, a, "cpu")
    tier.release(torch.cat([a, b]))
    assert len(tier.checksums) == 0
    tier.check_integrity()
