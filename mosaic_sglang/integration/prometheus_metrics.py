"""Mosaic's Prometheus metrics, served on SGLang's own ``/metrics`` endpoint.

SGLang runs ``prometheus_client`` in multiprocess mode when launched with ``--enable-metrics`` (it sets
``PROMETHEUS_MULTIPROC_DIR`` before starting its scheduler processes, and the HTTP server's ``/metrics``
collects every process's values from that directory). The scheduler process that hosts the mosaic
backend registers the series below there; without ``--enable-metrics`` nothing is created and
`MosaicMetrics.record` is a no-op.

Every series is one field of `mosaic_sglang.serving.stats.ProcessTotals` (its metadata holds the
series' help text): counters are published by deltas of the running totals after every forward
(`MosaicMetrics.record`), so they never double count and cost a few integer reads per forward; gauges
are set to the current value.

=========================================  =========  ===================================================
series                                     type       meaning
=========================================  =========  ===================================================
``mosaic:forwards_total``                  counter    forwards run by the mosaic backend
``mosaic:offloaded_tokens_total``          counter    tokens moved from device slots to the host store
``mosaic:rehosted_tokens_total``           counter    host tokens laid out again once their clusters were regrouped
``mosaic:host_copies_total``               counter    host→device copy operations (one per cluster per layer)
``mosaic:host_copy_bytes_total``           counter    K+V bytes of those copies
``mosaic:prefetch_copies_total``           counter    of those, cross-layer prefetches
``mosaic:cluster_cache_lookups_total``     counter    clusters asked of a cluster cache at layers >= 1
``mosaic:cluster_cache_hits_total``        counter    of those, already resident (kept or prefetched)
``mosaic:cluster_cache_overflow_reads_total`` counter layer reads that bypassed the cluster cache
``mosaic:host_store_full_events_total``    counter    offloads cut short by a full host store
``mosaic:host_store_used_tokens``          gauge      host store rows in use
``mosaic:cluster_cache_held_tokens``       gauge      KV pool slots held by device cluster caches
``mosaic:indexed_videos``                  gauge      video prefixes with a cluster index
``mosaic:clusters``                        gauge      clusters over all indexed videos
=========================================  =========  ===================================================
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from ..serving.stats import COUNTER_FIELDS, GAUGE_FIELDS, ProcessTotals

__all__ = ["MosaicMetrics", "METRIC_NAMES"]

METRIC_NAMES = tuple(f"mosaic:{n}_total" for n in COUNTER_FIELDS) + tuple(f"mosaic:{n}" for n in GAUGE_FIELDS)
"""Every series name as exposed on ``/metrics``."""


_HELP = {f.name: f.metadata["help"] for f in dataclasses.fields(ProcessTotals)}


class MosaicMetrics:
    """The series of one scheduler process (no-op unless SGLang's metrics are on).

    Args:
        enabled: create the series; None: iff ``PROMETHEUS_MULTIPROC_DIR`` is set (SGLang's
            ``--enable-metrics``).
        registry: a ``prometheus_client.CollectorRegistry``; None: the default one (what SGLang's
            multiprocess collector reads).
    """

    def __init__(self, enabled: Optional[bool] = None, registry=None) -> None:
        self.enabled = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")) if enabled is None else enabled
        self._last: dict[str, int] = {name: 0 for name in COUNTER_FIELDS}
        if not self.enabled:
            return
        from prometheus_client import REGISTRY, Counter, Gauge  # after PROMETHEUS_MULTIPROC_DIR is set (SGLang's rule)

        registry = REGISTRY if registry is None else registry
        # prometheus_client appends "_total" to counter names itself
        self._counters = {n: Counter(f"mosaic:{n}", _HELP[n], registry=registry) for n in COUNTER_FIELDS}
        self._gauges = {n: Gauge(f"mosaic:{n}", _HELP[n], multiprocess_mode="mostrecent", registry=registry)
                        for n in GAUGE_FIELDS}

    def record(self, totals: ProcessTotals) -> None:
        """Publish a `ProcessTotals` snapshot (counters as totals since start, gauges as values).

        A counter total that went back (a fresh runtime) adds nothing: counters never step down."""
        if not self.enabled:
            return
        values = dataclasses.asdict(totals)
        for name, counter in self._counters.items():
            value = int(values[name])
            if value > self._last[name]:
                counter.inc(value - self._last[name])
            self._last[name] = value
        for name, gauge in self._gauges.items():
            gauge.set(values[name])
