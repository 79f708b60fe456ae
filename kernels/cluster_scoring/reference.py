"""Pure-torch reference of cluster scoring with GQA aggregation: the priority of every cluster of every row
against the row's queries, written as plain loops over rows and query heads (fp32 throughout), so it can
be read against ``mosaic_sglang/clusters/README.md`` ("Scoring and selection") line by line.

It computes what the serving path's `mosaic_sglang.clusters.scoring.score_clusters` computes (the kernel
tests hold the two, and the Triton kernel, to the same result), plus an optional per-row cluster count
``num_clusters``: clusters at or past it are padding, exactly as if their cost were 0.
"""

from __future__ import annotations

import math

import torch

__all__ = ["RULES", "REDUCES", "check_inputs", "cluster_scores_reference"]

RULES = ("centroid", "centroid_radius", "size_weighted")
REDUCES = ("mean", "max")


def check_inputs(queries, centroids, spreads, costs, rule, reduce, num_clusters, out, always_lse=None) -> None:
    """Raise ValueError (expected, got) for a bad rule, reduce or shape; reads shapes only (no host sync)."""
    if rule not in RULES:
        raise ValueError(f"score rule: expected one of {list(RULES)}, got {rule!r}")
    if reduce not in REDUCES:
        raise ValueError(f"query reduce: expected one of {list(REDUCES)}, got {reduce!r}")
    if queries.dim() != 4 or centroids.dim() != 4:
        raise ValueError(f"queries [R, Tq, Hq, D] and centroids [R, C, Hkv, D]: got {tuple(queries.shape)} "
                         f"and {tuple(centroids.shape)}")
    rows, tq, num_qo_heads, head_dim = queries.shape
    _, num_cl, num_kv_heads, centroid_dim = centroids.shape
    if centroids.shape[0] != rows or centroid_dim != head_dim:
        raise ValueError(f"centroids: expected [{rows}, C, Hkv, {head_dim}], got {tuple(centroids.shape)}")
    if tq == 0:
        raise ValueError("queries: expected at least one query token (Tq >= 1), got Tq = 0")
    if num_kv_heads == 0 or num_qo_heads % num_kv_heads:
        raise ValueError(f"num_qo_heads={num_qo_heads} must be a positive multiple of num_kv_heads={num_kv_heads}")
    if tuple(spreads.shape) != (rows, num_cl, num_kv_heads):
        raise ValueError(f"spreads: expected [{rows}, {num_cl}, {num_kv_heads}], got {tuple(spreads.shape)}")
    if tuple(costs.shape) != (rows, num_cl):
        raise ValueError(f"costs: expected [{rows}, {num_cl}], got {tuple(costs.shape)}")
    if num_clusters is not None and tuple(num_clusters.shape) != (rows,):
        raise ValueError(f"num_clusters: expected [{rows}] int64, got {tuple(num_clusters.shape)}")
    if out is not None and (tuple(out.shape) != (rows, num_cl) or out.dtype != torch.float32):
        raise ValueError(f"out: expected [{rows}, {num_cl}] float32, got {tuple(out.shape)} {out.dtype}")
    if always_lse is not None:
        want = (rows, num_kv_heads, tq * (num_qo_heads // num_kv_heads))
        if rule != "size_weighted" or tuple(always_lse.shape) != want:
            raise ValueError(f"always_lse: expected [{want[0]}, {want[1]}, {want[2]}] with rule='size_weighted', got "
                             f"{tuple(always_lse.shape)} with rule={rule!r}")


def cluster_scores_reference(
    queries: torch.Tensor,
    centroids: torch.Tensor,
    spreads: torch.Tensor,
    costs: torch.Tensor,
    *,
    rule: str,
    reduce: str,
    num_clusters: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    always_lse: torch.Tensor | None = None,
) -> torch.Tensor:
    """Score every cluster of every row against the row's queries (see `score_clusters` for the maths).

    Args:
        queries: ``[R, Tq, num_qo_heads, D]`` float32 / float16 / bfloat16. Query head ``i`` reads KV head
            ``i // (num_qo_heads // num_kv_heads)``.
        centroids: ``[R, C, num_kv_heads, D]`` float32 (float16 / bfloat16 accepted) mean key per cluster.
        spreads: ``[R, C, num_kv_heads]`` float mean squared distance of the members to the centroid.
        costs: ``[R, C]`` int64 budget tokens per cluster; ``<= 0`` marks padding, which scores ``-inf``.
        rule: ``'centroid'``, ``'centroid_radius'`` or ``'size_weighted'``.
        reduce: ``'mean'`` or ``'max'`` over the ``Tq`` query tokens and all query heads of a row.
        num_clusters: optional ``[R]`` int64; clusters at index ``>= num_clusters[r]`` are padding.
        out: optional ``[R, C]`` float32 result buffer.
        always_lse: optional ``[R, num_kv_heads, Tq · group]`` float32 (``'size_weighted'``): per query vector
            ``j = t · group + g`` of KV head ``h``, ``log Σ exp(q·k/√D)`` over the always-attended keys; the
            softmax's denominator then adds ``exp(always_lse)`` (the share of the query's total mass).

    Returns:
        ``[R, C]`` float32 priorities (higher is better), ``-inf`` at padding.

    Example:
        >>> q = torch.ones(1, 1, 2, 4); c = torch.eye(4)[None, :2, None, :]   # 2 clusters, 1 KV head
        >>> cluster_scores_reference(q, c, torch.zeros(1, 2, 1), torch.tensor([[3, 0]]),
        ...                          rule="centroid", reduce="mean").tolist()
        [[0.5, -inf]]
    """
    check_inputs(queries, centroids, spreads, costs, rule, reduce, num_clusters, out, always_lse)
    rows, tq, num_qo_heads, head_dim = queries.shape
    num_cl, num_kv_heads = centroids.shape[1], centroids.shape[2]
    group = num_qo_heads // num_kv_heads
    scale = 1.0 / math.sqrt(head_dim)
    result = torch.empty(rows, num_cl, dtype=torch.float32, device=queries.device)
    for r in range(rows):
        cost = costs[r]  # [C]
        valid = cost > 0  # [C]
        if num_clusters is not None:
            valid &= torch.arange(num_cl, device=cost.device) < num_clusters[r]
        log_cost = cost.clamp(min=1).float().log()  # [C]
        per_head = []  # one [Tq, C] block per query head
        for head in range(num_qo_heads):
            kv_head = head // group
            q = queries[r, :, head].float()  # [Tq, D]
            c = centroids[r, :, kv_head].float()  # [C, D]
            spread = spreads[r, :, kv_head].float().clamp(min=0)  # [C]
            logits = q @ c.T * scale  # [Tq, C]
            if rule == "centroid_radius":  # (q·c + |q|·r) / √D, r = RMS radius
                logits = logits + q.norm(dim=1, keepdim=True) * spread.sqrt() * scale
            if rule == "size_weighted":  # log-normal estimate of log Σ_members exp(q·k/√D), then softmax_c
                q_sq = q.square().sum(dim=1, keepdim=True)  # [Tq, 1]
                logits = logits + q_sq * (scale * scale / 2) * (spread / head_dim) + log_cost
                logits = logits.masked_fill(~valid, float("-inf"))
                if always_lse is not None:  # the share of the query's total mass, the always part included
                    always = always_lse[r, kv_head].float().view(tq, group)[:, head % group]  # [Tq]
                    total = torch.logaddexp(torch.logsumexp(logits, dim=1), always)  # [Tq]
                    logits = torch.exp(logits - total[:, None]).nan_to_num(0.0)
                else:  # a row with no valid cluster has no attention to share: zeros, not NaN
                    logits = torch.softmax(logits, dim=1) if bool(valid.any()) else torch.zeros_like(logits)
            per_head.append(logits)
        per_query = torch.cat(per_head)  # [Hq * Tq, C]: every query vector of the row
        score = per_query.mean(dim=0) if reduce == "mean" else per_query.amax(dim=0)  # [C]
        if rule == "size_weighted":  # attention mass per budget token
            score = score / cost.clamp(min=1)
        result[r] = torch.where(valid, score, float("-inf"))
    return result if out is None else out.copy_(result)
