"""The serving side of the host tier: clusters in a `HostKVStore`, one extent per offloaded cluster.

A cluster's tokens occupy one contiguous extent (same rows in every layer), so bringing it back is one
copy per layer. The radix tree may free an extent's tokens piecemeal (node eviction works on tree
nodes, a cluster can span several); each extent keeps a live-token count and is returned to the store
when the last of its tokens is released. `read` / `read_cached` resolve host rows (decoded from
negative tree/row values) to K/V for one layer and say what the read cost (`HostReadCounts`); the
caller adds that to its request's and the process's statistics (the tier keeps no counters).
"""

from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional, Tuple

import torch

from ..config import MOSAIC_DEBUG
from .checksums import ExtentChecksums

from .host_store import HostKVStore, HostStoreFullError
from .residency import ResidencyOverflowError
from .cluster_caches import ClusterCaches, DevicePool

__all__ = ["HostTier", "HostRead", "HostReadCounts", "encode_host", "decode_host"]


def encode_host(host_rows: torch.Tensor) -> torch.Tensor:
    """Host-store rows ``[n] int64 >= 0`` → tree/row values ``[n] int64 < 0`` (device slots are ``> 0``)."""
    return -(host_rows + 1)


def decode_host(values: torch.Tensor) -> torch.Tensor:
    """Tree/row values ``< 0`` → host-store rows."""
    return -values - 1

class HostReadCounts(NamedTuple):
    """What one host-tier read cost (all zero for a read that found everything resident).

    Attributes:
        copies: host → device copy operations (one per missed cluster extent per layer), prefetches included.
        copy_bytes: K+V bytes of those copies.
        prefetch_copies: of ``copies``, cross-layer prefetches (layer l's clusters into layer l + 1's cache).
        cache_lookups: clusters asked of a cluster cache at a layer >= 1 (layer 0 has no predecessor).
        cache_hits: of those, already resident (kept from earlier steps, or prefetched).
        overflow_reads: 1 if the read bypassed the cluster cache (selection larger than the cache, or no
            cache could be had), else 0.
    """

    copies: int = 0
    copy_bytes: int = 0
    prefetch_copies: int = 0
    cache_lookups: int = 0
    cache_hits: int = 0
    overflow_reads: int = 0


class HostRead(NamedTuple):
    """K/V of some host rows at one layer (``k [n, H, D]``, ``v [n, H, Dv]`` on the asked device) and its cost."""

    k: torch.Tensor
    v: torch.Tensor
    counts: HostReadCounts


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
        self.debug = MOSAIC_DEBUG.read()
        """``MOSAIC_DEBUG=1``: `check_integrity` after every change (tests, soak runs)."""
        self.caches = ClusterCaches(store, max_videos=max_cached_videos, pool=pool)
        self._extent_of = torch.full((store.capacity,), -1, dtype=torch.int64)  # host row -> extent start
        self._live: dict[int, list] = {}  # extent start -> [Extent, live tokens]
        self.checksums = ExtentChecksums() if self.debug else None
        """Debug only: digests of every live extent, verified on every read (`checksums.py`)."""

    @property
    def used_tokens(self) -> int:
        return self.store.num_used

    def put_clusters(self, read_kv: KVReader, slot_groups: List[torch.Tensor]) -> List[torch.Tensor]:
        """Copy each group of device slots (one cluster) into its own extent; returns host rows per group.

        Stops at the first group that does not fit (`HostStoreFullError`): the returned list is then
        shorter than ``slot_groups`` and the remaining clusters simply stay on the device (the caller
        counts that as a full event).
        """
        rows = []
        for slots in slot_groups:
            k, v = read_kv(slots)
            try:
                extent = self.store.put(k, v)
            except HostStoreFullError:
                break
            host = torch.arange(extent.start, extent.start + extent.length, dtype=torch.int64)
            self._extent_of[host] = extent.start
            self._live[extent.start] = [extent, extent.length]
            if self.checksums is not None:
                self.checksums.record(extent.start, k.to(self.store.k_buffer.dtype), v.to(self.store.v_buffer.dtype))
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
            if self.checksums is not None:
                self.checksums.forget(start)
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
            `HostRead`: ``k [n, H, D]``, ``v [n, H, Dv]`` on ``device`` and the read's `HostReadCounts`.
        """
        cache = self.caches.get(key, capacity)
        if cache is None:
            return self._overflow(layer, host_rows, device)
        residency, engine = cache.residency, cache.engine
        starts = self._extent_of[host_rows]
        clusters, which = torch.unique(starts, return_inverse=True)
        ids = clusters.tolist()
        extents = [self._live[c][0] for c in ids]
        try:
            access = residency.access(layer, ids, extents)
        except ResidencyOverflowError:
            return self._overflow(layer, host_rows, device)
        engine.submit(access.plan)
        engine.wait(layer)
        lengths = torch.tensor([e.length for e in extents], dtype=torch.int64)
        first = torch.cumsum(lengths, 0) - lengths  # where each cluster's members start in access.slots
        rows = engine.rows(access.slots[first[which] + (host_rows - clusters[which])])
        k, v = engine.device_k[layer][rows].to(device), engine.device_v[layer][rows].to(device)
        copies, copy_bytes, prefetched = access.plan.num_ops, access.plan.num_bytes, 0
        if prefetch_next and layer + 1 < self.store.num_layers:
            plan = residency.prefetch(layer + 1, ids, extents)
            engine.submit(plan)
            copies, copy_bytes, prefetched = copies + plan.num_ops, copy_bytes + plan.num_bytes, plan.num_ops
        if self.debug:
            residency.check_integrity()
            self._verify_cached(engine, layer, extents, access.slots, lengths)
        asked = len(ids) if layer >= 1 else 0  # the residency's prefetch hit-rate rule: layers >= 1
        hits = int(access.hits.numel()) if layer >= 1 else 0
        return HostRead(k, v, HostReadCounts(copies, copy_bytes, prefetched, asked, hits, 0))

    def _verify_cached(self, engine, layer: int, extents, slots: torch.Tensor, lengths: torch.Tensor) -> None:
        """Debug: every cluster this read touched, as it sits in the device cache, matches its checksum."""
        for extent, members in zip(extents, torch.split(slots, lengths.tolist())):
            rows = engine.rows(members)
            self.checksums.verify(extent.start, layer, engine.device_k[layer][rows], engine.device_v[layer][rows],
                                  where="the device cluster cache")

    def _overflow(self, layer: int, host_rows: torch.Tensor, device) -> HostRead:
        k, v, counts = self.read(layer, host_rows, device)
        return HostRead(k, v, counts._replace(overflow_reads=1))

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
        if self.checksums is not None:
            self.checksums.clear()

    def read(self, layer: int, host_rows: torch.Tensor, device) -> HostRead:
        """K/V of ``host_rows [n]`` at ``layer`` straight from the host store (no cluster cache): one copy
        per extent touched."""
        starts = torch.unique(self._extent_of[host_rows])
        if self.checksums is not None:
            for start in starts.tolist():
                self.checksums.verify(start, layer, *self.store.extent_view(self._live[start][0], layer),
                                      where="the host store")
        k = self.store.k_buffer[layer][host_rows].to(device, non_blocking=True)
        v = self.store.v_buffer[layer][host_rows].to(device, non_blocking=True)
        nbytes = k.numel() * k.element_size() + v.numel() * v.element_size()
        return HostRead(k, v, HostReadCounts(copies=int(starts.numel()), copy_bytes=nbytes))

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
        if self.checksums is not None:
            assert len(self.checksums) == len(self._live), "a live extent without a checksum (or a stale one)"
        self.caches.check_integrity()
