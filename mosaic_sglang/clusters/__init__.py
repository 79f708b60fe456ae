"""Clusters: Mosaic's index over one sequence's visual-token keys, and everything it owns.

`ClusterIndex` groups keys into clusters as they arrive (cohesion-aware assignment, `index.py`), marks
over-spread clusters and splits them later in bounded steps (`split.py`), keeps per-cluster summaries
in preallocated tensors (`table.py`) and checks its invariants against a recomputation
(`integrity.py`). Its read side (`select.py`, over the `IndexView` contract in `view.py`) scores
cluster summaries against queries (`scoring.py`) and fills the budget with whole clusters, for one
sequence or a whole batch in one call (`layer_batch.py`: `select_layer_batch`, and `select_layer_into`,
which writes fixed-length selections into caller buffers without a host sync). The maths is in ``README.md``.
"""

from .index import ClusterIndex
from .layer_batch import select_layer_batch, select_layer_into
from .scoring import LayerSummaries, score_clusters
from .select import ClusterChoice, choose_clusters
from .view import IndexView

__all__ = [
    "ClusterIndex",
    "ClusterChoice",
    "IndexView",
    "LayerSummaries",
    "choose_clusters",
    "score_clusters",
    "select_layer_batch",
    "select_layer_into",
]
