"""mosaic-sglang: a cluster-driven KV cache for streaming long-video understanding in SGLang.

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
    "ClusterIndex": "mosaic_sglang.cluster_index",
    "Selection": "mosaic_sglang.retrieval_base",
    "Retriever": "mosaic_sglang.retrieval_base",
    "HostKVStore": "mosaic_sglang.host_store",
    "ClusterResidency": "mosaic_sglang.residency",
    "TransferEngine": "mosaic_sglang.transfer_engine",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mosaic_sglang' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
