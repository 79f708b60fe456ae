"""`QuestPageRetriever`: Quest-style pages of consecutive tokens with per-channel min/max key bounds."""

from __future__ import annotations

import torch

from ...config import MosaicConfig
from ..base import Selection
from .stream import BaselineRetriever, fill_units, grouped_query_rows, reduce_scores

__all__ = ["QuestPageRetriever", "QUEST_PAGE_SIZE"]

QUEST_PAGE_SIZE = 16
"""Tokens per page: Quest's default page size (Tang et al., 2024, §4)."""


class QuestPageRetriever(BaselineRetriever):
    """Pages of ``page_size`` consecutive positions (text included, as in a paged KV cache).

    Each page keeps per layer, KV head and channel the min ``m`` and max ``M`` of its keys. Quest's upper
    bound of ``q·k`` over the page: ``Σ_d max(q_d m_d, q_d M_d) = relu(q)·M + min(q, 0)·m`` (two matmuls),
    scaled by ``1/√D`` and aggregated over heads and query tokens by ``config.query_reduce``. Pages are
    taken best-first until the budget is filled; a page costs only its candidate tokens (rule in `mosaic_sglang.retrieval.budget`).

    State: ``key_min, key_max [L, Hkv, P, D]`` in fp32 (score-ready layout: no copy per select). ``num_units`` = pages chosen.

    Example:
        >>> r = QuestPageRetriever(MosaicConfig(budget=2, sink_tokens=0, recent_window=0),
        ...                        num_layers=1, num_kv_heads=1, head_dim=2, page_size=2)
        >>> k = torch.tensor([[1., 0.], [1., 0.], [0., 1.], [0., 1.]]).reshape(1, 4, 1, 2)
        >>> r.append(k, torch.zeros(4, dtype=torch.int64))
        >>> r.select(torch.tensor([0., 1.]).reshape(1, 1, 1, 2)).indices.tolist()
        [2, 3]
    """

    def __init__(
        self,
        config: MosaicConfig,
        *,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        page_size: int = QUEST_PAGE_SIZE,
    ) -> None:
        super().__init__(config, num_layers=num_layers, num_kv_heads=num_kv_heads, head_dim=head_dim)
        if page_size < 1:
            raise ValueError(f"{type(self).__name__}: expected page_size >= 1, got {page_size!r}")
        self.page_size = page_size
        self._min = torch.zeros(num_layers, num_kv_heads, 0, head_dim)
        self._max = torch.zeros(num_layers, num_kv_heads, 0, head_dim)

    @property
    def num_pages(self) -> int:
        return self._min.shape[2]

    def _observe(self, keys: torch.Tensor, frame_ids: torch.Tensor, start: int) -> None:
        t = keys.shape[1]
        pages = -(-(start + t) // self.page_size)  # ceil
        grow = pages - self.num_pages
        if grow > 0:
            shape = (self.num_layers, self.num_kv_heads, grow, self.head_dim)
            self._min = torch.cat([self._min, torch.full(shape, float("inf"))], 2)
            self._max = torch.cat([self._max, torch.full(shape, float("-inf"))], 2)
        k = keys.float().transpose(1, 2)  # [L, Hkv, T, D]
        page = (torch.arange(start, start + t) // self.page_size)[None, None, :, None].expand_as(k)
        self._min.scatter_reduce_(2, page, k, "amin", include_self=True)
        self._max.scatter_reduce_(2, page, k, "amax", include_self=True)

    def select(self, queries: torch.Tensor) -> Selection:
        self._check_queries(queries)
        always, candidate = self._always_and_candidates()
        q = grouped_query_rows(queries, self.num_kv_heads)  # [L, Hkv, R, D]
        upper = q.clamp_min(0) @ self._max.transpose(-1, -2) + q.clamp_max(0) @ self._min.transpose(-1, -2)  # [L, Hkv, R, P]
        scores = reduce_scores(upper * self.head_dim**-0.5, self.config.query_reduce)  # [L, P]
        unit_of = torch.arange(self._n) // self.page_size
        chosen, num_units = fill_units(scores, unit_of, candidate, self.config.budget)
        return self._selection(chosen, always, num_units)
