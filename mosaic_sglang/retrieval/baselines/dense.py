"""`DenseRetriever`: attend everything (the exactness reference; no retrieval at all)."""

from __future__ import annotations

import torch

from ..base import Selection
from .stream import BaselineRetriever

__all__ = ["DenseRetriever"]


class DenseRetriever(BaselineRetriever):
    """Every position at every layer, regardless of the budget.

    ``num_units`` counts the candidate tokens it attends (token granularity: a dense cache moves all).

    Example:
        >>> from mosaic_sglang.config import MosaicConfig
        >>> r = DenseRetriever(MosaicConfig(budget=1), num_layers=2, num_kv_heads=1, head_dim=4)
        >>> r.append(torch.zeros(2, 10, 1, 4), torch.zeros(10, dtype=torch.int64))
        >>> r.select(torch.zeros(2, 1, 1, 4)).sizes().tolist()
        [10, 10]
    """

    def _observe(self, keys: torch.Tensor, frame_ids: torch.Tensor, start: int) -> None:
        pass  # nothing to summarise

    def select(self, queries: torch.Tensor) -> Selection:
        self._check_queries(queries)
        always, candidate = self._always_and_candidates()
        chosen = candidate[None, :].expand(self.num_layers, -1)
        num_units = torch.full((self.num_layers,), int(candidate.sum()), dtype=torch.int64)
        return self._selection(chosen, always, num_units)
