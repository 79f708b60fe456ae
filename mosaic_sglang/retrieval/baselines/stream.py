"""What every baseline shares: the stream bookkeeping, query/head aggregation and unit budgeting.

Candidates are the positions *not* in `always_attended_mask`; a unit (frame, page, token) costs its
candidate tokens; the budget is filled by the one rule of `mosaic_sglang.retrieval.budget.fill_budget`
(the same as `ClusterIndex`'s), so budgets compare like for like.
"""

from __future__ import annotations

import torch

from ...config import MosaicConfig
from ..base import Retriever, Selection, always_attended_mask
from ..budget import fill_budget
from ..gqa import group_queries

__all__ = ["BaselineRetriever", "fill_units", "reduce_scores", "grouped_query_rows"]


class BaselineRetriever(Retriever):
    """Shared stream state: shapes, validation, frame ids, and the final CSR build.

    Subclasses implement `_observe(keys, frame_ids, start)` and `select`.
    """

    def __init__(self, config: MosaicConfig, *, num_layers: int, num_kv_heads: int, head_dim: int) -> None:
        for name, value in (("num_layers", num_layers), ("num_kv_heads", num_kv_heads), ("head_dim", head_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{type(self).__name__}: expected {name} to be an integer >= 1, got {value!r}")
        self.config = config
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self._frame_chunks: list[torch.Tensor] = []
        self._n = 0

    @property
    def num_tokens(self) -> int:
        return self._n

    @property
    def frame_ids(self) -> torch.Tensor:
        """``[N] int64`` frame id of every position appended so far (``-1`` for text)."""
        if len(self._frame_chunks) != 1:
            self._frame_chunks = [torch.cat(self._frame_chunks) if self._frame_chunks else torch.empty(0, dtype=torch.int64)]
        return self._frame_chunks[0]

    def append(self, keys: torch.Tensor, frame_ids: torch.Tensor) -> None:
        shape = (self.num_layers, keys.shape[1] if keys.dim() == 4 else -1, self.num_kv_heads, self.head_dim)
        if keys.dim() != 4 or tuple(keys.shape) != shape:
            raise ValueError(
                f"{type(self).__name__}.append: expected keys [num_layers={self.num_layers}, T, "
                f"num_kv_heads={self.num_kv_heads}, head_dim={self.head_dim}], got {tuple(keys.shape)}"
            )
        if frame_ids.shape != (keys.shape[1],):
            raise ValueError(
                f"{type(self).__name__}.append: expected frame_ids [T={keys.shape[1]}], got {tuple(frame_ids.shape)}"
            )
        frame_ids = frame_ids.to(torch.int64)
        if keys.shape[1] == 0:
            return
        self._observe(keys, frame_ids, self._n)
        self._frame_chunks.append(frame_ids)
        self._n += keys.shape[1]

    def _observe(self, keys: torch.Tensor, frame_ids: torch.Tensor, start: int) -> None:
        """Update summaries with ``keys [L, T, Hkv, D]`` at positions ``start .. start+T-1``."""
        raise NotImplementedError

    def _check_queries(self, queries: torch.Tensor) -> None:
        if queries.dim() != 4 or queries.shape[0] != self.num_layers or queries.shape[3] != self.head_dim:
            raise ValueError(
                f"{type(self).__name__}.select: expected queries [num_layers={self.num_layers}, Tq, "
                f"num_qo_heads, head_dim={self.head_dim}], got {tuple(queries.shape)}"
            )
        if queries.shape[2] % self.num_kv_heads != 0:
            raise ValueError(
                f"{type(self).__name__}.select: num_qo_heads={queries.shape[2]} must be a multiple of "
                f"num_kv_heads={self.num_kv_heads}"
            )
        if self._n == 0:
            raise ValueError(f"{type(self).__name__}.select: nothing appended yet")

    def _always_and_candidates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(always [N] bool, candidate [N] bool)`` for the current stream."""
        always = always_attended_mask(self.frame_ids, self.config)
        return always, ~always

    def _selection(self, chosen: torch.Tensor, always: torch.Tensor, num_units: torch.Tensor) -> Selection:
        """CSR `Selection` from ``chosen [L, N] bool`` ∪ ``always [N] bool``."""
        return Selection.from_mask(chosen | always[None, :], num_units)


def grouped_query_rows(queries: torch.Tensor, num_kv_heads: int) -> torch.Tensor:
    """``[L, Tq, Hq, D]`` → ``[L, Hkv, (Hq/Hkv)·Tq, D]`` float32: `group_queries` with (group, Tq) flattened."""
    return group_queries(queries, num_kv_heads).flatten(2, 3)


def reduce_scores(scores: torch.Tensor, how: str) -> torch.Tensor:
    """Aggregate ``[L, Hkv, R, U]`` per-(KV head, query row) scores into ``[L, U]`` ('mean' or 'max')."""
    if how == "max":
        return scores.amax(dim=(1, 2))
    if how == "mean":
        return scores.mean(dim=(1, 2))
    raise ValueError(f"reduce_scores: expected 'mean' or 'max', got {how!r}")


def fill_units(
    unit_scores: torch.Tensor, unit_of: torch.Tensor, candidate: torch.Tensor, budget: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill the token budget with the best whole units, per layer (`fill_budget` over unit costs).

    Args:
        unit_scores: ``[L, U] float`` score of each unit per layer (higher is better).
        unit_of: ``[N] int64`` unit of each position, ``-1`` for none.
        candidate: ``[N] bool`` positions that count against the budget.
        budget: tokens to fill per layer.

    Returns:
        ``(chosen [L, N] bool, num_units [L] int64)``: the chosen candidate positions (at most ``budget``
        per layer) and the number of units they come from.

    Example:
        >>> chosen, n = fill_units(torch.tensor([[3.0, 1.0, 2.0]]), torch.tensor([0, 0, 0, 0, 1, 2, 2]),
        ...                        torch.ones(7, dtype=torch.bool), 6)
        >>> chosen.nonzero()[:, 1].tolist(), n.tolist()
        ([0, 1, 2, 3, 5, 6], [2])
    """
    num_layers, num_units = unit_scores.shape
    in_unit = candidate & (unit_of >= 0)
    unit_safe = unit_of.clamp_min(0)
    cost = torch.bincount(unit_safe[in_unit], minlength=num_units)  # [U]
    take = fill_budget(unit_scores.float(), cost[None, :].expand(num_layers, -1), budget)  # [L, U]
    chosen = in_unit[None, :] & take[:, unit_safe]
    return chosen, take.sum(1)
