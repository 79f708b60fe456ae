"""Serving: what the attention backend asks of a retrieval policy per forward, independent of SGLang.

The backend describes each request of a forward as a `RequestLayout` (slots, frame ids, prefix and
extend lengths) and asks an `AttendedSetPolicy` for a `ForwardPlan` (once per forward, on the host)
and each layer's `LayerKV` (CSR of attended positions over the batch).
`FullAttendedSet` attends everything (the exactness reference); `ClusterAttendedSet` is Mosaic: one
`ClusterIndex` per video prefix found by KV slot (`VideoRegistry`), the question's selection kept for
its decode steps on the model's device (`SelectionSlab`), offload of sealed clusters to the host tier, and typed statistics per request
(`RequestStats`) and per process (`ProcessTotals`).
"""

from .cluster_policy import ClusterAttendedSet
from .plan import ForwardPlan, LayerKV
from .policy import AttendedSetPolicy, FullAttendedSet
from .request_layout import RequestLayout
from .stats import ProcessCounters, ProcessTotals, RequestStats
from .videos import VideoIndex, VideoRegistry

__all__ = [
    "AttendedSetPolicy",
    "FullAttendedSet",
    "ClusterAttendedSet",
    "ForwardPlan",
    "LayerKV",
    "RequestLayout",
    "RequestStats",
    "ProcessTotals",
    "ProcessCounters",
    "VideoIndex",
    "VideoRegistry",
]
