"""Estimated attention-mass shares for ``budget_mode='mass'``: how much of a query's attention each
cluster would take, as a share of *everything* the query attends.

The always-attended positions (sinks, text, recent window) are attended whatever is selected, and their
keys are few, so their mass is computed exactly: ``A = log Σ_{k ∈ always} exp(q·k/√D)``. Each cluster's
mass is estimated from its summary (`cluster_log_mass`, the log-normal estimate `score_clusters` ranks
by). With ``C_c`` the clusters' log-masses, the share of cluster ``c`` is
``exp(C_c − logsumexp(A, C_1, …))`` and the always part's is ``exp(A − logsumexp(A, C_1, …))``, both
averaged over the row's query tokens and query heads (``query_reduce='mean'``). A layer whose sinks and
text already hold the target needs no cluster at all; a layer whose attention is spread over the video
needs many. A server passes the exact always part of each request (`always_log_mass` over the plan's always
positions, causal, the forward's own tokens included); offline the index estimates it from its own
always-attended keys, every query taken to see every one (`select.index_always_lse`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..retrieval.gqa import group_queries
from .scoring import cluster_log_mass

__all__ = ["MassShares", "mass_shares", "always_log_mass", "banded_log_mass"]

_LOGIT_ELEMENTS = 1 << 24
"""Most fp32 logits `always_log_mass` holds at once (64 MiB): query tokens are taken in chunks under it."""


class MassShares(NamedTuple):
    """Per row (``R`` rows, ``C`` clusters).

    Attributes:
        per_token: ``[R, C] float32`` estimated share of the total mass per budget token of each cluster
            (the greedy order of a fractional knapsack), ``-inf`` where ``costs <= 0``.
        covered: ``[R] float32`` share held by the always-attended positions.
    """

    per_token: torch.Tensor
    covered: torch.Tensor


def always_log_mass(queries: torch.Tensor, keys: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
    """``A = log Σ_{k ∈ always} exp(q·k/√D)`` per query vector: the exact attention mass of the positions a
    query attends whatever is selected (sinks, text, recent window, a forward's own tokens).

    Args:
        queries: ``[R, Tq, num_qo_heads, D]`` float.
        keys: ``[R, M, num_kv_heads, D]`` float keys of the always-attended positions of each row (``M`` may be 0).
        visible: optional ``[R or 1, Tq, M] bool``: query ``t`` sees key ``m`` (causality); default all.

    Returns:
        ``[R, num_kv_heads, Tq · group]`` float32 in `group_queries` order (``j = t · group + g``), what
        `score_clusters` takes as ``always_lse``; ``-inf`` for a query that sees none.
    """
    rows, tq, num_qo_heads, head_dim = queries.shape
    num_kv_heads, m = keys.shape[2], keys.shape[1]
    group = num_qo_heads // num_kv_heads
    q = group_queries(queries.float(), num_kv_heads).transpose(2, 3).reshape(rows, num_kv_heads, tq * group, head_dim)
    if m == 0:
        return q.new_full(q.shape[:-1], float("-inf"))
    k_t = keys.float().permute(0, 2, 3, 1) / math.sqrt(head_dim)  # [R, H, D, M]
    # query tokens in chunks: a prefill chunk's always part holds the chunk itself, so the logits would be
    # Tq x M per head at once (chunk sizes come from shapes: no host sync)
    step = max(1, _LOGIT_ELEMENTS // max(1, rows * num_qo_heads * m))
    out = []
    for t0 in range(0, tq, step):
        t1 = min(tq, t0 + step)
        logits = torch.matmul(q[:, :, t0 * group : t1 * group], k_t)  # [R, H, (t1 - t0)·group, M]
        if visible is not None:
            seen = visible[:, t0:t1].repeat_interleave(group, dim=1)[:, None]  # [R or 1, 1, (t1 - t0)·group, M]
            logits = logits.masked_fill(~seen, float("-inf"))
        out.append(torch.logsumexp(logits, dim=-1))
    return out[0] if len(out) == 1 else torch.cat(out, dim=-1)


def banded_log_mass(queries: torch.Tensor, keys: torch.Tensor, band: int) -> torch.Tensor:
    """``log Σ exp(q_t·k_s/√D)`` over ``t - band < s <= t``: query token ``t`` and key ``s`` are the same
    sequence's consecutive positions (a forward's own tokens), each query over its own last ``band`` keys,
    itself included. Blocked: O(Tq · band) logits, never Tq².

    Args:
        queries: ``[R, Tq, num_qo_heads, D]`` float; keys: ``[R, Tq, num_kv_heads, D]`` float; band >= 1.

    Returns:
        ``[R, num_kv_heads, Tq · group]`` float32, as `always_log_mass`.
    """
    tq = queries.shape[1]
    out = []
    for t0 in range(0, tq, band):
        t1, k0 = min(tq, t0 + band), max(0, t0 - band + 1)
        q_pos = torch.arange(t0, t1, device=keys.device)
        k_pos = torch.arange(k0, t1, device=keys.device)
        seen = (k_pos[None, :] <= q_pos[:, None]) & (k_pos[None, :] > q_pos[:, None] - band)  # [t1 - t0, t1 - k0]
        out.append(always_log_mass(queries[:, t0:t1], keys[:, k0:t1], seen[None]))
    return out[0] if len(out) == 1 else torch.cat(out, dim=-1)


def mass_shares(queries: torch.Tensor, centroids: torch.Tensor, spreads: torch.Tensor, costs: torch.Tensor,
                always_lse: torch.Tensor) -> MassShares:
    """Estimated shares of the attention mass (see the module docstring).

    Args:
        queries: ``[R, Tq, num_qo_heads, D]`` float.
        centroids, spreads, costs: the rows' cluster summaries, as `score_clusters`.
        always_lse: ``[R, num_kv_heads, Tq · group]`` float32, `always_log_mass` of the rows' always-attended
            positions.
    """
    log_mass = cluster_log_mass(queries, centroids, spreads, costs)  # [R, H, T, C]
    always = always_lse.float()
    clusters = torch.logsumexp(log_mass, dim=-1) if log_mass.shape[-1] else torch.full_like(always, float("-inf"))
    total = torch.logaddexp(always, clusters)[..., None]  # [R, H, T, 1]
    share = torch.exp(log_mass - total).nan_to_num(0.0).flatten(1, 2).mean(1)  # [R, C]
    covered = torch.exp(always[..., None] - total).nan_to_num(0.0).flatten(1, 3).mean(1)  # [R]
    per_token = torch.where(costs > 0, share / costs.clamp(min=1), torch.tensor(float("-inf"), device=share.device))
    return MassShares(per_token, covered)
