"""Triton exact budget fill without a sort: a unit's position in the walk is what the better units cost.

One program per (row, block of units). For unit ``i`` it sums the costs of the row's takeable units that
come before it in the walk (higher score, or the same score and a lower index: a stable descending
order), streaming the row in blocks, so ``before_i`` needs no sorted copy; then
``take_i = clamp(budget - before_i, 0, cost_i)``. O(U²) comparisons per row, in ``BLOCK × BLOCK``
tiles: cheap on a GPU for the few thousand clusters of a video, and free of host synchronisation.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["exact_fill_triton"]


@triton.jit
def _exact_fill_kernel(scores_ptr, costs_ptr, budget_ptr, take_ptr, num_units, stride_s, stride_c, stride_t,
                       BLOCK: tl.constexpr):
    row = tl.program_id(0)
    i = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    i_ok = i < num_units
    s_i = tl.load(scores_ptr + row * stride_s + i, mask=i_ok, other=float("-inf"))
    c_i = tl.load(costs_ptr + row * stride_c + i, mask=i_ok, other=0)
    ok_i = (s_i > float("-inf")) & (c_i > 0)
    before = tl.zeros([BLOCK], tl.int64)
    for j0 in range(0, num_units, BLOCK):
        j = j0 + tl.arange(0, BLOCK)
        j_ok = j < num_units
        s_j = tl.load(scores_ptr + row * stride_s + j, mask=j_ok, other=float("-inf"))
        c_j = tl.load(costs_ptr + row * stride_c + j, mask=j_ok, other=0)
        c_j = tl.where((s_j > float("-inf")) & (c_j > 0), c_j, 0)
        earlier = (s_j[None, :] > s_i[:, None]) | ((s_j[None, :] == s_i[:, None]) & (j[None, :] < i[:, None]))
        before += tl.sum(tl.where(earlier, c_j[None, :], 0), 1)
    budget = tl.load(budget_ptr + row)
    take = tl.minimum(c_i, tl.maximum(budget - before, 0))
    tl.store(take_ptr + row * stride_t + i, tl.where(ok_i, take, 0), mask=i_ok)


def exact_fill_triton(scores: torch.Tensor, costs: torch.Tensor, budget: torch.Tensor, *, out: torch.Tensor | None = None,
                      block: int = 64) -> torch.Tensor:
    """Same contract as `exact_fill_reference` (scores float32, costs/budget int64, one device); ``out``:
    an optional ``[R, U]`` int64 contiguous result buffer."""
    rows, num_units = scores.shape
    take = torch.empty(rows, num_units, dtype=torch.int64, device=scores.device) if out is None else out
    assert take.shape == (rows, num_units) and take.dtype == torch.int64 and take.is_contiguous(), "out: [R, U] int64"
    if rows == 0 or num_units == 0:
        return take
    scores = scores.float().contiguous()
    costs = costs.to(torch.int64).contiguous()
    budget = budget.to(scores.device, torch.int64).contiguous()
    _exact_fill_kernel[(rows, triton.cdiv(num_units, block))](
        scores, costs, budget, take, num_units, scores.stride(0), costs.stride(0), take.stride(0), BLOCK=block)
    return take
