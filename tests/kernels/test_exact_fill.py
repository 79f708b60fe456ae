"""`exact_fill` Triton kernel vs its plain-walk reference and the serving path's sort+cumsum version, on
seeded odd shapes: ties, -inf scores, zero costs, budgets of 0 / mid / above everything, one unit, more
units than one block. Outputs are poisoned (-7) first, so an unwritten unit fails."""

from __future__ import annotations

import pytest
import torch

from kernel_support import DEVICE
from mosaic_sglang.kernels.exact_fill import exact_fill, exact_fill_reference
from mosaic_sglang.retrieval.budget import fill_budget_exact

CASES = [(1, 1), (3, 17), (2, 63), (4, 130), (2, 257)]  # (rows, units)


@pytest.mark.parametrize("rows, units", CASES, ids=[f"R{r}-U{u}" for r, u in CASES])
def test_triton_equals_reference_and_serving_fill(rows, units):
    gen = torch.Generator().manual_seed(rows * 1000 + units)
    scores = torch.randint(0, 5, (rows, units), generator=gen).float()  # many ties on purpose
    scores[torch.rand(rows, units, generator=gen) < 0.15] = float("-inf")
    costs = torch.randint(0, 9, (rows, units), generator=gen)  # zero-cost units included
    total = torch.where(torch.isfinite(scores) & (costs > 0), costs, 0).sum(1)
    budget = torch.stack([torch.tensor(0), total[1 % rows] // 2, total.max() + 5])[torch.arange(rows) % 3]
    want = exact_fill_reference(scores, costs, budget)
    assert torch.equal(fill_budget_exact(scores, costs, budget), want)  # the serving path's version
    assert torch.equal(want.sum(1), torch.minimum(budget, total))  # exactly the budget, or everything
    out = torch.full((rows, units), -7, dtype=torch.int64, device=DEVICE)
    got = exact_fill(scores.to(DEVICE), costs.to(DEVICE), budget.to(DEVICE), out=out, impl="triton")
    assert got.data_ptr() == out.data_ptr() and torch.equal(got.cpu(), want)
    # the serving fill on the device (CUDA: it dispatches to the kernel; an int budget too)
    assert torch.equal(fill_budget_exact(scores.to(DEVICE), costs.to(DEVICE), budget.to(DEVICE)).cpu(), want)
    assert torch.equal(fill_budget_exact(scores.to(DEVICE), costs.to(DEVICE), int(budget[0])).cpu(),
                       exact_fill_reference(scores, costs, budget[:1].expand(rows)))
