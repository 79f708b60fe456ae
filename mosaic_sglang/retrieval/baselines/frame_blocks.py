"""`FrameBlockRetriever`: ReKV-style retrieval with one block per frame and a mean-key summary."""

from __future__ import annotations

import torch

from ...config import MosaicConfig
from ..base import Selection
from .stream import BaselineRetriever, fill_units, grouped_query_rows, reduce_scores

__all__ = ["FrameBlockRetriever"]


class FrameBlockRetriever(BaselineRetriever):
    """Blocks = frames; each block is summarised per layer and KV head by the mean of its keys.

    Score of frame ``f`` at a layer: ``q · mean_k(f) / √D`` per (query head, query token), aggregated by
    ``config.query_reduce``; frames are taken best-first until the budget is filled (rule in `mosaic_sglang.retrieval.budget`).
    Text tokens (``frame_id < 0``) belong to no frame. Summaries are running key sums, ``O(1)`` per token,
    so a frame split across two `append` calls is one block.

    State: ``sums [L, Hkv, F, D] float32`` (score-ready layout), ``counts [F] int64``, the unit of each position ``[N]``.
    ``num_units`` = frames chosen.

    Example:
        >>> r = FrameBlockRetriever(MosaicConfig(budget=2, sink_tokens=0, recent_window=0),
        ...                         num_layers=1, num_kv_heads=1, head_dim=2)
        >>> k = torch.tensor([[1., 0.], [1., 0.], [0., 1.], [0., 1.]]).reshape(1, 4, 1, 2)
        >>> r.append(k, torch.tensor([0, 0, 1, 1]))
        >>> r.select(torch.tensor([0., 1.]).reshape(1, 1, 1, 2)).indices.tolist()
        [2, 3]
    """

    def __init__(self, config: MosaicConfig, *, num_layers: int, num_kv_heads: int, head_dim: int) -> None:
        super().__init__(config, num_layers=num_layers, num_kv_heads=num_kv_heads, head_dim=head_dim)
        self._sums = torch.zeros(num_layers, num_kv_heads, 0, head_dim)
        self._counts = torch.zeros(0, dtype=torch.int64)
        self._last_frame = -1
        self._unit_chunks: list[torch.Tensor] = []

    @property
    def num_frames(self) -> int:
        return self._counts.numel()

    def _observe(self, keys: torch.Tensor, frame_ids: torch.Tensor, start: int) -> None:
        visual = frame_ids >= 0
        vis_ids = frame_ids[visual]
        if vis_ids.numel() and (bool((vis_ids[1:] < vis_ids[:-1]).any()) or int(vis_ids[0]) < self._last_frame):
            raise ValueError(f"{type(self).__name__}.append: frame_ids of visual tokens must be non-decreasing")
        unit = torch.full_like(frame_ids, -1)
        if vis_ids.numel():
            uniq, local = torch.unique_consecutive(vis_ids, return_inverse=True)
            continues = int(uniq[0]) == self._last_frame  # the stream's last frame goes on in this chunk
            base = self.num_frames - 1 if continues else self.num_frames
            new_frames = uniq.numel() - int(continues)
            grow = self._sums.new_zeros(self.num_layers, self.num_kv_heads, new_frames, self.head_dim)
            self._sums = torch.cat([self._sums, grow], 2)
            self._counts = torch.cat([self._counts, self._counts.new_zeros(new_frames)])
            unit[visual] = base + local
            self._sums.index_add_(2, base + local, keys[:, visual].float().transpose(1, 2))
            self._counts.index_add_(0, base + local, torch.ones_like(local))
            self._last_frame = int(uniq[-1])
        self._unit_chunks.append(unit)

    def _unit_of(self) -> torch.Tensor:
        if len(self._unit_chunks) != 1:
            self._unit_chunks = [torch.cat(self._unit_chunks)]
        return self._unit_chunks[0]

    def select(self, queries: torch.Tensor) -> Selection:
        self._check_queries(queries)
        always, candidate = self._always_and_candidates()
        q = grouped_query_rows(queries, self.num_kv_heads)  # [L, Hkv, R, D]
        # q · mean = (q · sum) / count: no per-select copy of the summaries.
        dots = (q @ self._sums.transpose(-1, -2)) / self._counts.clamp_min(1)  # [L, Hkv, R, F]
        scores = reduce_scores(dots * self.head_dim**-0.5, self.config.query_reduce)  # [L, F]
        chosen, num_units = fill_units(scores, self._unit_of(), candidate, self.config.budget)
        return self._selection(chosen, always, num_units)
