"""mosaic-sglang: a cluster-driven KV cache for streaming long-video understanding in SGLang.

The tree follows the data path: `config` (knobs, ``MOSAIC_*`` variables) → `clusters` (the index over
a video's keys: assignment, splits, selection) → `retrieval` (the `Retriever` contract, budget rule,
baselines, quality metrics) → `serving` (what the attention backend asks per forward) → `attention` (runners: torch, Triton, FlashInfer) → `offload` (host
tier and device cluster caches) → `media` (what a server may open, fetch and decode) → `integration` (the only package that touches SGLang); kernels in
`mosaic_sglang.kernels`, clients in `mosaic_sglang.frontend`.

The public surface is importable on a CPU-only machine without SGLang, Triton or FlashInfer:
heavy modules load on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = [
    "MosaicConfig",
    "MosaicConfigError",
    "ClusterIndex",
    "Selection",
    "Retriever",
    "HostKVStore",
    "ClusterResidency",
    "TransferEngine",
    "__version__",
]

_LAZY = {
    "MosaicConfig": "mosaic_sglang.config",
    "MosaicConfigError": "mosaic_sglang.config",
    "ClusterIndex": "mosaic_sglang.clusters",
    "Selection": "mosaic_sglang.retrieval",
    "Retriever": "mosaic_sglang.retrieval",
    "HostKVStore": "mosaic_sglang.offload",
    "ClusterResidency": "mosaic_sglang.offload",
    "TransferEngine": "mosaic_sglang.offload",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mosaic_sglang' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
