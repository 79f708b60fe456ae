"""Cluster scoring with GQA aggregation: a priority per (row, cluster) from the row's queries and the
clusters' summaries (centroid, spread, cost), by rule 'centroid' / 'centroid_radius' / 'size_weighted',
reduced (mean / max) over the row's query tokens and heads. The maths: ``mosaic_sglang/clusters/README.md``.

`cluster_scores` dispatches: the Triton kernels (`triton.py`) for CUDA tensors or with ``impl='triton'``
(interpreter tests), the plain-loop reference (`reference.py`) otherwise. The serving path's batched torch
version is `mosaic_sglang.clusters.scoring.score_clusters`; the kernel tests hold all three to one result.
"""

from __future__ import annotations

from .reference import cluster_scores_reference

__all__ = ["cluster_scores", "cluster_scores_reference"]


def cluster_scores(queries, centroids, spreads, costs, *, rule: str, reduce: str, num_clusters=None, out=None,
                   always_lse=None, impl: str | None = None):
    """See `cluster_scores_reference` for the contract (``queries [R, Tq, Hq, D]``, ``centroids [R, C, Hkv, D]``,
    ``spreads [R, C, Hkv]``, ``costs [R, C] int64``, optional ``num_clusters [R] int64``, ``out [R, C]
    float32`` and ``always_lse [R, Hkv, Tq · group] float32``); ``impl``: None (by device), 'triton' or
    'reference'."""
    impl = impl or ("triton" if queries.is_cuda else "reference")
    if impl == "triton":
        from .triton import cluster_scores_triton  # imports triton: only when used

        return cluster_scores_triton(queries, centroids, spreads, costs, rule=rule, reduce=reduce,
                                     num_clusters=num_clusters, out=out, always_lse=always_lse)
    if impl != "reference":
        raise ValueError(f"cluster_scores: impl: expected None, 'triton' or 'reference', got {impl!r}")
    return cluster_scores_reference(queries, centroids, spreads, costs, rule=rule, reduce=reduce,
                                    num_clusters=num_clusters, out=out, always_lse=always_lse)
