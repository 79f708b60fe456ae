"""Per-process home of Mosaic's serving state, shared by the attention backend, the radix cache and the
output streamer of one SGLang scheduler process.

SGLang builds the attention backend (model runner) and the tree cache (scheduler) separately, in the
same process and thread; both reach the same `MosaicRuntime` through `get_runtime()`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Optional

from ..config import MosaicConfig, MosaicConfigError
from ..serving import AttendedSetPolicy, FullAttendedSet, ProcessCounters, ProcessTotals, RequestStats
from .options import config_from_env
from .prometheus_metrics import MosaicMetrics
from .request_rows import RequestRows

__all__ = ["MosaicRuntime", "get_runtime", "reset_runtime"]

logger = logging.getLogger(__name__)

# Stats of finished requests are kept until the response carries them; bounded so an output that is
# never streamed (aborted client) cannot grow the map without limit.
_FINISHED_STATS_CAP = 4096


class MosaicRuntime:
    """Config, retrieval policy and per-request statistics of one scheduler process."""

    def __init__(self, config: MosaicConfig, policy: Optional[AttendedSetPolicy] = None) -> None:
        self.config = config
        self.policy = policy or FullAttendedSet()
        self._finished_stats: "OrderedDict[str, RequestStats]" = OrderedDict()
        self.host = None
        """`HostTier` when offload is on (``host_store_tokens > 0``), else None."""
        self.read_slot_kv = None
        self.rows = RequestRows()
        """Host copies of live requests' ``req_to_token`` rows and frame ids, extended by one position per
        decode step (the prompt's frame ids are kept there for the decode steps)."""
        self.metrics = MosaicMetrics()
        self.publishes_metrics = True
        """False on tensor-parallel ranks but the first: each rank counts the same events, and Prometheus
        sums the processes' series."""
        self.counters = ProcessCounters()
        """The process's running totals (the policy adds to them where events happen)."""
        self.releases = 0
        """Requests released so far (`release`); with ``counters.forwards``, what may have changed the tree."""

    def bind_model(self, *, num_layers: int, num_kv_heads: int, head_dim: int, v_head_dim: int, dtype,
                   read_slot_keys, read_slot_kv, device_pool=None, device=None, index_kv_heads=None,
                   decision_log=None, tp_rank: int = 0, tp_size: int = 1) -> None:
        """Called by the attention backend once the KV pool exists: installs the Mosaic cluster policy
        and, with ``host_store_tokens > 0``, the host tier (its device cluster caches allocated from
        ``device_pool``, a `DevicePool` over SGLang's KV pool; pinned host memory when that is on CUDA).
        ``device``: the KV pool's device, where the policy keeps its plan lists and kept selections.
        ``index_kv_heads``: heads of the keys `read_slot_keys` returns (all ranks' under tensor parallelism;
        default ``num_kv_heads``, this rank's, which the host store keeps). ``decision_log``: see
        `ClusterAttendedSet.decision_log`. ``tp_rank``/``tp_size``: the attention-TP rank (only rank 0
        publishes metrics: every rank counts the same events) and group size."""
        from ..offload import HostKVStore, HostTier, SpillTier
        from ..serving import ClusterAttendedSet

        config = self.config
        if config.host_store_tokens and device_pool is not None and device_pool.page_size != 1:
            raise MosaicConfigError("mosaic config field 'host_store_tokens': offload frees single KV slots, expected 0 "
                                    f"with KV pages of {device_pool.page_size} tokens (or --page-size 1), got "
                                    f"{config.host_store_tokens}")
        if config.host_store_tokens:
            pin = device_pool is not None and device_pool.k_layers[0].is_cuda
            store = HostKVStore(config.host_store_tokens, num_layers=num_layers, num_kv_heads=num_kv_heads,
                                head_dim=head_dim, v_head_dim=v_head_dim, dtype=dtype, pin_memory=pin)
            spill = None
            if config.spill_backend != "none":
                from .hicache_spill import HiCacheSpillBackend

                backend = HiCacheSpillBackend(config.spill_backend, config.spill_path, tp_rank=tp_rank, tp_size=tp_size)
                spill = SpillTier(backend, store, refusal_is_fatal=tp_size > 1)
                logger.info("mosaic spill tier: %s in %s, %d tokens", spill.backend.name, spill.backend.directory,
                            config.spill_tokens)
            self.host = HostTier(store, max_cached_videos=config.cluster_cache_videos, pool=device_pool, spill=spill,
                                 spill_tokens=config.spill_tokens, layer_orders=config.membership == "per_layer")
        self.read_slot_kv = read_slot_kv
        self.policy = ClusterAttendedSet(
            self.config, num_layers=num_layers, num_kv_heads=index_kv_heads or num_kv_heads, head_dim=head_dim,
            read_slot_keys=read_slot_keys, host=self.host, counters=self.counters, device=device,
        )
        self.policy.decision_log = decision_log
        self.publishes_metrics = tp_rank == 0
        logger.info("mosaic runtime: policy=%s layers=%d kv_heads=%d offload=%s", self.policy.name, num_layers,
                    num_kv_heads, "host store %d tokens" % self.config.host_store_tokens if self.host else "off")
        if self.config.budget == 0:
            logger.info("mosaic budget 0: every layer attends only the sinks, the recent window and the text "
                        "tokens; no video token is selected from the clusters")

    def release(self, rid: str) -> None:
        """A request finished or was aborted: keep its final stats for the response, drop its state."""
        self.releases += 1
        stats = self.policy.request_stats(rid)
        if stats is not None:
            self._finished_stats[rid] = stats
            while len(self._finished_stats) > _FINISHED_STATS_CAP:
                self._finished_stats.popitem(last=False)
        self.policy.release(rid)
        self.rows.release(rid)

    def after_forward(self) -> None:
        """The backend finished a forward (after the last layer and `end_forward`): publish metrics."""
        self.counters.forwards += 1
        if self.metrics.enabled and self.publishes_metrics:
            self.metrics.record(self.totals())

    def totals(self) -> ProcessTotals:
        """Counters since start and current sizes, for `MosaicMetrics`."""
        videos = getattr(self.policy, "videos", {})
        host = self.host
        spill = host.spill.stats if host is not None and host.spill is not None else None
        return self.counters.snapshot(
            host_store_used_tokens=host.used_tokens if host is not None else 0,
            spilled_tokens=host.spilled_tokens if host is not None else 0,
            spill_writes=spill.writes if spill else 0, spill_written_bytes=spill.written_bytes if spill else 0,
            spill_failed_writes=spill.failed_writes if spill else 0, spills=spill.spills if spill else 0,
            cluster_cache_held_tokens=host.caches.held_tokens if host is not None else 0,
            indexed_videos=len(videos),
            clusters=sum(v.index.num_clusters for v in videos.values()),
            live_requests=self.policy.num_live_requests,
        )

    def take_stats(self, rid: str, finished: bool) -> Optional[RequestStats]:
        """Stats for a response of ``rid`` (None if unknown); a finished request's stats are handed out once."""
        if rid in self._finished_stats:
            return self._finished_stats.pop(rid) if finished else self._finished_stats[rid]
        return self.policy.request_stats(rid)


_RUNTIME: Optional[MosaicRuntime] = None


def get_runtime() -> MosaicRuntime:
    """The process's runtime, created on first use from ``MOSAIC_CONFIG`` (set by the launch flags)."""
    global _RUNTIME
    if _RUNTIME is None:
        config = config_from_env()
        _RUNTIME = MosaicRuntime(config)
        logger.info("mosaic config: %s", config.to_json())
    return _RUNTIME


def reset_runtime() -> None:
    """Forget the process's runtime (tests)."""
    global _RUNTIME
    _RUNTIME = None
