"""The serving side of the host tier: clusters in a `HostKVStore`, one extent per offloaded cluster,
and, when a `SpillTier` is given, extents spilled below it.

A cluster's tokens occupy one contiguous extent (same rows in every layer), so bringing it back is one
copy per layer. With one membership per layer (`layer_orders`), an extent holds a group of positions no
layer's cluster crosses, each layer's plane in that layer's cluster order: a layer's cluster is one
contiguous sub-range, one copy. The radix tree may free an extent's tokens piecemeal (node eviction works on tree
nodes, a cluster can span several); each extent keeps a live-token count and is returned when the last
of its tokens is released. `read` / `read_cached` resolve host rows (decoded from negative tree/row
values) to K/V for one layer and say what the read cost (`HostReadCounts`); the caller adds that to its
request's and the process's statistics.

Host rows are **virtual**: the tree and the live ``req_to_token`` rows hold rows of the tier's own row
space (``host_store_tokens + spill_tokens`` rows), and each extent there is, at any time, either placed
in the host store (a physical extent of the same length; ``_shift`` maps its rows) or spilled (a blob
in the spill tier). Spilling and loading move an extent between the two without touching the tree.
Without a spill tier both row spaces see the same allocations, so virtual and physical rows coincide.

Spill policy: when an offload (`put_clusters`) or a load finds no host extent of the size it needs, the
placed extents read least recently (by forward; never one the current read needs) are spilled until
one fits. A read of a spilled cluster loads it back first (`HostReadCounts.spill_loads`); a read that
cannot place everything it needs (it needs more rows than the store frees) reads the blobs directly
(counted as loads too). Protection lasts one read: two requests of one forward whose clusters do not
fit together can spill each other's (correct, but each costs a blob read).
"""

from __future__ import annotations

from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch

from ..config import MOSAIC_DEBUG
from .checksums import ExtentChecksums, OffloadCorruptionError
from .cluster_caches import ClusterCaches, DevicePool
from .extents import Extent, ExtentAllocator
from .host_store import HostKVStore
from .layer_orders import LayerOrders, extent_order
from .residency import ResidencyOverflowError
from .spill_tier import SpillTier

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
        spill_loads: spilled extents this read loaded back from the spill tier (one backend read each).
        spill_load_bytes: bytes of those blobs (all layers).
    """

    copies: int = 0
    copy_bytes: int = 0
    prefetch_copies: int = 0
    cache_lookups: int = 0
    cache_hits: int = 0
    overflow_reads: int = 0
    spill_loads: int = 0
    spill_load_bytes: int = 0


class HostRead(NamedTuple):
    """K/V of some host rows at one layer (``k [n, H, D]``, ``v [n, H, Dv]`` on the asked device) and its cost."""

    k: torch.Tensor
    v: torch.Tensor
    counts: HostReadCounts


KVReader = Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]
"""``read(slots [M] int64) -> (k [L, M, H, D], v [L, M, H, Dv])`` from the device pool."""


_UNPLACED = -(1 << 50)  # `_shift` of a spilled extent's rows: using it as a row index fails loudly


class _Held:
    """One live extent of the virtual row space: where it is and how many of its tokens are live."""

    __slots__ = ("rows", "live", "placed", "key")

    def __init__(self, rows: Extent, placed: Extent) -> None:
        self.rows, self.live, self.placed, self.key = rows, rows.length, placed, None

    @property
    def spilled(self) -> bool:
        return self.placed is None


class HostTier:
    """Host store (and optional spill tier) plus extent bookkeeping for the mosaic serving path.

    Args:
        store: the host store.
        max_cached_videos: device cluster caches that may exist at once (`ClusterCaches`).
        pool: SGLang's KV pool to place those caches in; None: private buffers (offline, tests).
        spill: the spill tier below the store; None: a full store leaves clusters on the device.
        spill_tokens: rows beyond the store's capacity that spilled extents may hold (>= 1 with ``spill``).
        layer_orders: every extent gets a row order per layer (`layer_orders.py`: one cluster membership per
            layer); `put_clusters` then takes each group's clusters per layer.
    """

    def __init__(self, store: HostKVStore, *, max_cached_videos: int = 4, pool: Optional[DevicePool] = None,
                 spill: Optional[SpillTier] = None, spill_tokens: int = 0, layer_orders: bool = False) -> None:
        if spill is not None and (not isinstance(spill_tokens, int) or spill_tokens < 1):
            raise ValueError(f"HostTier: spill_tokens: expected an integer >= 1 with a spill tier, got {spill_tokens!r}")
        self.store = store
        self.spill = spill
        self.debug = MOSAIC_DEBUG.read()
        """``MOSAIC_DEBUG=1``: `check_integrity` after every change (tests, soak runs)."""
        self.caches = ClusterCaches(store, max_videos=max_cached_videos, pool=pool)
        capacity = store.capacity + (spill_tokens if spill is not None else 0)
        self.rows = ExtentAllocator(capacity)
        """The virtual row space (what tree values encode)."""
        self._extent_of = torch.full((capacity,), -1, dtype=torch.int64)  # virtual row -> its extent's start
        self._shift = torch.zeros(capacity, dtype=torch.int64)  # physical row - virtual row (placed rows)
        self._spilled = torch.zeros(capacity, dtype=torch.bool)  # by extent start: spilled now
        self._provisional = torch.zeros(capacity, dtype=torch.bool)  # by extent start: laid out before its clusters settled
        self._last_read = torch.zeros(capacity, dtype=torch.int64)  # by extent start: forward of its last read
        self._held: Dict[int, _Held] = {}  # extent start -> its state
        self._forward = 0
        self.checksums = ExtentChecksums() if self.debug else None
        """Debug only: digests of every live extent, verified on every read (`checksums.py`)."""
        self.orders = LayerOrders(store.num_layers, capacity) if layer_orders else None
        """Per-layer row orders inside extents (None: every layer's rows in the group's order)."""

    @property
    def used_tokens(self) -> int:
        """Rows in use in the host store (placed extents)."""
        return self.store.num_used

    @property
    def live_rows(self) -> int:
        """Host rows some tree position still holds (placed or spilled): what the radix tree's values must
        encode, one row per position (`integration/host_row_check.py` compares the two at idle)."""
        return sum(held.live for held in self._held.values())

    @property
    def spilled_tokens(self) -> int:
        """Tokens of live extents that are spilled now."""
        return self.rows.num_used - self.store.num_used

    def put_clusters(self, read_kv: KVReader, slot_groups: List[torch.Tensor],
                     layer_clusters: Optional[List[torch.Tensor]] = None, *, provisional: bool = False,
                     sources: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        """Copy each group of device slots (one cluster; with per-layer orders, a group no layer's cluster
        crosses) into its own extent; returns host rows per group.

        ``provisional``: the groups' clusters may still be regrouped; their extents are marked
        (`provisional_rows`) so that they can be laid out again once settled (`read_rows` reads them back).
        ``sources``: ``[n] int64`` host rows ``read_kv`` reads (a relayout): their extents are spilled to make
        room only when nothing else can be.

        With `orders` (per-layer memberships) ``layer_clusters`` gives each group's ``[L, M]`` cluster ids
        per layer (members in the group's order): each layer's plane is written in its own cluster order.

        With a spill tier, cold placed extents are spilled to make room. Stops at the first group that
        does not fit: the returned list is then shorter than ``slot_groups`` and the remaining clusters
        simply stay on the device (the caller counts that as a full event).
        """
        if (self.orders is None) != (layer_clusters is None):
            raise ValueError("HostTier.put_clusters: layer_clusters: expected them exactly when the tier keeps "
                             f"per-layer orders ({self.orders is not None}), got {layer_clusters is not None}")
        rows, victims = [], []
        protect = set(torch.unique(self._extent_of[sources]).tolist()) if sources is not None and sources.numel() else ()
        for i, slots in enumerate(slot_groups):
            length = int(slots.numel())
            layout = extent_order(layer_clusters[i].cpu()) if layer_clusters is not None else None
            if self.rows.num_free < length:  # (the row space's own check below; nothing read for a group that cannot fit)
                break
            # read before any row is taken: a relayout's reader reads this tier (and may place spilled extents)
            k, v = read_kv(slots)
            virtual = self.rows.allocate(length)
            if virtual is None:
                break
            placed = None
            try:
                placed = self.store.rows.allocate(length)
                if placed is None and self.spill is not None:
                    placed = self._make_room(length, victims, protect)  # may raise (a refused write under TP)
                    if placed is None and protect:  # the sources too, as a last resort (read back from the spill)
                        placed = self._make_room(length, [], ())
                if placed is None:
                    self.rows.free(virtual)
                    break
                if layout is not None:  # each layer's plane in its own cluster order
                    k, v = layout.permute(k), layout.permute(v)
                self.store.write(placed, k, v)
            except BaseException:  # nothing of this cluster is held: give its extents back
                if placed is not None:
                    self.store.free(placed)
                self.rows.free(virtual)
                raise
            self._hold(virtual, placed)
            self._provisional[virtual.start] = provisional
            if layout is not None:
                self.orders.hold(virtual.start, layout)
            if self.checksums is not None:
                self.checksums.record(virtual.start, k.to(self.store.k_buffer.dtype), v.to(self.store.v_buffer.dtype))
            rows.append(torch.arange(virtual.start, virtual.start + length, dtype=torch.int64))
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
            held = self._held[start]
            held.live -= count
            assert held.live >= 0, f"extent {start} released more tokens than it holds"
            if held.live == 0:
                emptied.append(start)
        self.caches.forget_extents([self._held[s].rows for s in emptied])  # their rows may be reused: no stale copies
        for start in emptied:
            held = self._held.pop(start)
            if self.checksums is not None:
                self.checksums.forget(start)
            if held.placed is not None:
                self.store.free(held.placed)
                held.placed = None
            if held.key is not None:
                self.spill.forget(held.key, held.rows.length)
                held.key = None
            self.rows.free(held.rows)
            self._extent_of[start : start + held.rows.length] = -1
            self._spilled[start] = False
            self._provisional[start] = False
        if self.debug:
            self.check_integrity()

    # -- device cluster caches (bounded per video, capped across videos; see `ClusterCaches`) ------

    def begin_forward(self, keys) -> None:
        """A forward starts that reads videos ``keys``' clusters (recency is counted in forwards)."""
        self._forward += 1
        self.caches.begin_forward(list(keys))

    def read_cached(self, key: int, capacity: int, layer: int, host_rows: torch.Tensor, device, *,
                    prefetch_next: bool = False):
        """K/V of ``host_rows [n]`` at ``layer`` through video ``key``'s device cluster cache.

        The clusters (extents) the rows belong to are made resident in the cache (hits stay; misses are
        copied, one op per extent, evicting least recently used clusters of this video); the rows are then
        gathered from the cache. A selection larger than the cache, or a video that gets no cache, is
        read directly from the host tier (``overflow_reads``). Spilled clusters are loaded back into
        the host store first (hits included: their blob is read once, then they are placed again).

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
        if self.orders is None:  # a cluster is its extent, the same rows in every layer
            clusters, which = torch.unique(starts, return_inverse=True)
            offset, sub, sub_len = host_rows - clusters[which], None, None
            loads, load_bytes, complete = self._place_for_read(clusters)
        else:  # a cluster of this layer is a sub-range of its extent's plane (`layer_orders.py`)
            clusters, which, offset, sub, sub_len = self.orders.sub_ranges(layer, host_rows, starts)
            loads, load_bytes, complete = self._place_for_read(torch.unique(clusters - sub))
        ids = clusters.tolist()
        try:
            if not complete:  # more spilled clusters than the store could take: read around the cache
                raise ResidencyOverflowError
            if sub is None:
                extents = [self._held[c].placed for c in ids]
            else:
                extents = [Extent(self._held[c - o].placed.start + o, n)
                           for c, o, n in zip(ids, sub.tolist(), sub_len.tolist())]
            access = residency.access(layer, ids, extents)
        except ResidencyOverflowError:
            k, v, counts = self._overflow(layer, host_rows, device)
            return HostRead(k, v, counts._replace(spill_loads=counts.spill_loads + loads,
                                                  spill_load_bytes=counts.spill_load_bytes + load_bytes))
        engine.submit(access.plan)
        engine.wait(layer)
        lengths = torch.tensor([e.length for e in extents], dtype=torch.int64)
        first = torch.cumsum(lengths, 0) - lengths  # where each cluster's members start in access.slots
        rows = engine.rows(access.slots[first[which] + offset])
        k, v = engine.device_k[layer][rows].to(device), engine.device_v[layer][rows].to(device)
        copies, copy_bytes, prefetched = access.plan.num_ops, access.plan.num_bytes, 0
        if prefetch_next and layer + 1 < self.store.num_layers and self.orders is None:  # layers' clusters differ
            plan = residency.prefetch(layer + 1, ids, extents)
            engine.submit(plan)
            copies, copy_bytes, prefetched = copies + plan.num_ops, copy_bytes + plan.num_bytes, plan.num_ops
        if self.debug:
            residency.check_integrity()
            self._verify_cached(engine, layer, ids, access.slots, lengths, extents)
        asked = len(ids) if layer >= 1 else 0  # the residency's prefetch hit-rate rule: layers >= 1
        hits = int(access.hits.numel()) if layer >= 1 else 0
        return HostRead(k, v, HostReadCounts(copies, copy_bytes, prefetched, asked, hits, 0, loads, load_bytes))

    def _verify_cached(self, engine, layer: int, ids: Sequence[int], slots: torch.Tensor, lengths: torch.Tensor,
                       extents: Sequence[Extent]) -> None:
        """Debug: every cluster this read touched, as it sits in the device cache, matches its checksum (a
        sub-range of a per-layer order: the host store's rows, whose extent plane is checked against its
        checksum here too)."""
        if self.orders is not None:
            for start in sorted({int(self._extent_of[i]) for i in ids}):
                held = self._held[start]
                self.checksums.verify(start, layer, *self.store.extent_view(held.placed, layer), where="the host store")
        for start, members, extent in zip(ids, torch.split(slots, lengths.tolist()), extents):
            rows = engine.rows(members)
            k, v = engine.device_k[layer][rows], engine.device_v[layer][rows]
            if self.orders is None:
                self.checksums.verify(start, layer, k, v, where="the device cluster cache")
                continue
            hk, hv = self.store.extent_view(extent, layer)
            if not (torch.equal(k.cpu(), hk.to(k.dtype)) and torch.equal(v.cpu(), hv.to(v.dtype))):
                raise OffloadCorruptionError(f"host extent {int(self._extent_of[start])} layer {layer}: sub-range {start} "
                                             "in the device cluster cache differs from the host store")

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
        for held in self._held.values():
            self.rows.free(held.rows)
        self._held.clear()
        self._extent_of.fill_(-1)
        self._spilled.fill_(False)
        self._provisional.fill_(False)
        if self.spill is not None:
            self.spill.clear()
        if self.checksums is not None:
            self.checksums.clear()

    def read(self, layer: int, host_rows: torch.Tensor, device) -> HostRead:
        """K/V of ``host_rows [n]`` at ``layer`` straight from the host tier (no cluster cache): one copy
        per extent touched."""
        starts = torch.unique(self._extent_of[host_rows])
        loads, load_bytes, complete = self._place_for_read(starts)
        if self.checksums is not None:
            for start in starts.tolist():
                held = self._held[start]
                if held.placed is not None:
                    self.checksums.verify(start, layer, *self.store.extent_view(held.placed, layer), where="the host store")
        if complete:
            physical = self._physical(host_rows, layer)
            k = self.store.k_buffer[layer][physical].to(device, non_blocking=True)
            v = self.store.v_buffer[layer][physical].to(device, non_blocking=True)
        else:
            k, v, blobs, extra = self._gather_unplaced(host_rows, starts, layer)
            k, v, loads, load_bytes = k.to(device), v.to(device), loads + blobs, load_bytes + extra
        nbytes = k.numel() * k.element_size() + v.numel() * v.element_size()
        if self.orders is not None:  # one copy per sub-range (a cluster of this layer) touched
            starts = self.orders.sub_ranges(layer, host_rows, self._extent_of[host_rows])[0]
        return HostRead(k, v, HostReadCounts(copies=int(starts.numel()), copy_bytes=nbytes, spill_loads=loads,
                                             spill_load_bytes=load_bytes))

    def read_keys(self, host_rows: torch.Tensor, layer: Optional[int] = None) -> torch.Tensor:
        """``[L, n, H, D]`` keys of all layers (index maintenance), or ``[n, H, D]`` of ``layer`` (a selection's
        always part)."""
        starts = torch.unique(self._extent_of[host_rows])
        _, _, complete = self._place_for_read(starts)
        if not complete:
            return self._gather_unplaced(host_rows, starts, layer)[0]
        if layer is not None:
            return self.store.k_buffer[layer, self._physical(host_rows, layer)]
        if self.orders is None:
            return self.store.k_buffer[:, self._physical(host_rows)]
        return torch.stack([self.store.k_buffer[i, self._physical(host_rows, i)]  # each layer in its own order
                            for i in range(self.store.num_layers)])

    def read_rows(self, host_rows: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(k [L, n, H, D], v [L, n, H, Dv])`` of ``host_rows [n] int64``, every layer in the rows' order: a
        `KVReader` over host rows, to lay provisional extents out again (`put_clusters`)."""
        starts = torch.unique(self._extent_of[host_rows])
        _, _, complete = self._place_for_read(starts)
        layers = range(self.store.num_layers)
        if self.checksums is not None:  # debug: what is copied on must still be what was written
            for start in starts.tolist():
                held = self._held[start]
                if held.placed is not None:
                    for layer in layers:
                        self.checksums.verify(start, layer, *self.store.extent_view(held.placed, layer), where="the host store")
        if not complete:
            return self._gather_unplaced(host_rows, starts, None)[:2]
        return (torch.stack([self.store.k_buffer[i, self._physical(host_rows, i)] for i in layers]),
                torch.stack([self.store.v_buffer[i, self._physical(host_rows, i)] for i in layers]))

    def provisional_rows(self, host_rows: torch.Tensor) -> torch.Tensor:
        """``[n] bool``: each of ``host_rows [n] int64`` lies in an extent written ``provisional``."""
        starts = self._extent_of[host_rows]
        return (starts >= 0) & self._provisional[starts.clamp(min=0)]

    # -- placement of extents in the host store (spill tier) ---------------------------------------

    def _hold(self, virtual: Extent, placed: Extent) -> None:
        start, length = virtual
        self._extent_of[start : start + length] = start
        self._shift[start : start + length] = placed.start - start
        self._last_read[start] = self._forward
        self._held[start] = _Held(virtual, placed)

    def _physical(self, host_rows: torch.Tensor, layer: Optional[int] = None) -> torch.Tensor:
        """Host-store rows of virtual rows whose extents are all placed (the same rows without a spill tier); with
        per-layer orders, those of ``layer``'s plane."""
        rows = host_rows if self.spill is None else host_rows + self._shift[host_rows]
        if self.orders is None:
            return rows
        starts = self._extent_of[host_rows]
        return rows - host_rows + self.orders.physical(layer, host_rows, starts)

    def _coldest(self, protect) -> List[_Held]:
        """Placed extents, coldest last (least recently read; ties: lower row), except ``protect``: a
        stack to pop victims from."""
        placed = [h for s, h in self._held.items() if h.placed is not None and s not in protect]
        placed.sort(key=lambda h: (int(self._last_read[h.rows.start]), h.rows.start), reverse=True)
        return placed

    def _make_room(self, length: int, victims: List[_Held], protect=()) -> Optional[Extent]:
        """Spill victims (popped from ``victims``, refilled once it runs dry, never one in ``protect``)
        until a host extent of ``length`` rows can be allocated; the extent, or None when nothing placed
        is left to spill (or the backend refused a write)."""
        refilled = False
        while True:
            placed = self.store.rows.allocate(length)
            if placed is not None:
                return placed
            if not victims and not refilled:  # extents placed since the list was made may go too
                victims.extend(self._coldest(protect))
                refilled = True
            while victims and victims[-1].placed is None:  # spilled meanwhile, or released
                victims.pop()
            if not victims or not self._spill_one(victims.pop()):
                return None

    def _spill_one(self, held: _Held) -> bool:
        if held.key is None:
            held.key = self.spill.write(held.placed)
            if held.key is None:
                return False
        start, length = held.rows
        # CUDA: no queued copy on a cache's side stream may still read the rows about to be reused (a direct
        # `read` gathers its rows into a new host tensor first, so it holds no reference to them)
        self.caches.synchronize()
        self.store.free(held.placed)
        held.placed = None
        self._shift[start : start + length] = _UNPLACED
        self._spilled[start] = True
        self.spill.spilled(length)
        return True

    def _place_for_read(self, starts: torch.Tensor) -> Tuple[int, int, bool]:
        """Load the spilled extents among ``starts [m]`` back into the host store and mark all of them
        read in this forward. Returns ``(extents loaded, blob bytes read, every extent placed)``."""
        if self.spill is None:  # nothing is ever spilled: no recency to keep
            return 0, 0, True
        self._last_read[starts] = self._forward
        if not bool(self._spilled[starts].any()):
            return 0, 0, True
        protect = set(starts.tolist())
        victims: List[_Held] = []
        loads = load_bytes = 0
        for start in starts[self._spilled[starts]].tolist():
            held = self._held[start]
            placed = self._make_room(held.rows.length, victims, protect)
            if placed is None:
                return loads, load_bytes, False
            before = self.spill.stats.loaded_bytes
            try:
                self.spill.load(held.key, placed)
            except BaseException:  # the extent stays spilled; its host rows go back
                self.store.free(placed)
                raise
            loads, load_bytes = loads + 1, load_bytes + self.spill.stats.loaded_bytes - before
            held.placed = placed
            self._shift[start : start + held.rows.length] = placed.start - start
            self._spilled[start] = False
            if self.checksums is not None:
                for layer in range(self.store.num_layers):
                    self.checksums.verify(start, layer, *self.store.extent_view(placed, layer), where="the spill tier")
        if self.debug:
            self.check_integrity()
        return loads, load_bytes, True

    def _gather_unplaced(self, host_rows: torch.Tensor, starts: torch.Tensor, layer: Optional[int]):
        """K/V of ``host_rows`` when some of their extents could not be placed: placed ones from the store,
        the others from their blobs (each read once). ``layer`` None: all layers (``[L, n, ...]``). Returns
        ``(k, v, blobs read, their bytes)``."""
        store = self.store
        layers = list(range(store.num_layers)) if layer is None else [layer]
        shape = (len(layers), host_rows.numel()) + tuple(store.k_buffer.shape[2:])
        k = store.k_buffer.new_empty(shape)
        v = store.v_buffer.new_empty(shape[:-1] + (store.v_head_dim,))
        of = self._extent_of[host_rows]
        spilled = self._spilled[of]
        here = host_rows[~spilled]
        for i, lay in enumerate(layers):  # a spill tier exists here: rows shift with their extents' placement
            physical = self._physical(here, lay)
            k[i, ~spilled], v[i, ~spilled] = store.k_buffer[lay][physical], store.v_buffer[lay][physical]
        before, blobs = self.spill.stats.loaded_bytes, torch.unique(of[spilled]).tolist()
        for start in blobs:
            held = self._held[start]
            bk, bv = self.spill.read_blob(held.key, held.rows.length)
            if self.checksums is not None:
                for i in range(store.num_layers):
                    self.checksums.verify(start, i, bk[i], bv[i], where="the spill tier")
            sel = of == start
            for i, lay in enumerate(layers):  # offsets in the blob: as written (per-layer orders: each its own)
                offsets = host_rows[sel] - start if self.orders is None else self.orders.rank[lay, host_rows[sel]].long()
                k[i, sel], v[i, sel] = bk[lay][offsets], bv[lay][offsets]
        if layer is not None:
            k, v = k[0], v[0]
        return k, v, len(blobs), self.spill.stats.loaded_bytes - before

    def check_integrity(self) -> None:
        """Both row spaces consistent; every used virtual row belongs to exactly one live extent, placed in
        exactly one host extent of its length or spilled with a blob; cluster caches consistent."""
        self.store.check_integrity()
        self.rows.check_integrity()
        held = sum(h.rows.length for h in self._held.values())
        assert held == self.rows.num_used, f"extents hold {held} rows, the row space uses {self.rows.num_used}"
        assert int((self._extent_of >= 0).sum()) == held, "extent map out of step with the live extents"
        placed = [h for h in self._held.values() if h.placed is not None]
        assert sum(h.placed.length for h in placed) == self.store.num_used, "placed extents out of step with the store"
        for h in self._held.values():
            start, length = h.rows
            assert 0 < h.live <= length, f"extent {start}: live count {h.live} out of range"
            assert bool(self._spilled[start]) == h.spilled, f"extent {start}: spilled flag out of step"
            if h.placed is None:
                assert h.key is not None, f"extent {start} is spilled without a blob"
            else:
                assert h.placed.length == length and self.store.rows.length_of(h.placed.start) == length, \
                    f"extent {start}: placed extent {h.placed} not allocated at its length"
                assert bool((self._shift[start : start + length] == h.placed.start - start).all()), \
                    f"extent {start}: row shift out of step with its placement"
                assert self.spill is not None or h.placed.start == start, \
                    f"extent {start}: placed at {h.placed.start} without a spill tier (rows are read unshifted)"
        if self.spill is not None:
            blobs = sum(h.rows.length for h in self._held.values() if h.key is not None)
            assert blobs == self.spill.held_tokens, f"blobs hold {blobs} tokens, the spill tier counts {self.spill.held_tokens}"
        if self.checksums is not None:
            assert len(self.checksums) == len(self._held), "a live extent without a checksum (or a stale one)"
        if self.orders is not None:
            for h in self._held.values():
                self.orders.check(*h.rows)
        self.caches.check_integrity()
