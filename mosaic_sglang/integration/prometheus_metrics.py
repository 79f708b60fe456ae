"""Mosaic's Prometheus metrics, served on SGLang's own ``/metrics`` endpoint.

SGLang runs ``prometheus_client`` in multiprocess mode when launched with ``--enable-metrics`` (it sets
``PROMETHEUS_MULTIPROC_DIR`` before starting its scheduler processes, and the HTTP server's ``/metrics``
collects every process's values from that directory). The scheduler process that hosts the mosaic
backend registers the series below there; without ``--enable-metrics`` nothing is created and
`MosaicMetrics.record` is a no-op.

Counters are fed by deltas of the host tier's and the policy's running totals after every forward
(`MosaicMetrics.record`), so they never double count and cost a few integer reads per forward.

=====================================  =========  ===================================================
series                                 type       meaning
=====================================  =========  ===================================================
``mosaic:forwards_total``              counter    forwards run by the mosaic backend
``mosaic:offloaded_tokens_total``      counter    tokens moved from device slots to the host store
``mosaic:host_copies_total``           counter    host→device copy operations (one per cluster per layer)
``mosaic:host_copy_bytes_total``       counter    K+V bytes of those copies
``mosaic:prefetch_copies_total``       counter    of those, cross-layer prefetches
``mosaic:cluster_cache_lookups_total`` counter    clusters asked of a cluster cache at layers >= 1
``mosaic:cluster_cache_hits_total``    counter    of those, already resident (kept or prefetched)
``mosaic:host_store_used_tokens``      gauge      host store rows in use
``mosaic:cluster_cache_held_tokens``   gauge      KV pool slots held by device cluster caches
``mosaic:indexed_videos``              gauge      video prefixes with a cluster index
``mosaic:clusters``                    gauge      clusters over all indexed videos
=====================================  =========  ===================================================
"""

from __future__ import annotations

import os
from typing import Optional

__all__ = ["MosaicMetrics", "METRIC_NAMES"]

_COUNTERS = {
    "forwards": "Forwards run by the mosaic attention backend.",
    "offloaded_tokens": "Tokens moved from device KV slots to the Mosaic host store.",
    "host_copies": "Host-to-device copy operations of offloaded clusters (one per cluster per layer).",
    "host_copy_bytes": "K+V bytes copied host-to-device for offloaded clusters.",
    "prefetch_copies": "Host-to-device copies issued by cross-layer prefetch.",
    "cluster_cache_lookups": "Clusters asked of a device cluster cache at layers >= 1.",
    "cluster_cache_hits": "Clusters already resident (kept or prefetched) when a layer >= 1 asked.",
}
_GAUGES = {
    "host_store_used_tokens": "Host store rows in use.",
    "cluster_cache_held_tokens": "KV pool slots held by Mosaic device cluster caches.",
    "indexed_videos": "Video prefixes with a Mosaic cluster index.",
    "clusters": "Clusters over all indexed videos.",
}
METRIC_NAMES = tuple(f"mosaic:{n}_total" for n in _COUNTERS) + tuple(f"mosaic:{n}" for n in _GAUGES)
"""Every series name as exposed on ``/metrics``."""


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
        self._last: dict[str, int] = {name: 0 for name in _COUNTERS}
        if not self.enabled:
            return
        from prometheus_client import REGISTRY, Counter, Gauge  # after PROMETHEUS_MULTIPROC_DIR is set (SGLang's rule)

        registry = REGISTRY if registry is None else registry
        # prometheus_client appends "_total" to counter names itself
        self._counters = {n: Counter(f"mosaic:{n}", doc, registry=registry) for n, doc in _COUNTERS.items()}
        self._gauges = {n: Gauge(f"mosaic:{n}", doc, multiprocess_mode="mostrecent", registry=registry)
                        for n, doc in _GAUGES.items()}

    def record(self, totals: dict[str, int]) -> None:
        """Publish running totals (keys of both tables; counters as totals since start, gauges as values)."""
        if not self.enabled:
            return
        for name, counter in self._counters.items():
            value = int(totals.get(name, self._last[name]))
            if value > self._last[name]:
                counter.inc(value - self._last[name])
            self._last[name] = value
        for name, gauge in self._gauges.items():
            if name in totals:
                gauge.set(totals[name])
