"""Cluster selection for many sequences at one layer in one batched scoring call.

The attention backend runs layer by layer over a batch of requests. Scoring every request's clusters
separately would be one small matmul per request; here the requests that share a query length (every
request of a decode batch) are stacked: clusters padded to the longest list with zero cost (never
taken), one `score_clusters` matmul, one `fill_budget` sort (a segmented top-k over rows). The result
equals `ClusterIndex.select_layer` for each sequence.
"""

from __future__ import annotations

from collections import defaultdict
from typing import List, Sequence

import torch

from .cluster_index import ClusterIndex
from .cluster_scoring import fill_budget, score_clusters

__all__ = ["select_layer_batch"]


def select_layer_batch(
    indexes: Sequence[ClusterIndex], layer_id: int, queries: Sequence[torch.Tensor]
) -> List[torch.Tensor]:
    """Attended positions of several sequences at one layer.

    Args:
        indexes: one `ClusterIndex` per sequence (same config rule/reduce; budgets may differ).
        layer_id: the layer.
        queries: per sequence ``[Tq_i, Hq, D]`` float queries of that layer.

    Returns:
        Per sequence ``[n_i] int64`` sorted positions, equal to ``indexes[i].select_layer(layer_id, queries[i])``.
    """
    if len(indexes) != len(queries):
        raise ValueError(f"select_layer_batch: expected one query tensor per index, got {len(queries)} for {len(indexes)}")
    results: List[torch.Tensor] = [torch.empty(0, dtype=torch.int64)] * len(indexes)
    by_length = defaultdict(list)
    for i, q in enumerate(queries):
        if q.dim() != 3:
            raise ValueError(f"select_layer_batch: queries[{i}]: expected [Tq, Hq, D], got shape {tuple(q.shape)}")
        by_length[q.shape[0]].append(i)
    layers = torch.tensor([layer_id])
    for members in by_length.values():
        scored = []
        for i in members:
            summaries = indexes[i].layer_summaries(layers.to(indexes[i].device))
            if summaries.full:
                results[i] = indexes[i].positions_of(layer_id, summaries.valid[0])
            else:
                scored.append((i, summaries))
        if not scored:
            continue
        width = max(s.cost.shape[1] for _, s in scored)
        cost = torch.stack([_pad(s.cost[0], width) for _, s in scored])  # [R, C]
        centroid = torch.stack([_pad(s.centroid[0], width) for _, s in scored])  # [R, C, H, D]
        spread = torch.stack([_pad(s.spread[0], width) for _, s in scored])  # [R, C, H]
        q = torch.stack([queries[i] for i, _ in scored])  # [R, Tq, Hq, D]
        config = indexes[scored[0][0]].config
        scores = score_clusters(q, centroid, spread, cost, rule=config.score, reduce=config.query_reduce)
        budgets = torch.tensor([indexes[i].config.budget for i, _ in scored])
        chosen = fill_budget(scores, cost, budgets)
        for row, (i, s) in enumerate(scored):
            results[i] = indexes[i].positions_of(layer_id, chosen[row, : s.cost.shape[1]])
    return results


def _pad(x: torch.Tensor, width: int) -> torch.Tensor:
    """Zero-pad the first (cluster) dimension of ``x`` to ``width``."""
    if x.shape[0] == width:
        return x
    pad = x.new_zeros((width - x.shape[0],) + tuple(x.shape[1:]))
    return torch.cat([x, pad])
