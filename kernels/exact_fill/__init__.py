"""Exact budget fill: tokens to take per unit (cluster) so each row takes exactly
``min(budget, Σ takeable costs)`` — whole units by score, the boundary unit truncated.

`exact_fill` dispatches: the sort-free Triton kernel (`triton.py`) for CUDA tensors or with
``impl='triton'`` (interpreter tests), the plain-walk reference (`reference.py`) otherwise. The serving
path's torch version is `mosaic_sglang.retrieval.budget.fill_budget_exact` (sort + cumsum); the kernel
tests hold all three to the same result.
"""

from __future__ import annotations

from .reference import exact_fill_reference

__all__ = ["exact_fill", "exact_fill_reference"]


def exact_fill(scores, costs, budget, *, out=None, impl: str | None = None):
    """See `exact_fill_reference`; ``impl``: None (by device), 'triton' or 'reference'; ``out``: an optional
    ``[R, U]`` int64 result buffer (Triton)."""
    impl = impl or ("triton" if scores.is_cuda else "reference")
    if impl == "triton":
        from .triton import exact_fill_triton  # imports triton: only when used

        return exact_fill_triton(scores, costs, budget, out=out)
    if impl != "reference":
        raise ValueError(f"exact_fill: impl: expected None, 'triton' or 'reference', got {impl!r}")
    take = exact_fill_reference(scores, costs, budget)
    return take if out is None else out.copy_(take)
