"""Typed statistics: one `RequestStats` per request (``meta_info['mosaic']``) and one `ProcessTotals`
per scheduler process (what Prometheus publishes).

Both are frozen snapshots of mutable accumulators (`RequestRecord`, `ProcessCounters`) that the
serving policy updates where the events happen: a host-tier read adds its `HostReadCounts` to the
request's record and to the process counters in the same call, so the two never need reconciling.
`dataclasses.asdict` turns a snapshot into JSON at the edge (the output streamer, the metrics).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from ..offload.host_tier import HostReadCounts

__all__ = ["RequestStats", "RequestRecord", "ProcessTotals", "ProcessCounters", "COUNTER_FIELDS", "GAUGE_FIELDS"]


@dataclass(frozen=True)
class RequestStats:
    """What Mosaic did for one request, as reported in its response (``meta_info['mosaic'][0]``).

    "Latest forward" fields describe the request's last forward (its last decode step, or its last
    prefill chunk); the others accumulate over the request's life.
    """

    policy: str
    """Retrieval policy: ``'mosaic'`` (cluster selection) or ``'full'`` (dense)."""
    context_tokens: int = 0
    """Positions in the sequence at the latest forward (prompt + tokens generated so far)."""
    visual_tokens: int = 0
    """Visual (video/image) positions among them."""
    frames: int = 0
    """Frames (temporal groups) of the request's video."""
    attended_tokens: int = 0
    """Largest attended set over the layers of the latest forward (= context when dense)."""
    clusters: int = 0
    """Clusters in the request's video index (0 for text-only requests)."""
    selections: int = 0
    """Forwards in which the request chose its selection (its question's prefill chunks, re-select decode
    steps); the other decode steps keep the last one."""
    device_tokens: int = 0
    """Positions whose KV is in device pool slots at the latest forward."""
    max_device_tokens: int = 0
    """Largest ``device_tokens`` over the request's forwards."""
    host_tokens: int = 0
    """Positions whose KV lives in the host store at the latest forward."""
    host_store_used: int = 0
    """Host store rows in use (all videos of the process) at the latest forward."""
    cluster_cache_tokens: int = 0
    """Largest device cluster cache occupancy (tokens, largest layer) of the video in the latest forward."""
    host_copies: int = 0
    """Host → device copy operations for this request (one per missed cluster per layer)."""
    prefetch_copies: int = 0
    """Of those, cross-layer prefetches."""
    cache_lookups: int = 0
    """Clusters asked of the cluster cache at layers >= 1."""
    cache_hits: int = 0
    """Of those, already resident."""
    cache_hit_rate: Optional[float] = None
    """``cache_hits / cache_lookups`` rounded to 4 places; None when nothing was looked up."""
    cache_overflow_reads: int = 0
    """Layer reads of this request that bypassed the cluster cache (selection larger than the cache,
    or no cache could be had): read straight from the host store."""
    spill_loads: int = 0
    """Spilled cluster extents this request's reads loaded back from the spill (L3) tier."""
    spill_load_bytes: int = 0
    """Bytes of those blobs (all layers of each extent)."""


def _mutable_twin(frozen: type, name: str, base: type, *, keep) -> type:
    """A mutable dataclass ``name`` with the fields of ``frozen`` that ``keep(field)`` accepts (same
    names, types and defaults) and the methods of ``base``: one documented field list, not two."""
    specs = []
    for f in dataclasses.fields(frozen):
        if keep(f):
            specs.append((f.name, f.type) if f.default is dataclasses.MISSING else (f.name, f.type, field(default=f.default)))
    twin = dataclasses.make_dataclass(name, specs, bases=(base,))
    twin.__module__ = __name__
    return twin


class _RequestRecordMethods:
    def begin_forward(self, *, context_tokens: int, visual_tokens: int, frames: int, clusters: int,
                      device_tokens: int, host_tokens: int, host_store_used: int) -> None:
        """A forward of the request starts: set its context, reset the latest-forward maxima."""
        self.context_tokens, self.visual_tokens, self.frames, self.clusters = context_tokens, visual_tokens, frames, clusters
        self.device_tokens, self.host_tokens, self.host_store_used = device_tokens, host_tokens, host_store_used
        self.max_device_tokens = max(self.max_device_tokens, device_tokens)
        self.attended_tokens = 0
        self.cluster_cache_tokens = 0

    def attended(self, num_positions: int) -> None:
        self.attended_tokens = max(self.attended_tokens, num_positions)

    def add_read(self, counts: HostReadCounts, cache_tokens: int) -> None:
        """A host-tier read for this request (its cost, and the video's cache occupancy after it)."""
        self.host_copies += counts.copies
        self.prefetch_copies += counts.prefetch_copies
        self.cache_lookups += counts.cache_lookups
        self.cache_hits += counts.cache_hits
        self.cache_overflow_reads += counts.overflow_reads
        self.spill_loads += counts.spill_loads
        self.spill_load_bytes += counts.spill_load_bytes
        self.cluster_cache_tokens = max(self.cluster_cache_tokens, cache_tokens)

    def snapshot(self) -> RequestStats:
        rate = round(self.cache_hits / self.cache_lookups, 4) if self.cache_lookups else None
        return RequestStats(**dataclasses.asdict(self), cache_hit_rate=rate)


RequestRecord = _mutable_twin(RequestStats, "RequestRecord", _RequestRecordMethods, keep=lambda f: f.name != "cache_hit_rate")
RequestRecord.__doc__ = """The mutable accumulator behind one request's `RequestStats` (its fields but the derived
``cache_hit_rate``); `snapshot` freezes it."""


def _series(kind: str, help_text: str, *, kept_by_tier: bool = False):
    """A `ProcessTotals` field: a Prometheus ``'counter'`` or ``'gauge'`` with its help text.
    ``kept_by_tier``: a counter the spill tier keeps itself (passed to `ProcessCounters.snapshot`)."""
    assert kind in ("counter", "gauge"), kind
    return field(default=0, metadata={"help": help_text, "kind": kind, "kept_by_tier": kept_by_tier})


@dataclass(frozen=True)
class ProcessTotals:
    """Running totals (counters, since the process started) and current sizes (gauges) of one scheduler
    process: the ``mosaic:*`` Prometheus series, field by field (counters get ``_total``; each field's
    ``metadata['help']`` is the series' help text)."""

    forwards: int = _series("counter", "Forwards run by the mosaic attention backend.")
    offloaded_tokens: int = _series("counter", "Tokens moved from device slots to the host store.")
    rehosted_tokens: int = _series("counter", "Tokens moved early (before their clusters were regrouped) and laid out again on the host once regrouped.")
    host_copies: int = _series("counter", "Host → device copy operations (one per cluster per layer), prefetches included.")
    host_copy_bytes: int = _series("counter", "K+V bytes of those copies.")
    prefetch_copies: int = _series("counter", "Of ``host_copies``, cross-layer prefetches.")
    cluster_cache_lookups: int = _series("counter", "Clusters asked of a cluster cache at layers >= 1.")
    cluster_cache_hits: int = _series("counter", "Of those, already resident.")
    cluster_cache_overflow_reads: int = _series("counter", "Layer reads that bypassed the cluster cache.")
    host_store_full_events: int = _series("counter", "Offloads cut short because the host store was full; those clusters stayed on the device.")
    spill_loads: int = _series("counter", "Spilled cluster extents loaded back from the spill (L3) tier into the host store.")
    spill_load_bytes: int = _series("counter", "Bytes of those blobs (all layers).")
    spill_writes: int = _series("counter", "Cluster extents written to the spill tier.", kept_by_tier=True)
    spill_written_bytes: int = _series("counter", "Bytes of those blobs.", kept_by_tier=True)
    spill_failed_writes: int = _series("counter", "Writes the spill backend refused (the cluster stayed where it was).", kept_by_tier=True)
    spills: int = _series("counter", "Extents whose host store rows were freed by a spill (blob written then or earlier).", kept_by_tier=True)
    host_store_used_tokens: int = _series("gauge", "Host store rows in use.")
    spilled_tokens: int = _series("gauge", "Live offloaded tokens whose cluster is in the spill tier, not in the host store.")
    cluster_cache_held_tokens: int = _series("gauge", "KV pool slots held by device cluster caches.")
    indexed_videos: int = _series("gauge", "Video prefixes with a cluster index.")
    clusters: int = _series("gauge", "Clusters over all indexed videos.")
    live_requests: int = _series("gauge", "Requests whose per-request state (kept selections, stats) the process holds.")


class _ProcessCounterMethods:
    def add_read(self, counts: HostReadCounts) -> None:
        self.host_copies += counts.copies
        self.host_copy_bytes += counts.copy_bytes
        self.prefetch_copies += counts.prefetch_copies
        self.cluster_cache_lookups += counts.cache_lookups
        self.cluster_cache_hits += counts.cache_hits
        self.cluster_cache_overflow_reads += counts.overflow_reads
        self.spill_loads += counts.spill_loads
        self.spill_load_bytes += counts.spill_load_bytes

    def snapshot(self, **gauges_and_tier_counters: int) -> ProcessTotals:
        return ProcessTotals(**dataclasses.asdict(self), **gauges_and_tier_counters)


ProcessCounters = _mutable_twin(ProcessTotals, "ProcessCounters", _ProcessCounterMethods,
                                keep=lambda f: f.metadata["kind"] == "counter" and not f.metadata["kept_by_tier"])
ProcessCounters.__doc__ = """The mutable counters behind `ProcessTotals` (its counter fields but the spill tier's own);
`snapshot` adds the gauges and the spill tier's counters."""

COUNTER_FIELDS = tuple(f.name for f in dataclasses.fields(ProcessTotals) if f.metadata["kind"] == "counter")
"""The counter fields of `ProcessTotals`."""
GAUGE_FIELDS = tuple(f.name for f in dataclasses.fields(ProcessTotals) if f.metadata["kind"] == "gauge")
"""The gauge fields of `ProcessTotals`."""
