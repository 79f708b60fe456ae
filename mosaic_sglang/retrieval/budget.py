"""The one budget rule, shared by `ClusterIndex` and every baseline so budgets compare like for like.

Units (clusters, frames, pages, tokens) are walked in descending score order and taken while their
cumulative cost fits the budget, stopping at the first unit that does not fit: a prefix of the ranking
(one sort and one cumsum, no loop over units). So at most ``budget`` tokens are attended beyond the
always-attended set, the unused remainder is below one unit's cost (coarse units waste more of it),
and units that cost nothing (no candidate token, or padding) are never taken. `fill_budget_exact` takes
the same prefix and then fills the remainder from the boundary unit, so it uses the budget exactly.
`mass_budget` sets a row's budget from a mass target instead (``MosaicConfig.budget_mode = "mass"``).
"""

from __future__ import annotations

import torch

__all__ = ["fill_budget", "fill_budget_exact", "mass_budget", "FILL_RULES"]

FILL_RULES = ("exact", "whole")
"""``'exact'``: whole units by rank, then the boundary unit truncated, so exactly ``min(budget, total cost)``
tokens are taken (every layer of a sequence then attends the same number of tokens: one attention plan
serves all layers). ``'whole'``: whole units only, stopping at the first that does not fit."""


def fill_budget(scores: torch.Tensor, costs: torch.Tensor, budget: int | torch.Tensor) -> torch.Tensor:
    """Take units in descending score order while their cumulative cost fits the budget (per row).

    Args:
        scores: ``[R, U]`` float, ``-inf`` for units that must not be taken.
        costs: ``[R, U]`` int64 tokens each unit adds (``<= 0``: never taken).
        budget: int, or ``[R] int64`` per row.

    Returns:
        ``[R, U]`` bool, chosen units; per row ``costs[chosen].sum() <= budget``.

    Example:
        >>> fill_budget(torch.tensor([[3.0, 1.0, 2.0]]), torch.tensor([[4, 1, 2]]), 6)
        tensor([[ True, False,  True]])
    """
    order = torch.argsort(scores, dim=1, descending=True, stable=True)  # [R, U]
    sorted_scores = scores.gather(1, order)
    sorted_costs = costs.gather(1, order)
    takeable = torch.isfinite(sorted_scores) & (sorted_costs > 0)
    cumulative = torch.cumsum(torch.where(takeable, sorted_costs, 0), dim=1)
    limit = budget if isinstance(budget, int) else budget.to(costs.dtype)[:, None]
    # Prefix only: once a unit does not fit, later ones are not taken either (cumsum is monotone).
    take = takeable & (cumulative <= limit)
    return torch.zeros_like(take).scatter_(1, order, take)


def fill_budget_exact(scores: torch.Tensor, costs: torch.Tensor, budget: int | torch.Tensor) -> torch.Tensor:
    """Tokens to take from each unit: whole units in descending score order, then the first unit that
    does not fit truncated to the remainder, so each row takes exactly ``min(budget, Σ takeable costs)``.

    The whole units are `fill_budget`'s (the same prefix of the ranking); at most one unit per row is
    partial. Which of its tokens are taken is the caller's rule (`ClusterIndex`: lowest positions first).

    Args:
        scores: ``[R, U]`` float, ``-inf`` for units that must not be taken.
        costs: ``[R, U]`` int64 tokens each unit adds (``<= 0``: never taken).
        budget: int, or ``[R] int64`` per row.

    Returns:
        ``[R, U]`` int64 in ``[0, costs]``: tokens taken per unit.

    Example:
        >>> fill_budget_exact(torch.tensor([[3.0, 1.0, 2.0]]), torch.tensor([[4, 1, 3]]), 6)
        tensor([[4, 0, 2]])
    """
    if scores.is_cuda:  # the sort-free Triton kernel (`mosaic_sglang.kernels.exact_fill`), held to this by its tests
        from mosaic_sglang.kernels.exact_fill import exact_fill

        per_row = budget if torch.is_tensor(budget) else torch.full(  # a device fill: no host copy
            (scores.shape[0],), budget, dtype=torch.int64, device=scores.device)
        return exact_fill(scores, costs, per_row)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)  # [R, U]
    sorted_costs = costs.gather(1, order)
    takeable = torch.isfinite(scores.gather(1, order)) & (sorted_costs > 0)
    sorted_costs = torch.where(takeable, sorted_costs, 0)
    before = torch.cumsum(sorted_costs, dim=1) - sorted_costs  # tokens taken by better units
    limit = budget if isinstance(budget, int) else budget.to(costs.dtype)[:, None]
    take = torch.minimum(sorted_costs, (limit - before).clamp(min=0))
    return torch.zeros_like(take).scatter_(1, order, take)


def mass_budget(scores: torch.Tensor, costs: torch.Tensor, target: float, cap: int | torch.Tensor,
                covered: torch.Tensor) -> torch.Tensor:
    """Per row, the tokens of the shortest prefix of the ranking whose estimated mass reaches ``target``
    of the row's total, at most ``cap`` (the token budget).

    ``scores`` are estimated mass per token (`score_clusters`' ``size_weighted`` rule), so a unit's mass
    is ``score × cost`` and the ranking is the greedy order of a fractional knapsack: the prefix is the
    fewest tokens reaching the target among prefixes of that order. The unit that crosses the target is
    counted whole. The scores are shares of a total that also holds what is attended anyway (``covered``
    of it, `mass_shares`): the prefix stops as soon as ``covered`` plus the units' mass reaches the
    target (nothing when ``covered`` alone does).

    Args:
        scores: ``[R, U]`` float, ``-inf`` for units that must not be taken.
        costs: ``[R, U]`` int64 tokens each unit adds (``<= 0``: never taken).
        target: share of the estimated mass in ``(0, 1]``.
        cap: int, or ``[R] int64`` per row.
        covered: ``[R]`` float, the share already attended (see above).

    Returns:
        ``[R] int64`` budgets, to fill with `fill_budget_exact` (which then takes exactly that prefix).

    Example:
        >>> mass_budget(torch.tensor([[0.05, 0.25, 0.05]]), torch.tensor([[4, 2, 4]]), 0.7, 100,
        ...             covered=torch.tensor([0.1]))   # masses 0.2, 0.5, 0.2 + 0.1 attended anyway
        tensor([6])
    """
    order = torch.argsort(scores, dim=1, descending=True, stable=True)  # [R, U]
    sorted_scores = scores.gather(1, order)
    sorted_costs = costs.gather(1, order)
    takeable = torch.isfinite(sorted_scores) & (sorted_costs > 0)
    mass = torch.where(takeable, sorted_scores.double().clamp(min=0) * sorted_costs, 0.0)  # [R, U]
    before = torch.cumsum(mass, dim=1) - mass  # mass of the better units
    needed = takeable & (mass > 0) & (before + covered.double()[:, None] < target)
    tokens = torch.where(needed, sorted_costs, 0).sum(dim=1)  # [R]
    limit = torch.as_tensor(cap, dtype=tokens.dtype, device=tokens.device)
    return torch.minimum(tokens, limit)
