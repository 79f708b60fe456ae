"""Offload: the host tier that bounds device KV while the video grows.

Sealed clusters move to a cluster-contiguous host store (`HostKVStore`: one extent per cluster, the
same rows in every layer); `planner` decides which tokens move; `HostTier` keeps the extent bookkeeping
of the serving path (host rows encoded as negative slot values); later questions read their selected
clusters back through a bounded per-video device cluster cache (`ClusterResidency` decides what stays,
`TransferEngine` copies, `ClusterCaches` places the caches in blocks of SGLang's KV pool). Below the host
store, an optional `SpillTier` (L3) holds cold extents as blobs in a storage backend. Nothing here
imports SGLang: the pool and allocator arrive as a `DevicePool`, the storage backend as a `SpillBackend`.
"""

from .cluster_caches import ClusterCaches, DevicePool, VideoCache
from .host_store import Extent, HostKVStore, HostStoreFullError
from .host_tier import HostRead, HostReadCounts, HostTier, decode_host, encode_host
from .planner import closed_groups, clusters_to_offload
from .residency import ClusterResidency, LayerAccess, ResidencyOverflowError, ResidencyStats, TransferPlan
from .spill_tier import SpillBackend, SpillLostError, SpillRefusedError, SpillStats, SpillTier
from .transfer import TransferEngine, TransferStats

__all__ = [
    "ClusterCaches", "DevicePool", "VideoCache",
    "Extent", "HostKVStore", "HostStoreFullError",
    "HostRead", "HostReadCounts", "HostTier", "decode_host", "encode_host",
    "closed_groups",
    "clusters_to_offload",
    "ClusterResidency", "LayerAccess", "ResidencyOverflowError", "ResidencyStats", "TransferPlan",
    "SpillBackend", "SpillLostError", "SpillRefusedError", "SpillStats", "SpillTier",
    "TransferEngine", "TransferStats",
]
