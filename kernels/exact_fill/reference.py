"""Pure-torch reference of the exact budget fill, written as the plain walk it stands for."""

from __future__ import annotations

import math

import torch

__all__ = ["exact_fill_reference"]


def exact_fill_reference(scores: torch.Tensor, costs: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
    """Per row, walk units best score first (ties: lower index first) and take each unit's tokens while
    the budget lasts; the unit that does not fit whole gives the remainder, later units nothing.

    Args:
        scores: ``[R, U]`` float, ``-inf`` for units that must not be taken.
        costs: ``[R, U]`` int64 tokens per unit (``<= 0``: never taken).
        budget: ``[R]`` int64 tokens per row.

    Returns:
        ``[R, U]`` int64 tokens taken per unit; each row sums to ``min(budget, Σ takeable costs)``.
    """
    take = torch.zeros_like(costs)
    for r in range(scores.shape[0]):
        left = int(budget[r])
        order = sorted(range(scores.shape[1]), key=lambda u: (-float(scores[r, u]), u))
        for u in order:
            score, cost = float(scores[r, u]), int(costs[r, u])
            if left <= 0 or cost <= 0 or math.isinf(score) and score < 0:
                continue
            take[r, u] = min(cost, left)
            left -= take[r, u]
    return take
