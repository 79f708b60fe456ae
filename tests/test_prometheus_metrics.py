"""MosaicMetrics: counters follow running totals by deltas; off without SGLang's metrics."""

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mosaic_sglang.integration.prometheus_metrics import METRIC_NAMES, MosaicMetrics
from mosaic_sglang.serving.stats import ProcessTotals


def _values(registry) -> dict:
    out = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_counters_add_deltas_and_gauges_follow_values():
    registry = CollectorRegistry()
    metrics = MosaicMetrics(enabled=True, registry=registry)
    metrics.record(ProcessTotals(host_copies=5, host_copy_bytes=4096, host_store_used_tokens=100, forwards=1))
    metrics.record(ProcessTotals(host_copies=12, host_copy_bytes=8192, host_store_used_tokens=40, forwards=2))
    metrics.record(ProcessTotals(host_copies=3, forwards=3))  # a total that went back (a fresh runtime): no negative step
    metrics.record(ProcessTotals(host_copies=4, forwards=4))
    v = _values(registry)
    assert v["mosaic:host_copies_total"] == 12 + 1
    assert v["mosaic:host_copy_bytes_total"] == 8192 and v["mosaic:forwards_total"] == 4
    assert v["mosaic:host_store_used_tokens"] == 0  # gauges follow the latest snapshot
    assert set(METRIC_NAMES) <= set(v)
    assert all(name.startswith("mosaic:") for name in METRIC_NAMES) and len(METRIC_NAMES) == len(set(METRIC_NAMES))


def test_disabled_without_sglang_metrics(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    from prometheus_client import REGISTRY

    before = set(REGISTRY._names_to_collectors)
    metrics = MosaicMetrics()
    assert not metrics.enabled
    metrics.record(ProcessTotals(host_copies=5))  # a no-op: nothing registered, nothing counted
    assert set(REGISTRY._names_to_collectors) == before
    assert not any(name.startswith("mosaic:") for name in REGISTRY._names_to_collectors)
    with pytest.raises(AttributeError):
        metrics._counters  # no series were created
