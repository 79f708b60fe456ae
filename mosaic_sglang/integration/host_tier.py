"""The serving side of the host tier: clusters in a `HostKVStore`, one extent per offloaded cluster.

A cluster's tokens occupy one contiguous extent (same rows in every layer), so bringing it back is one
copy per layer. The radix tree may free an extent's tokens piecemeal (node eviction works on tree
nodes, a cluster can span several); each extent keeps a live-token count and is returned to the store
when the last of its tokens is released. `read` resolves host rows (decoded from negative tree/row
values) to K/V for one layer; every read is counted.
"""

from __future__ import annotations

from typing import Callable, List, Tuple

import os

import torch

from ..host_store import HostKVStore, HostStoreFullError
from ..residency import ClusterResidency, ResidencyOverflowError
from ..transfer_engine import TransferEngine

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
    """Host store plus extent bookkeeping for the mosaic serving path."""

    def __init__(self, store: HostKVStore) -> None:
        self.store = store
        self.debug = os.environ.get("MOSAIC_DEBUG", "") == "1"
        """``MOSAIC_DEBUG=1``: `check_integrity` after every change (tests, soak runs)."""
        self._extent_of = torch.full((store.capacity,), -1, dtype=torch.int64)  # host row -> extent start
        self._live: dict[int, list] = {}  # extent start -> [Extent, live tokens]
        self.overflow_reads = 0
        """Reads whose clusters exceeded the device cluster cache (served directly from the host tier)."""
        self.full_events = 0
        """Offloads cut short because the store was full (the clusters stayed on the device)."""
        self.copies = 0
        """Host → device copy operations (one per missed cluster extent per layer), prefetches included."""
        self.bytes_read = 0
        self.prefetch_copies = 0
        """Of ``copies``: cross-layer prefetches (layer l's clusters copied into layer l + 1's cache)."""
        self.prefetch_bytes = 0
        self._caches: dict[int, tuple[ClusterResidency, TransferEngine]] = {}  # video key -> cluster cache

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
        for start, count in zip(starts.tolist(), counts.tolist()):
            assert start >= 0, "release of a host row that belongs to no extent"
            entry = self._live[start]
            entry[1] -= count
            assert entry[1] >= 0, f"extent {start} released more tokens than it holds"
            if entry[1] == 0:
                for residency, engine in self._caches.values():
                    residency.drop([start])  # a later extent may reuse these rows: never serve stale copies
                    engine.synchronize()  # CUDA: no queued copy may still read the rows being freed
                self.store.free(entry[0])
                self._extent_of[start : start + entry[0].length] = -1
                del self._live[start]
        if self.debug:
            self.check_integrity()

    # -- device cluster caches (one per video, bounded, LRU; see `ClusterResidency`) ------------------

    def begin_step(self, key: int) -> None:
        """A forward starts that reads video ``key``'s clusters (recency is counted in forwards)."""
        cache = self._caches.get(key)
        if cache is not None:
            cache[0].begin_step()
            cache[1].begin_step()

    def read_cached(self, key: int, capacity: int, layer: int, host_rows: torch.Tensor, device, *,
                    prefetch_next: bool = False):
        """K/V of ``host_rows [n]`` at ``layer`` through video ``key``'s device cluster cache.

        The clusters (extents) the rows belong to are made resident in the cache (hits stay; misses are
        copied, one op per extent, evicting least recently used clusters of this video); the rows are then
        gathered from the cache. A selection larger than the cache falls back to a direct read.

        With ``prefetch_next``, the same clusters are then queued for layer ``layer + 1``'s cache
        (`ClusterResidency.prefetch`: free room and cold clusters only). On CUDA the copies run on the
        engine's side stream while this layer's attention computes; layer ``layer + 1``'s `wait` orders
        them. On CPU they run at once and are counted the same way.

        Returns:
            ``([n, H, D], [n, H, Dv])`` on ``device``.
        """
        cache = self._caches.get(key)
        if cache is None:
            bytes_per_token = self.store.bytes_per_token
            residency = ClusterResidency(capacity, num_layers=self.store.num_layers, bytes_per_token=bytes_per_token)
            shape = (self.store.num_layers, capacity, self.store.num_kv_heads)
            engine = TransferEngine(
                self.store,
                torch.zeros(shape + (self.store.head_dim,), dtype=self.store.dtype, device=device),
                torch.zeros(shape + (self.store.v_head_dim,), dtype=self.store.dtype, device=device),
            )
            cache = self._caches[key] = (residency, engine)
            residency.begin_step()
        residency, engine = cache
        starts = self._extent_of[host_rows]
        clusters, which = torch.unique(starts, return_inverse=True)
        extents = [self._live[int(c)][0] for c in clusters.tolist()]
        try:
            access = residency.access(layer, clusters.tolist(), extents)
        except ResidencyOverflowError:
            self.overflow_reads += 1
            return self.read(layer, host_rows, device)
        engine.submit(access.plan)
        engine.wait(layer)
        self.copies += access.plan.num_ops
        self.bytes_read += access.plan.num_bytes
        lengths = torch.tensor([e.length for e in extents], dtype=torch.int64)
        first = torch.cumsum(lengths, 0) - lengths  # where each cluster's members start in access.slots
        cache_slots = access.slots[first[which] + (host_rows - clusters[which])]
        cache_slots = cache_slots.to(engine.device_k.device)
        out = engine.device_k[layer][cache_slots], engine.device_v[layer][cache_slots]
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
        cache = self._caches.get(key)
        if cache is None:
            return 0
        return max(cache[0].resident_tokens(layer) for layer in range(self.store.num_layers))

    def cache_stats(self, key: int):
        """Video ``key``'s `ResidencyStats` (hits, misses, prefetch use), or None without a cache."""
        cache = self._caches.get(key)
        return None if cache is None else cache[0].stats

    def drop_cache(self, key: int) -> None:
        cache = self._caches.pop(key, None)
        if cache is not None:
            cache[1].synchronize()

    def clear(self) -> None:
        """Forget every extent (the radix cache was flushed: no tree value refers to host rows any more)."""
        for _, engine in self._caches.values():
            engine.synchronize()
        self._caches.clear()
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
        """Store consistent; every used host row belongs to exactly one live extent and vice versa."""
        self.store.check_integrity()
        held = sum(e.length for e, _ in self._live.values())
        assert held == self.store.num_used, f"extents hold {held} rows, store uses {self.store.num_used}"
        assert int((self._extent_of >= 0).sum()) == held, "extent map out of step with the live extents"
        assert all(0 < count <= e.length for e, count in self._live.values()), "extent live counts out of range"
        for residency, _ in self._caches.values():
            residency.check_integrity()
