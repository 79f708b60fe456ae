"""ClusterCaches: per-video cluster caches in blocks of a (fake) KV pool, capped across videos."""

import pytest
import torch

from mosaic_sglang.offload.host_store import HostKVStore
from mosaic_sglang.offload.cluster_caches import ClusterCaches, DevicePool
from mosaic_sglang.offload.host_tier import HostTier

L, H, D = 2, 2, 4


class FakeAllocator:
    """SGLang's allocator contract: alloc(n) -> slots or None; free(slots)."""

    def __init__(self, size: int) -> None:
        self.free_slots = list(range(1, size + 1))  # slot 0 is SGLang's padding slot
        self.size = size

    def alloc(self, n: int):
        if n > len(self.free_slots):
            return None
        out, self.free_slots = self.free_slots[:n], self.free_slots[n:]
        return torch.tensor(out, dtype=torch.int64)

    def free(self, slots: torch.Tensor) -> None:
        assert not set(slots.tolist()) & set(self.free_slots), "double free"
        self.free_slots += slots.tolist()


def _pool(size: int):
    alloc = FakeAllocator(size)
    k = [torch.zeros(size + 1, H, D) for _ in range(L)]
    v = [torch.zeros(size + 1, H, D) for _ in range(L)]
    return alloc, DevicePool(k, v, alloc.alloc, alloc.free, page_size=1)


def _store():
    return HostKVStore(64, num_layers=L, num_kv_heads=H, head_dim=D, dtype=torch.float32)


def test_blocks_come_from_the_pool_and_go_back():
    alloc, pool = _pool(40)
    caches = ClusterCaches(_store(), max_videos=2, pool=pool)
    caches.begin_forward([1])
    a = caches.get(1, 10)
    assert a is not None and caches.held_tokens == 10 and len(alloc.free_slots) == 30
    caches.begin_forward([2])
    assert caches.get(2, 10) is not None and caches.held_tokens == 20
    caches.check_integrity()
    # a third video takes the place of the least recently used idle one (video 1)
    caches.begin_forward([3])
    assert caches.get(3, 10) is not None and 1 not in caches and 2 in caches and caches.held_tokens == 20
    assert len(alloc.free_slots) == 20
    caches.clear()
    assert caches.held_tokens == 0 and sorted(alloc.free_slots) == list(range(1, 41))


def test_no_cache_when_all_are_busy_or_the_pool_is_full():
    alloc, pool = _pool(25)
    caches = ClusterCaches(_store(), max_videos=2, pool=pool)
    caches.begin_forward([1, 2, 3])
    assert caches.get(1, 10) is not None and caches.get(2, 10) is not None
    assert caches.get(3, 10) is None and caches.unavailable == 1  # both caches serve this forward
    caches.drop(2)
    assert caches.get(3, 20) is None and caches.unavailable == 2  # 15 free slots < 20
    caches.check_integrity()


def test_pool_backed_reads_are_exact_and_leave_other_rows_alone():
    alloc, pool = _pool(30)
    tier = HostTier(_store(), max_cached_videos=1, pool=pool)
    g = torch.Generator().manual_seed(0)
    k, v = torch.randn(L, 16, H, D, generator=g), torch.randn(L, 16, H, D, generator=g)
    a, b = tier.put_clusters(lambda s: (k[:, s], v[:, s]), [torch.tensor([1, 2, 3]), torch.tensor([9, 10])])
    tier.begin_forward([5])
    for layer in range(L):
        got_k, got_v, _ = tier.read_cached(5, 8, layer, torch.cat([b, a]), "cpu", prefetch_next=True)
        assert torch.equal(got_k, k[layer, torch.tensor([9, 10, 1, 2, 3])])
        assert torch.equal(got_v, v[layer, torch.tensor([9, 10, 1, 2, 3])])
    block = tier.caches._caches[5].block
    outside = torch.ones(31, dtype=torch.bool)
    outside[block] = False
    assert all(bool((t[outside] == 0).all()) for t in pool.k_layers + pool.v_layers)  # only the block was written
    # a second video: the only cache is idle in this forward, so it moves over
    tier.begin_forward([6])
    tier.read_cached(6, 8, 0, a, "cpu")
    assert 5 not in tier.caches and 6 in tier.caches and tier.caches.held_tokens == 8
    tier.check_integrity()
    tier.clear()
    assert len(alloc.free_slots) == 30


def test_max_videos_is_validated():
    with pytest.raises(ValueError, match="max_videos: expected an integer >= 1, got 0"):
        ClusterCaches(_store(), max_videos=0)
