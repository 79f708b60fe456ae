"""`ClusterResidency`: bounded device residency of one sequence's offloaded clusters.

What stays on the device for a sequence: sinks + recent window + text + clusters not yet sealed (those
live in SGLang's pool as usual) and this **cluster cache**: whole sealed clusters copied back from the
`HostKVStore`. This module decides which clusters the cache holds and plans the copies; it moves no
bytes itself (`TransferEngine` executes the plans).

Capacity: **per layer**, ``ceil(budget × (1 + residency_slack))`` token slots in each layer's own slot
space (served: a block of ``capacity`` slots of SGLang's KV pool, each slot used independently per
layer, see `offload.cluster_caches`; offline: a ``[num_layers, capacity, H, D]`` buffer). Per layer because
layers select different clusters (ids are shared, choices are not): a slot space shared across layers
must hold the *union* of the layers' selections (up to L × budget), while per-layer caches hold exactly
the budget plus the slack in every layer, and cross-layer prefetch is then just "fill layer l+1's
cache". The cost: the attention backend reads per-layer slot ids (Mosaic builds its own index stream
anyway; OFFLOAD_NOTES §5.8). The slack keeps recently used clusters across decode steps and gives the
prefetcher room; a selection larger than the capacity raises `ResidencyOverflowError`.

Policy: LRU with a frequency tie-break. Victims are ordered by (last step used, times used); a
cluster selected in the current step is never evicted. Demand fetches (misses of the layer's
selection) may evict any other cluster. Prefetches (layer l's selection, copied into layer l+1's cache
while layer l computes) fill free room and may evict only clusters that the layer did not use in its
last step, so a wrong prediction can never displace the layer's previous working set; a prefetched
cluster does not count as "used" until the layer selects it, so wrong prefetches are the first victims.

Prefetch hit rate: over layers >= 1, the fraction of selected clusters that were already resident
(kept from earlier steps, or prefetched) when the layer asked — the share of its clusters that did not
wait on a demand fetch. Layer 0 has no predecessor in the step and is excluded. Measured
(`benchmarks/offload.py`): on the synthetic trace (16K-256K tokens) prefetch did not raise this rate over
plain residency (0.14-0.78 either way) and moved 1.26-1.35x the missed bytes; on real SmolLM2 KV
(caption stream, 5K-21K tokens) it lowered the rate by 0.6-3.5 points and moved 1.7-2.2x. Layers select
different clusters, so ``MosaicConfig.prefetch`` defaults to off.

Per step: `begin_step()`, then for each layer ``l``: `access(l, ...)` (demand plan; execute and wait)
and, if prefetching, `prefetch(l + 1, same ids)` (execute asynchronously).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch

from .host_store import Extent

__all__ = ["ClusterResidency", "TransferPlan", "LayerAccess", "ResidencyStats", "ResidencyOverflowError"]


class ResidencyOverflowError(ValueError):
    """A layer's selection needs more slots than the cluster cache holds."""


class TransferPlan(NamedTuple):
    """Host→device copies for one layer: op ``i`` copies host rows ``[src_start[i], +src_len[i])`` of
    ``layer`` into device slots ``dst_slots[dst_indptr[i]:dst_indptr[i+1]]`` (one op per missed cluster,
    ops in ascending host order; ops whose extents are adjacent merge into one contiguous read, `runs`).

    Attributes:
        layer: the layer (host and device).
        cluster_ids: ``[M] int64`` the cluster each op moves.
        src_start: ``[M] int64`` host extent starts.
        src_len: ``[M] int64`` extent lengths (tokens).
        dst_indptr: ``[M + 1] int64`` CSR into ``dst_slots``.
        dst_slots: ``[sum src_len] int64`` device slots, in host-row order.
        bytes_per_token: K+V bytes of one token in one layer.
        prefetch: whether the plan is a prefetch (off the critical path) or a demand fetch.
    """

    layer: int
    cluster_ids: torch.Tensor
    src_start: torch.Tensor
    src_len: torch.Tensor
    dst_indptr: torch.Tensor
    dst_slots: torch.Tensor
    bytes_per_token: int
    prefetch: bool

    @property
    def num_ops(self) -> int:
        return self.cluster_ids.numel()

    @property
    def num_runs(self) -> int:
        """Contiguous host ranges the ops form (ops are sorted by ``src_start``, so clusters stored
        back to back merge into one read: the DMA count a copier needs)."""
        if self.src_start.numel() == 0:
            return 0
        ends = self.src_start[:-1] + self.src_len[:-1]
        return 1 + int((self.src_start[1:] != ends).sum())

    def runs(self) -> list[tuple[int, int, int]]:
        """``[(host start, tokens, first dst index)]`` per contiguous host range (see `num_runs`)."""
        out: list[list[int]] = []
        offset = 0
        for start, length in zip(self.src_start.tolist(), self.src_len.tolist()):
            if out and out[-1][0] + out[-1][1] == start:
                out[-1][1] += length
            else:
                out.append([start, length, offset])
            offset += length
        return [tuple(r) for r in out]

    @property
    def num_tokens(self) -> int:
        return self.dst_slots.numel()

    @property
    def num_bytes(self) -> int:
        return self.num_tokens * self.bytes_per_token


class LayerAccess(NamedTuple):
    """What `ClusterResidency.access` decided for one layer.

    Attributes:
        hits: ``[h] int64`` selected clusters already resident (prefetched ones included).
        misses: ``[m] int64`` selected clusters fetched by ``plan``.
        evicted: ``[e] int64`` clusters dropped to make room.
        plan: the demand `TransferPlan` (execute and wait before the layer's attention).
        slots: ``[sum sizes] int64`` device slot of every member of every selected cluster, clusters in
            the order given, members in host-extent order (what the attention gathers).
    """

    hits: torch.Tensor
    misses: torch.Tensor
    evicted: torch.Tensor
    plan: TransferPlan
    slots: torch.Tensor


@dataclass
class ResidencyStats:
    """Counters since construction (or `reset_stats`). Ops and tokens are per layer-copy."""

    accesses: int = 0
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    demand_ops: int = 0
    demand_tokens: int = 0
    prefetch_ops: int = 0
    prefetch_tokens: int = 0
    prefetch_used: int = 0
    """Prefetched clusters that their layer then selected."""
    predicted_selected: int = 0
    """Clusters selected at layers >= 1 (the prefetch hit-rate denominator)."""
    predicted_hits: int = 0
    """Of those, already resident or prefetched when asked."""

    @property
    def prefetch_hit_rate(self) -> float:
        return self.predicted_hits / self.predicted_selected if self.predicted_selected else float("nan")

    @property
    def hit_rate(self) -> float:
        return self.hits / self.accesses if self.accesses else float("nan")


class _Entry:
    """One resident cluster of one layer."""

    __slots__ = ("slots", "last_used", "uses", "prefetched")

    def __init__(self, slots: list[int], last_used: int, uses: int, prefetched: bool) -> None:
        self.slots, self.last_used, self.uses, self.prefetched = slots, last_used, uses, prefetched


class ClusterResidency:
    """Per-layer device cluster caches of one sequence (bookkeeping only; no tensors of K/V).

    Args:
        capacity_tokens: slots per layer (see `capacity_for`).
        num_layers: layers.
        bytes_per_token: K+V bytes of one token in one layer (``HostKVStore.bytes_per_token``), for
            plan byte counts.

    Example:
        >>> from mosaic_sglang.offload.host_store import Extent
        >>> r = ClusterResidency(8, num_layers=2, bytes_per_token=4)
        >>> r.begin_step()
        >>> a = r.access(0, [7], [Extent(100, 3)])
        >>> a.misses.tolist(), a.plan.num_ops, a.plan.num_bytes
        ([7], 1, 12)
    """

    def __init__(self, capacity_tokens: int, *, num_layers: int, bytes_per_token: int) -> None:
        for name, value in (("capacity_tokens", capacity_tokens), ("num_layers", num_layers), ("bytes_per_token", bytes_per_token)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ClusterResidency: {name}: expected an integer >= 1, got {value!r}")
        self.capacity = capacity_tokens
        self.num_layers = num_layers
        self.bytes_per_token = bytes_per_token
        self.step = -1
        self.stats = ResidencyStats()
        self._entries: list[dict[int, _Entry]] = [{} for _ in range(num_layers)]
        self._free: list[list[int]] = [list(range(capacity_tokens - 1, -1, -1)) for _ in range(num_layers)]  # stacks: pop low slots first

    @staticmethod
    def capacity_for(budget: int, slack: float) -> int:
        """Slots per layer for a token ``budget`` and ``slack`` (``MosaicConfig.budget``/``residency_slack``):
        ``max(1, ceil(budget × (1 + slack)))``."""
        return max(1, math.ceil(budget * (1 + slack)))

    # -- queries ----------------------------------------------------------------------------------

    def resident_tokens(self, layer: int) -> int:
        """Slots in use at ``layer``."""
        return self.capacity - len(self._free[layer])

    def resident_clusters(self, layer: int) -> list[int]:
        return sorted(self._entries[layer])

    def slots_of(self, layer: int, cluster_id: int) -> list[int] | None:
        """Device slots of a resident cluster (host-extent order), or None."""
        entry = self._entries[layer].get(cluster_id)
        return None if entry is None else list(entry.slots)

    def reset_stats(self) -> None:
        self.stats = ResidencyStats()

    # -- the step protocol ------------------------------------------------------------------------

    def begin_step(self) -> None:
        """Start a decode (or prefill-chunk) step: recency is counted in steps."""
        self.step += 1

    def access(self, layer: int, cluster_ids: Sequence[int], extents: Sequence[Extent]) -> LayerAccess:
        """Make ``cluster_ids`` resident at ``layer``: hits stay, misses get slots (evicting by LRU /
        frequency, never a cluster of this selection) and one copy op each.

        Args:
            layer: the layer about to attend.
            cluster_ids: distinct selected cluster ids (ints or an int64 tensor).
            extents: the host `Extent` of each, aligned with ``cluster_ids`` (its length = the
                cluster's size).

        Raises:
            ResidencyOverflowError: the selection's tokens exceed the capacity.
        """
        ids, exts = self._check(layer, cluster_ids, extents, "access")
        need = sum(e[1] for e in exts)
        if need > self.capacity:
            raise ResidencyOverflowError(
                f"ClusterResidency.access: layer {layer} selected {need} tokens in {len(ids)} clusters, capacity "
                f"{self.capacity} slots; fix: raise MosaicConfig.residency_slack to at least "
                f"{need / max(1, self.capacity) - 1:.3f} above the current one (a selection may exceed the "
                f"budget by cluster members that are always attended)"
            )
        entries, stats, step = self._entries[layer], self.stats, self.step
        selected = set(ids)
        hits, misses = [], []
        for cid, ext in zip(ids, exts):
            entry = entries.get(cid)
            if entry is not None and len(entry.slots) != ext[1]:
                self._drop(layer, cid)  # the cluster changed (re-offloaded after a split): refetch
                entry = None
            (misses if entry is None else hits).append((cid, ext))
        if layer >= 1:
            stats.predicted_selected += len(ids)
            stats.predicted_hits += len(hits)
        stats.accesses += len(ids)
        stats.hits += len(hits)
        stats.misses += len(misses)
        missing = sum(e[1] for _, e in misses)
        evicted = self._evict(layer, missing, protect=selected, min_age=0)
        for cid, _ in hits:
            entry = entries[cid]
            stats.prefetch_used += entry.prefetched
            entry.prefetched = False
            entry.last_used, entry.uses = step, entry.uses + 1
        plan = self._plan(layer, misses, prefetch=False)
        for cid, _ in misses:
            entries[cid].last_used, entries[cid].uses = step, 1
        stats.demand_ops += plan.num_ops
        stats.demand_tokens += plan.num_tokens
        slots = [s for cid in ids for s in entries[cid].slots]
        return LayerAccess(_ids([c for c, _ in hits]), _ids([c for c, _ in misses]), _ids(evicted), plan, _ids(slots))

    def prefetch(self, layer: int, cluster_ids: Sequence[int], extents: Sequence[Extent]) -> TransferPlan:
        """Plan copies of the predicted ``cluster_ids`` into ``layer``'s cache (called while layer
        ``layer - 1`` computes, with its selection as the prediction).

        Fills free slots and evicts only clusters not used in the layer's last step; predicted clusters
        that still do not fit are skipped (in the given order: put the likeliest first). Already resident
        ones cost nothing. Prefetched clusters are not marked used.
        """
        ids, exts = self._check(layer, cluster_ids, extents, "prefetch")
        entries = self._entries[layer]
        todo = [(c, e) for c, e in zip(ids, exts) if c not in entries]
        wanted = set(ids)
        # Room: free slots + clusters colder than the layer's last step (never the last working set).
        spare = len(self._free[layer]) + sum(len(en.slots) for c, en in entries.items()
                                             if c not in wanted and en.last_used < self.step - 1)
        chosen, room = [], spare
        for c, e in todo:
            if e[1] <= room:
                chosen.append((c, e))
                room -= e[1]
        self._evict(layer, sum(e[1] for _, e in chosen), protect=wanted, min_age=2)
        plan = self._plan(layer, chosen, prefetch=True)
        for c, _ in chosen:
            entries[c].prefetched = True
        self.stats.prefetch_ops += plan.num_ops
        self.stats.prefetch_tokens += plan.num_tokens
        return plan

    def drop(self, cluster_ids: Sequence[int]) -> None:
        """Forget clusters in every layer (their host extent was freed or rewritten, e.g. a split or the
        end of the sequence); their slots become free."""
        for layer in range(self.num_layers):
            for cid in cluster_ids:
                if int(cid) in self._entries[layer]:
                    self._drop(layer, int(cid))

    def drop_ranges(self, ranges: Sequence[tuple[int, int]]) -> None:
        """Forget, in every layer, the clusters whose id lies in one of ``ranges`` (``[start, end)``): every id of
        a freed host extent (its start, or its sub-ranges under per-layer orders, `layer_orders.py`). Walks the
        resident clusters only."""
        if not ranges:
            return
        ranges = sorted(ranges)
        starts = [a for a, _ in ranges]
        for layer in range(self.num_layers):
            for cid in list(self._entries[layer]):
                i = bisect.bisect_right(starts, cid) - 1
                if i >= 0 and cid < ranges[i][1]:
                    self._drop(layer, cid)

    def clear(self) -> None:
        """Drop everything (sequence finished)."""
        for layer in range(self.num_layers):
            for cid in list(self._entries[layer]):
                self._drop(layer, cid)

    # -- internals --------------------------------------------------------------------------------

    def _check(self, layer, cluster_ids, extents, what):
        if not isinstance(layer, int) or not 0 <= layer < self.num_layers:
            raise ValueError(f"ClusterResidency.{what}: layer: expected 0 <= layer < {self.num_layers}, got {layer!r}")
        ids = cluster_ids.tolist() if isinstance(cluster_ids, torch.Tensor) else [int(c) for c in cluster_ids]
        if len(ids) != len(extents):
            raise ValueError(f"ClusterResidency.{what}: expected one extent per cluster id, got {len(ids)} ids and {len(extents)} extents")
        if len(set(ids)) != len(ids):
            raise ValueError(f"ClusterResidency.{what}: cluster_ids: expected distinct ids, got duplicates in {ids[:16]}")
        return ids, list(extents)

    def _evict(self, layer: int, needed: int, *, protect: set[int], min_age: int) -> list[int]:
        """Free slots until ``needed`` fit: victims by (last used, uses), skipping ``protect`` and
        clusters used less than ``min_age`` steps ago. Returns the evicted ids."""
        free = self._free[layer]
        if needed <= len(free):
            return []
        entries = self._entries[layer]
        victims = sorted((en.last_used, en.uses, c) for c, en in entries.items()
                         if c not in protect and en.last_used <= self.step - min_age)
        evicted = []
        for _, _, c in victims:
            if needed <= len(free):
                break
            self._drop(layer, c)
            evicted.append(c)
        assert needed <= len(free), f"cannot free {needed} slots at layer {layer}: {len(free)} free after evicting {evicted}"
        self.stats.evictions += len(evicted)
        return evicted

    def _plan(self, layer: int, fetch: list[tuple[int, Extent]], *, prefetch: bool) -> TransferPlan:
        """Give every cluster in ``fetch`` slots (room was made) and build the layer's plan."""
        free, entries = self._free[layer], self._entries[layer]
        fetch = sorted(fetch, key=lambda item: item[1][0])  # host order: adjacent extents merge into runs
        starts, lens, indptr, slots = [], [], [0], []
        for cid, (start, length) in fetch:
            got = free[len(free) - length :][::-1]
            del free[len(free) - length :]
            entries[cid] = _Entry(got, -1, 0, False)
            starts.append(start)
            lens.append(length)
            slots.extend(got)
            indptr.append(len(slots))
        return TransferPlan(layer, _ids([c for c, _ in fetch]), _ids(starts), _ids(lens), _ids(indptr), _ids(slots),
                            self.bytes_per_token, prefetch)

    def _drop(self, layer: int, cid: int) -> None:
        entry = self._entries[layer].pop(cid)
        self._free[layer].extend(reversed(entry.slots))

    # -- invariants -------------------------------------------------------------------------------

    def check_integrity(self) -> None:
        """Raise ``AssertionError`` naming the first broken invariant: per layer, resident tokens <=
        capacity, resident + free == capacity, every slot in range and owned once (by one cluster or the
        free list)."""
        for layer in range(self.num_layers):
            owner: dict[int, object] = {}
            for s in self._free[layer]:
                assert 0 <= s < self.capacity, f"layer {layer}: free slot {s} out of range [0, {self.capacity})"
                assert s not in owner, f"layer {layer}: slot {s} twice in the free list"
                owner[s] = "free"
            resident = 0
            for cid, entry in self._entries[layer].items():
                assert entry.slots, f"layer {layer}: cluster {cid} resident with no slots"
                resident += len(entry.slots)
                for s in entry.slots:
                    assert 0 <= s < self.capacity, f"layer {layer}: cluster {cid} slot {s} out of range"
                    assert s not in owner, f"layer {layer}: slot {s} owned by cluster {cid} and {owner[s]}"
                    owner[s] = cid
            assert resident <= self.capacity, f"layer {layer}: {resident} resident tokens > capacity {self.capacity}"
            assert len(owner) == self.capacity, f"layer {layer}: {len(owner)} slots accounted, capacity {self.capacity}"


def _ids(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)
