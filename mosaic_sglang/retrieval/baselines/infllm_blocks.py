"""`InfLLMBlockRetriever`: InfLLM-style memory blocks scored through a few representative tokens each."""

from __future__ import annotations

import torch

from ...config import MosaicConfig
from ..base import Selection
from .stream import BaselineRetriever, fill_units, grouped_query_rows, reduce_scores

__all__ = ["InfLLMBlockRetriever", "INFLLM_BLOCK_SIZE", "INFLLM_REPRESENTATIVES"]

INFLLM_BLOCK_SIZE = 128
"""Tokens per memory block (InfLLM, Xiao et al., 2024: blocks of 128 tokens)."""
INFLLM_REPRESENTATIVES = 4
"""Representative tokens per block (InfLLM: 4 per block)."""


class InfLLMBlockRetriever(BaselineRetriever):
    """Blocks of ``block_size`` consecutive positions (text included); each block is summarised per layer
    and KV head by its ``representatives`` most *representative* keys, and scored as InfLLM's relevance
    ``Σ_r q · k_r / √D`` (aggregated over query heads and tokens by ``config.query_reduce``).

    InfLLM ranks a block's tokens by the attention they receive from the queries of the tokens that
    follow them in the local window. The `Retriever` protocol streams keys only, so here a token's
    representative score is the attention its key receives from the block's own keys used as queries
    (``Σ_j softmax_m(k_j·k_m/√D)``, a stand-in for those queries: the same "most attended within its
    neighbourhood" rule without queries). A block is summarised once it is full (or at `select`, for the
    last, partial one).

    State: ``reps [L, Hkv, B, R, D] float32`` representative keys, ``[B]`` representatives filled.
    ``num_units`` = blocks chosen.

    Example:
        >>> r = InfLLMBlockRetriever(MosaicConfig(budget=2, sink_tokens=0, recent_window=0), num_layers=1,
        ...                          num_kv_heads=1, head_dim=2, block_size=2, representatives=1)
        >>> k = torch.tensor([[1., 0.], [1., 0.], [0., 1.], [0., 1.]]).reshape(1, 4, 1, 2)
        >>> r.append(k, torch.zeros(4, dtype=torch.int64))
        >>> r.select(torch.tensor([0., 1.]).reshape(1, 1, 1, 2)).indices.tolist()
        [2, 3]
    """

    def __init__(self, config: MosaicConfig, *, num_layers: int, num_kv_heads: int, head_dim: int,
                 block_size: int = INFLLM_BLOCK_SIZE, representatives: int = INFLLM_REPRESENTATIVES) -> None:
        super().__init__(config, num_layers=num_layers, num_kv_heads=num_kv_heads, head_dim=head_dim)
        if block_size < 1 or not 1 <= representatives <= block_size:
            raise ValueError(f"{type(self).__name__}: expected block_size >= 1 and 1 <= representatives <= "
                             f"block_size, got block_size={block_size!r}, representatives={representatives!r}")
        self.block_size, self.representatives = block_size, representatives
        self._reps = torch.zeros(num_layers, num_kv_heads, 0, representatives, head_dim)
        self._pending = torch.zeros(num_layers, 0, num_kv_heads, head_dim)  # keys of the partial last block

    @property
    def num_blocks(self) -> int:
        return self._reps.shape[2] + (1 if self._pending.shape[1] else 0)

    def _summarise(self, block: torch.Tensor) -> torch.Tensor:
        """``[L, T, Hkv, D]`` keys of one block → ``[L, Hkv, R, D]`` its representative keys."""
        k = block.float().transpose(1, 2)  # [L, Hkv, T, D]
        received = torch.softmax(k @ k.transpose(-1, -2) * self.head_dim**-0.5, dim=-1).sum(-2)  # [L, Hkv, T]
        r = min(self.representatives, k.shape[2])
        top = received.topk(r, dim=-1).indices  # [L, Hkv, r]
        reps = k.gather(2, top[..., None].expand(-1, -1, -1, self.head_dim))
        if r < self.representatives:  # a short last block repeats its best key (the sum then over-weights
            reps = torch.cat([reps, reps[:, :, :1].expand(-1, -1, self.representatives - r, -1)], 2)  # it)
        return reps

    def _observe(self, keys: torch.Tensor, frame_ids: torch.Tensor, start: int) -> None:
        pending = torch.cat([self._pending, keys.float()], 1)
        full = pending.shape[1] // self.block_size
        if full:
            blocks = [self._summarise(pending[:, i * self.block_size:(i + 1) * self.block_size]) for i in range(full)]
            self._reps = torch.cat([self._reps, torch.stack(blocks, 2)], 2)
        self._pending = pending[:, full * self.block_size:]

    def select(self, queries: torch.Tensor) -> Selection:
        self._check_queries(queries)
        always, candidate = self._always_and_candidates()
        reps = self._reps
        if self._pending.shape[1]:
            reps = torch.cat([reps, self._summarise(self._pending)[:, :, None]], 2)
        q = grouped_query_rows(queries, self.num_kv_heads)  # [L, Hkv, Rq, D]
        relevance = torch.einsum("lhqd,lhbrd->lhqb", q, reps)  # Σ over representatives: [L, Hkv, Rq, B]
        scores = reduce_scores(relevance * self.head_dim**-0.5, self.config.query_reduce)  # [L, B]
        unit_of = torch.arange(self._n) // self.block_size
        chosen, num_units = fill_units(scores, unit_of, candidate, self.config.budget)
        return self._selection(chosen, always, num_units)
