"""`ClusterCaches`: the device cluster caches of the cached videos, inside SGLang's KV pool.

A video whose clusters live on the host reads them through its own bounded cache (`ClusterResidency`
decides what stays, `TransferEngine` copies). Each cache is a block of ``capacity`` slots **allocated
from SGLang's token allocator**, so its memory is part of the pool that ``--mem-fraction-static`` sized
and the scheduler's accounting sees it: while held, the slots count as *protected* tokens of the
mosaic radix cache (`MosaicRadixCache.protected_size`), exactly like a locked prefix. Slot ``s`` of
layer ``l``'s cache is row ``block[s]`` of the pool's layer-``l`` K/V buffers (`TransferEngine`'s
slot map), so on a GPU attention can read cached clusters as ordinary pool pages.

At most ``max_videos`` caches exist (``MosaicConfig.cluster_cache_videos``); a new video takes the
block of the least recently used one that no request of the current forward has touched. When every
cache is in use, or the allocator has no free block, reads go straight to the host tier (counted by
the caller) and the next forward tries again. Blocks go back to the allocator when a video's cache is
dropped (its prefix was evicted) or the radix cache is flushed.

Without a pool (offline use, unit tests) each cache owns a ``[L, capacity, H, D]`` buffer.
"""

from __future__ import annotations

from typing import Callable, Dict, NamedTuple, Optional, Sequence

import torch

from .extents import Extent
from .host_store import HostKVStore
from .residency import ClusterResidency
from .transfer import TransferEngine

__all__ = ["DevicePool", "ClusterCaches", "VideoCache"]


class DevicePool(NamedTuple):
    """Where cluster caches live: the KV pool's layers and its allocator.

    Attributes:
        k_layers: ``L`` per-layer key buffers ``[rows, H, D]`` (SGLang: ``pool.get_key_buffer``).
        v_layers: ``L`` per-layer value buffers ``[rows, H, Dv]``.
        alloc: ``alloc(n) -> [n] int64 slots`` or None when the pool has no room (SGLang's
            ``token_to_kv_pool_allocator.alloc``; ``n`` is a multiple of ``page_size``).
        free: gives slots back (``token_to_kv_pool_allocator.free``).
        page_size: the allocator's page size.
    """

    k_layers: Sequence[torch.Tensor]
    v_layers: Sequence[torch.Tensor]
    alloc: Callable[[int], Optional[torch.Tensor]]
    free: Callable[[torch.Tensor], None]
    page_size: int = 1


class VideoCache:
    """One video's cluster cache: residency decisions, the copier, and the pool block it occupies."""

    __slots__ = ("residency", "engine", "block", "last_forward")

    def __init__(self, residency: ClusterResidency, engine: TransferEngine, block: Optional[torch.Tensor], forward: int):
        self.residency, self.engine, self.block, self.last_forward = residency, engine, block, forward


class ClusterCaches:
    """Per-video device cluster caches with a global cap (see module docstring).

    Args:
        store: the host store the caches copy from (layers, heads, dims, dtype).
        max_videos: caches that may exist at once.
        pool: the KV pool to allocate blocks from; None: private buffers.
    """

    def __init__(self, store: HostKVStore, *, max_videos: int, pool: Optional[DevicePool] = None) -> None:
        if not isinstance(max_videos, int) or max_videos < 1:
            raise ValueError(f"ClusterCaches: max_videos: expected an integer >= 1, got {max_videos!r}")
        self.store, self.max_videos, self.pool = store, max_videos, pool
        self._caches: Dict[int, VideoCache] = {}
        self._forward = 0
        self.unavailable = 0
        """Requests for a cache that got none (every cache busy in this forward, or no free pool block)."""

    @property
    def held_tokens(self) -> int:
        """Pool slots held by cache blocks (what the radix cache reports as protected)."""
        return sum(c.block.numel() for c in self._caches.values() if c.block is not None)

    def __contains__(self, key: int) -> bool:
        return key in self._caches

    def __len__(self) -> int:
        return len(self._caches)

    def begin_forward(self, keys: Sequence[int]) -> None:
        """A forward starts that may read videos ``keys`` (recency is counted in forwards)."""
        self._forward += 1
        for key in keys:
            cache = self._caches.get(key)
            if cache is not None:
                self._touch(cache)

    def get(self, key: int, capacity: int) -> Optional[VideoCache]:
        """Video ``key``'s cache, created with ``capacity`` slots per layer if new; None if none can be had."""
        cache = self._caches.get(key)
        if cache is not None:
            return cache
        if len(self._caches) >= self.max_videos and not self._evict_one():
            self.unavailable += 1
            return None
        store = self.store
        residency = ClusterResidency(capacity, num_layers=store.num_layers, bytes_per_token=store.bytes_per_token)
        if self.pool is None:
            shape = (store.num_layers, capacity, store.num_kv_heads)
            engine = TransferEngine(store, torch.zeros(shape + (store.head_dim,), dtype=store.dtype),
                                    torch.zeros(shape + (store.v_head_dim,), dtype=store.dtype))
            block = None
        else:
            page = self.pool.page_size
            block = self.pool.alloc(-(-capacity // page) * page)
            if block is None:
                self.unavailable += 1
                return None
            block = block.to(torch.int64)
            engine = TransferEngine(store, self.pool.k_layers, self.pool.v_layers, slot_map=block[:capacity])
        cache = self._caches[key] = VideoCache(residency, engine, block, self._forward - 1)
        self._touch(cache)
        return cache

    def stats(self, key: int):
        """Video ``key``'s `ResidencyStats`, or None without a cache."""
        cache = self._caches.get(key)
        return None if cache is None else cache.residency.stats

    def resident_tokens(self, key: int) -> int:
        """Tokens in video ``key``'s cache, largest over layers (0 without a cache)."""
        cache = self._caches.get(key)
        if cache is None:
            return 0
        return max(cache.residency.resident_tokens(layer) for layer in range(self.store.num_layers))

    def forget_extents(self, extents: Sequence[Extent]) -> None:
        """The host ``extents`` (virtual rows) are being freed: no cache may serve their old copies — any
        cached id inside one goes (the extent's start, or a sub-range of a per-layer order, `layer_orders.py`)
        — and no queued copy may still read them (one wait per cache, CUDA; nothing to wait for on CPU)."""
        if not extents:
            return
        for cache in self._caches.values():
            cache.residency.drop_ranges([(e.start, e.start + e.length) for e in extents])
            cache.engine.synchronize()

    def synchronize(self) -> None:
        """Block until every cache's queued copies finished (CUDA; nothing to wait for on CPU)."""
        for cache in self._caches.values():
            cache.engine.synchronize()

    def drop(self, key: int) -> None:
        """Drop video ``key``'s cache and give its block back to the pool."""
        cache = self._caches.pop(key, None)
        if cache is not None:
            self._release(cache)

    def clear(self) -> None:
        for key in list(self._caches):
            self.drop(key)

    def check_integrity(self) -> None:
        """Every cache's residency is consistent; blocks are disjoint and sized to their cache."""
        seen = set()
        for key, cache in self._caches.items():
            cache.residency.check_integrity()
            if cache.block is not None:
                slots = cache.block.tolist()
                assert len(slots) >= cache.residency.capacity, f"video {key}: block smaller than its cache"
                assert seen.isdisjoint(slots), f"video {key}: block overlaps another cache's block"
                seen.update(slots)
        assert len(self._caches) <= self.max_videos, f"{len(self._caches)} caches > cap {self.max_videos}"

    # -- internals --------------------------------------------------------------------------------

    def _touch(self, cache: VideoCache) -> None:
        if cache.last_forward != self._forward:
            cache.last_forward = self._forward
            cache.residency.begin_step()
            cache.engine.begin_step()

    def _evict_one(self) -> bool:
        idle = [(c.last_forward, k) for k, c in self._caches.items() if c.last_forward < self._forward]
        if not idle:
            return False
        self.drop(min(idle)[1])
        return True

    def _release(self, cache: VideoCache) -> None:
        cache.engine.synchronize()  # CUDA: no queued copy may still write into the block
        if cache.block is not None:
            self.pool.free(cache.block.to(self.pool.k_layers[0].device))
