"""Retrieval: the contract every KV retrieval policy meets, and the yardsticks that compare them.

A `Retriever` observes a stream of keys (``append``) and answers a query with a `Selection` (CSR over
layers of attended positions). The always-attended part (sinks, recent window, text) and the budget
rule (`fill_budget`) are defined once here and used by Mosaic's `ClusterIndex`, by every baseline in
`baselines/` (dense, oracle token top-k, ReKV-style frame blocks, Quest pages) and by the serving
policy; `selection_quality` scores a selection against exact attention (mass recall, top-k recall,
output error).
"""

from .base import Retriever, Selection, always_attended_mask, always_attended_positions
from .budget import FILL_RULES, fill_budget, fill_budget_exact
from .gqa import group_queries
from .quality import SelectionQuality, selection_quality

__all__ = [
    "Retriever",
    "Selection",
    "always_attended_mask",
    "always_attended_positions",
    "fill_budget",
    "fill_budget_exact",
    "FILL_RULES",
    "group_queries",
    "SelectionQuality",
    "selection_quality",
]
