"""The serving side of the host tier: clusters in a `HostKVStore`, one extent per offloaded cluster.

A cluster's tokens occupy one contiguous extent (same rows in every layer), so bringing it back is one
copy per layer. The radix tree may free an extent's tokens piecemeal (node eviction works on tree
nodes, a cluster can span several); each extent keeps a live-token count and is returned to the store
when the last of its tokens is released. `read` resolves host rows (decoded from negative tree/row
values) to K/V for one layer; every read is counted.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import os

import torch

from ..host_store import HostKVStore, HostStoreFullError
from ..residency import ResidencyOverflowError
from .cluster_caches import ClusterCaches, DevicePool

__all__ = ["HostTier", "encode_host", "decode_host"]


def encode_host(host_rows: torch.Tensor) -> torch.Tensor:
    """Host-store rows ``[n] int64 >= 0`` → tree/row values ``[n] int64 < 0`` (device slots are ``> 0``)."""
    return -(host_rows + 1)


def decode_host(values: torch.Tensor) -> torch.Tensor:
    """Tree/row values ``< 0`` → host-store rows."""
    return -values - 1

KVReader = Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]
"""``read(slots [M] int64) -> (k [L, M, H, D], v [L, M, H, Dv])`` from the device pool."""


class HostTier:
    """Host store plus extent bookkeeping for the mosaic serving path.

    Args:
        store: the host store.
        max_cached_videos: device cluster caches that may exist at once (`ClusterCaches`).
        pool: SGLang's KV pool to place those caches in; None: private buffers (offline, tests).
    """

    def __init__(self, store: HostKVStore, *, max_cached_videos: int = 4, pool: Optional[DevicePool] = None) -> None:
        self.store = store
        self.debug = os.environ.get("MOSAIC_DEBUG", "") == "1"
        """``MOSAIC_DEBUG=1``: `check_integrity` after every change (tests, soak runs)."""
        self.caches = ClusterCaches(store, max_videos=max_cached_videos, pool=pool)
        self._extent_of = torch.full((store.capacity,), -1, dtype=torch.int64)  # host row -> extent start
        self._live: dict[int, list] = {}  # extent start -> [Extent, live tokens]
        self.overflow_reads = 0
        """Reads served straight from the host tier: the selection exceeded the cluster cache, or no
        cache could be had (see `ClusterCaches.unavailable`)."""
        self.full_events = 0
        """Offloads cut short because the store was full (the clusters stayed on the device)."""
        self.copies = 0
        """Host → device copy operations (one per missed cluster extent per layer), prefetches included."""
        self.bytes_read = 0
        self.prefetch_copies = 0
        """Of ``copies``: cross-layer prefetches (layer l's clusters copied into layer l + 1's cache)."""
        self.prefetch_bytes = 0
        self.cache_lookups = 0
        """Clusters asked of a cluster cache at layers >= 1 (running total over every video's cache)."""
        self.cache_hits = 0
        """Of those, already resident (kept from earlier steps, or prefetched)."""

    @property
    def used_tokens(self) -> int:
        return self.store.num_used

    def put_clusters(self, read_kv: KVReader, slot_groups: List[torch.Tensor]) -> List[torch.Tensor]:
        """Copy each group of device slots (one cluster) into its own extent; returns host rows per group.

        Stops at the first group that does not fit (`HostStoreFullError`): the returned list is then
        shorter than ``slot_groups`` and the remaining clusters simply stay on the device.
        """
        rows = []
        for slots in slot_groups:
            k, v = read_kv(slots)
            try:
                extent = self.store.put(k, v)
            except HostStoreFullError:
                self.full_events += 1
                break
            host = torch.arange(extent.start, extent.start + extent.length, dtype=torch.int64)
            self._extent_of[host] = extent.start
            self._live[extent.start] = [extent, extent.length]
            rows.append(host)
        if self.debug:
            self.check_integrity()
        return rows

    def release(self, host_rows: torch.Tensor) -> None:
        """The tree dropped these host rows; free extents with no live token left."""
        if host_rows.numel() == 0:
            return
        starts, counts = torch.unique(self._extent_of[host_rows], return_counts=True)
        emptied = []
        for start, count in zip(starts.tolist(), counts.tolist()):
            assert start >= 0, "release of a host row that belongs to no extent"
            entry = self._live[start]
            entry[1] -= count
            assert entry[1] >= 0, f"extent {start} released more tokens than it holds"
            if entry[1] == 0:
                emptied.append(start)
        self.caches.forget_extents(emptied)  # a later extent may reuse these rows: never serve stale copies
        for start in emptied:
            extent = self._live.pop(start)[0]
            self.store.free(extent)
            self._extent_of[start : start + extent.length] = -1
        if self.debug:
            self.check_integrity()

    # -- device cluster caches (bounded per video, capped across videos; see `ClusterCaches`) ------

    def begin_forward(self, keys) -> None:
        """A forward starts that reads videos ``keys``' clusters (recency is counted in forwards)."""
        self.caches.begin_forward(list(keys))

    def read_cached(self, key: int, capacity: int, layer: int, host_rows: torch.Tensor, device, *,
                    prefetch_next: bool = False):
        """K/V of ``host_rows [n]`` at ``layer`` through video ``key``'s device cluster cache.

        The clusters (extents) the rows belong to are made resident in the cache (hits stay; misses are
        copied, one op per extent, evicting least recently used clusters of this video); the rows are then
        gathered from the cache. A selection larger than the cache, or a video that gets no cache, is
        read directly from the host tier (``overflow_reads``).

        With ``prefetch_next``, the same clusters are then queued for layer ``layer + 1``'s cache
        (`ClusterResidency.prefetch`: free room and cold clusters only). On CUDA the copies run on the
        engine's side stream while this layer's attention computes; layer ``layer + 1``'s `wait` orders
        them. On CPU they run at once and are counted the same way.

        Returns:
            ``([n, H, D], [n, H, Dv])`` on ``device``.
        """
        cache = self.caches.get(key, capacity)
        if cache is None:
            self.overflow_reads += 1
            return self.read(layer, host_rows, device)
        residency, engine = cache.residency, cache.engine
        starts = self._extent_of[host_rows]
        clusters, which = torch.unique(starts, return_inverse=True)
        extents = [self._live[int(c)][0] for c in clusters.tolist()]
        stats = residency.stats
        asked, hit = stats.predicted_selected, stats.predicted_hits
        try:
            access = residency.access(layer, clusters.tolist(), extents)
        except ResidencyOverflowError:
            self.overflow_reads += 1
            return self.read(layer, host_rows, device)
        self.cache_lookups += stats.predicted_selected - asked
        self.cache_hits += stats.predicted_hits - hit
        engine.submit(access.plan)
        engine.wait(layer)
        self.copies += access.plan.num_ops
        self.bytes_read += access.plan.num_bytes
        lengths = torch.tensor([e.length for e in extents], dtype=torch.int64)
        first = torch.cumsum(lengths, 0) - lengths  # where each cluster's members start in access.slots
        rows = engine.rows(access.slots[first[which] + (host_rows - clusters[which])])
        out = engine.device_k[layer][rows].to(device), engine.device_v[layer][rows].to(device)
        if prefetch_next and layer + 1 < self.store.num_layers:
            plan = residency.prefetch(layer + 1, clusters.tolist(), extents)
            engine.submit(plan)
            self.copies += plan.num_ops
            self.bytes_read += plan.num_bytes
            self.prefetch_copies += plan.num_ops
            self.prefetch_bytes += plan.num_bytes
        if self.debug:
            residency.check_integrity()
        return out

    def resident_tokens(self, key: int) -> int:
        """Tokens in video ``key``'s cluster cache, largest over layers (0 without a cache)."""
        return self.caches.resident_tokens(key)

    def cache_stats(self, key: int):
        """Video ``key``'s `ResidencyStats` (hits, misses, prefetch use), or None without a cache."""
        return self.caches.stats(key)

    def drop_cache(self, key: int) -> None:
        """Video ``key``'s prefix left the tree: its cluster cache (and pool block) goes."""
        self.caches.drop(key)

    def clear(self) -> None:
        """Forget every extent and cache (the radix cache was flushed: no tree value refers to host rows)."""
        self.caches.clear()
        self.store.clear()
        self._extent_of.fill_(-1)
        self._live.clear()

    def read(self, layer: int, host_rows: torch.Tensor, device) -> Tuple[torch.Tensor, torch.Tensor]:
        """K/V of ``host_rows [n]`` at ``layer``: ``([n, H, D], [n, Hv, Dv])`` on ``device``."""
        starts = torch.unique(self._extent_of[host_rows])
        self.copies += int(starts.numel())
        k = self.store.k_buffer[layer][host_rows].to(device, non_blocking=True)
        v = self.store.v_buffer[layer][host_rows].to(device, non_blocking=True)
        self.bytes_read += k.numel() * k.element_size() + v.numel() * v.element_size()
        return k, v

    def read_keys(self, host_rows: torch.Tensor) -> torch.Tensor:
        """``[L, n, H, D]`` keys of all layers (index maintenance)."""
        return self.store.k_buffer[:, host_rows]

    def check_integrity(self) -> None:
        """Store consistent; every used host row belongs to exactly one live extent and vice versa;
        cluster caches consistent."""
        self.store.check_integrity()
        held = sum(e.length for e, _ in self._live.values())
        assert held == self.store.num_used, f"extents hold {held} rows, store uses {self.store.num_used}"
        assert int((self._extent_of >= 0).sum()) == held, "extent map out of step with the live extents"
        assert all(0 < count <= e.length for e, count in self._live.values()), "extent live counts out of range"
        self.caches.check_integrity()
