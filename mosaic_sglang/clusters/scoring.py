"""Cluster scoring: from cluster summaries and a query to a priority per cluster.

Pure tensor functions over a leading ``rows`` dimension. One row is one (sequence, layer): a single
sequence passes its layers as rows; several sequences stack their layers (padding the cluster axis
with ``cost = 0``), so scoring is one batched matmul; the budget fill
(`mosaic_sglang.retrieval.budget.fill_budget`) is then one sort over all rows (a segmented top-k).
The maths is in ``README.md``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..retrieval.gqa import group_queries

__all__ = ["LayerSummaries", "score_clusters", "cluster_log_mass"]

_RULES = ("centroid", "centroid_radius", "size_weighted")
_REDUCES = ("mean", "max")


class LayerSummaries(NamedTuple):
    """Cluster summaries of some layers, the input of `score_clusters` (``R`` layers, ``C`` clusters).

    Attributes:
        valid: ``[R, C] bool`` cluster exists in the layer's membership group.
        centroid: ``[R, C, H, D] float32`` mean key (empty when ``full``).
        spread: ``[R, C, H] float32`` mean squared distance to the centroid (empty when ``full``).
        cost: ``[R, C] int64`` budget tokens the cluster would add (members not already always attended).
        full: the budget covers every visual token: choose everything, no scoring (exact mode).
    """

    valid: torch.Tensor
    centroid: torch.Tensor
    spread: torch.Tensor
    cost: torch.Tensor
    full: bool



def score_clusters(
    queries: torch.Tensor,
    centroids: torch.Tensor,
    spreads: torch.Tensor,
    costs: torch.Tensor,
    *,
    rule: str,
    reduce: str,
    always_lse: torch.Tensor | None = None,
) -> torch.Tensor:
    """Score every cluster of every row against the row's queries.

    Args:
        queries: ``[R, Tq, num_qo_heads, D]`` float. Query head ``i`` reads KV head
            ``i // (num_qo_heads // num_kv_heads)`` (GQA, as in ``repeat_kv``).
        centroids: ``[R, C, num_kv_heads, D]`` float32 mean key per cluster.
        spreads: ``[R, C, num_kv_heads]`` float32 mean squared distance of members to the centroid.
        costs: ``[R, C]`` int64 tokens a cluster would add to the budget; ``<= 0`` marks a padded or
            fully already-attended cluster, which scores ``-inf``.
        rule: ``'centroid'`` (q·c/√D), ``'centroid_radius'`` ((q·c + |q|·r)/√D, r = RMS radius) or
            ``'size_weighted'``: the estimated share of each query's attention mass the cluster adds,
            ``softmax_c(log cost + q·c/√D + |q|²σ²/(2D))`` with ``σ² = spread/D`` (log-normal estimate
            of ``Σ_members exp(q·k/√D)``), divided by the cost after the reduction (mass per budget
            token: the greedy order of a fractional knapsack).
        reduce: ``'mean'`` or ``'max'`` over the Tq query tokens and all query heads of the row
            (one attended set serves every head of the row: a layer's KV heads, or one KV head's
            GQA group with ``selection_heads='per_kv_head'``, `select.heads_as_rows`).
        always_lse: ``'size_weighted'`` only, optional ``[R, num_kv_heads, Tq · group]`` float32: per query
            vector (`group_queries` order, ``j = t · group + g``) ``log Σ exp(q·k/√D)`` over the positions
            attended whatever is selected (`mass.always_log_mass`). Given, the share is of the query's
            *total* mass, ``exp(x_c) / (Σ_c' exp(x_c') + exp(A))``: a query whose sinks and text hold most of
            its attention weighs little in the reduction. None: the share among the clusters only.

    Returns:
        ``[R, C]`` float32 priorities per budget token, higher is better; ``-inf`` where ``costs <= 0``.
    """
    if queries.is_cuda:  # the Triton kernel (`mosaic_sglang.kernels.cluster_scoring`), held to this function by its tests
        from mosaic_sglang.kernels.cluster_scoring import cluster_scores

        return cluster_scores(queries, centroids, spreads, costs, rule=rule, reduce=reduce, always_lse=always_lse)
    if rule not in _RULES:
        raise ValueError(f"score rule: expected one of {list(_RULES)}, got {rule!r}")
    if reduce not in _REDUCES:
        raise ValueError(f"query reduce: expected one of {list(_REDUCES)}, got {reduce!r}")
    rows, tq, num_qo_heads, head_dim = queries.shape
    num_clusters, num_kv_heads = centroids.shape[1], centroids.shape[2]
    group = num_qo_heads // num_kv_heads
    if always_lse is not None and (rule != "size_weighted" or tuple(always_lse.shape) != (rows, num_kv_heads, tq * group)):
        raise ValueError(f"always_lse: expected [{rows}, {num_kv_heads}, {tq * group}] with rule='size_weighted', got "
                         f"{tuple(always_lse.shape)} with rule={rule!r}")
    valid = costs > 0  # [R, C]
    if num_clusters == 0:
        return centroids.new_zeros(rows, 0)
    scale = 1.0 / math.sqrt(head_dim)
    # [R, H, Tq*group, D]: the query vectors that read each KV head, one matmul for all rows and heads.
    q = group_queries(queries, num_kv_heads).transpose(2, 3).reshape(rows, num_kv_heads, tq * group, head_dim)
    logits = torch.matmul(q, centroids.permute(0, 2, 3, 1)) * scale  # [R, H, Tq*group, C]
    if rule == "centroid_radius":
        radius = spreads.clamp(min=0).sqrt().permute(0, 2, 1).unsqueeze(2)  # [R, H, 1, C]
        logits = logits + q.norm(dim=-1, keepdim=True) * radius * scale
    if rule == "size_weighted":
        logits = _log_mass(q, logits, spreads, costs, scale)
        # Per (query token, head): estimated attention share; rows with no valid cluster stay 0.
        if always_lse is None:
            logits = torch.softmax(logits, dim=-1).nan_to_num(0.0)
        else:
            total = torch.logaddexp(torch.logsumexp(logits, dim=-1), always_lse.float())  # [R, H, Tq*group]
            logits = torch.exp(logits - total[..., None]).nan_to_num(0.0)
    logits = logits.reshape(rows, -1, num_clusters)
    scores = logits.mean(dim=1) if reduce == "mean" else logits.amax(dim=1)
    if rule == "size_weighted":
        scores = scores / costs.clamp(min=1)
    return torch.where(valid, scores, torch.tensor(float("-inf"), device=scores.device))


def cluster_log_mass(queries: torch.Tensor, centroids: torch.Tensor, spreads: torch.Tensor,
                     costs: torch.Tensor) -> torch.Tensor:
    """The log-normal estimate of ``log Σ_members exp(q·k/√D)`` per cluster, per query vector.

    Args: as `score_clusters` (``costs`` count the members the estimate sums over).

    Returns:
        ``[R, num_kv_heads, Tq * group, C]`` float32 (the query vectors of each KV head in
        `group_queries` order); ``-inf`` where ``costs <= 0``.
    """
    rows, tq, num_qo_heads, head_dim = queries.shape
    num_clusters, num_kv_heads = centroids.shape[1], centroids.shape[2]
    group = num_qo_heads // num_kv_heads
    scale = 1.0 / math.sqrt(head_dim)
    q = group_queries(queries, num_kv_heads).transpose(2, 3).reshape(rows, num_kv_heads, tq * group, head_dim)
    if num_clusters == 0:
        return q.new_zeros(rows, num_kv_heads, tq * group, 0)
    logits = torch.matmul(q, centroids.float().permute(0, 2, 3, 1)) * scale  # [R, H, Tq*group, C]
    return _log_mass(q, logits, spreads, costs, scale)


def _log_mass(q, logits, spreads, costs, scale):
    """``log cost + q·c/√D + |q|²σ²/(2D)`` (``-inf`` where ``costs <= 0``) from the centroid logits."""
    head_dim = q.shape[-1]
    log_cost = costs.clamp(min=1).float().log()[:, None, None, :]  # [R, 1, 1, C]
    var_per_dim = spreads.float().clamp(min=0).permute(0, 2, 1).unsqueeze(2) / head_dim  # [R, H, 1, C]
    logits = logits + q.square().sum(-1, keepdim=True) * (scale * scale / 2) * var_per_dim
    neg_inf = torch.tensor(float("-inf"), device=logits.device)
    return torch.where((costs > 0)[:, None, None, :], logits + log_cost, neg_inf)
