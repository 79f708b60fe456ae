"""HostTier: clusters into extents, piecemeal release by the tree, full store, reads counted."""

import torch

from mosaic_sglang.host_store import HostKVStore
from mosaic_sglang.integration.host_tier import HostTier, decode_host, encode_host

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
        hk, hv = tier.read(layer, torch.cat(rows), "cpu")
        assert torch.equal(hk, k[layer, torch.cat(groups)]) and torch.equal(hv, v[layer, torch.cat(groups)])
    assert tier.copies == 2 * L  # one copy per extent per layer
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
    assert len(rows) == 1 and tier.full_events == 1 and tier.used_tokens == 4
    tier.clear()
    assert tier.used_tokens == 0
    tier.check_integrity()
