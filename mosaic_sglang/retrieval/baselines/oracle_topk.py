"""`OracleTokenTopK`: per layer, the budget's best tokens by the true attention scores of the query.

This is what a token-level retrieval system (InfLLM / RetrievalAttention style ANN over keys)
approximates: it reads every key, so it is an upper reference for quality and a lower reference for
cost (its select is ``O(N)`` matmul work per layer per step).
"""

from __future__ import annotations

import torch

from ...config import MosaicConfig
from ..base import Selection
from .stream import BaselineRetriever, grouped_query_rows, reduce_scores

__all__ = ["OracleTokenTopK"]

_CHUNK_ELEMENTS = 1 << 25
"""Most fp32 scores held at once (128 MiB): bounds memory for long questions at 128K tokens."""


class OracleTokenTopK(BaselineRetriever):
    """Top-``budget`` candidate tokens per layer by true attention score.

    Scores: ``q·k/√D`` per (query head, query token, position), aggregated over heads and query tokens
    by ``config.query_reduce`` — the same aggregation a cluster score uses. With
    ``use_probabilities=True`` the softmax weights (over every appended position) are aggregated instead;
    with ``query_reduce='mean'`` that choice maximises the mean attention-mass recall exactly (the
    recall is linear in the set), i.e. it is the mass-optimal oracle.

    State: all keys, ``[L, N, Hkv, D]`` in the appended dtype. ``num_units`` = tokens chosen.

    Example:
        >>> r = OracleTokenTopK(MosaicConfig(budget=1, sink_tokens=0, recent_window=0),
        ...                     num_layers=1, num_kv_heads=1, head_dim=2)
        >>> k = torch.tensor([[1., 0.], [0., 1.], [-1., 0.]]).reshape(1, 3, 1, 2)
        >>> r.append(k, torch.zeros(3, dtype=torch.int64))
        >>> r.select(torch.tensor([0., 1.]).reshape(1, 1, 1, 2)).indices.tolist()
        [1]
    """

    def __init__(
        self,
        config: MosaicConfig,
        *,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        use_probabilities: bool = False,
    ) -> None:
        super().__init__(config, num_layers=num_layers, num_kv_heads=num_kv_heads, head_dim=head_dim)
        self.use_probabilities = use_probabilities
        self._key_chunks: list[torch.Tensor] = []
        self._packed: torch.Tensor | None = None

    def _observe(self, keys: torch.Tensor, frame_ids: torch.Tensor, start: int) -> None:
        self._key_chunks.append(keys)
        self._packed = None

    def _keys(self) -> torch.Tensor:
        """``[L, Hkv, N, D]`` all keys so far (packed once after appends, then reused)."""
        if self._packed is None:
            self._packed = torch.cat(self._key_chunks, dim=1).permute(0, 2, 1, 3).contiguous()
            self._key_chunks = [self._packed.permute(0, 2, 1, 3)]  # a view: no second copy
        return self._packed

    def select(self, queries: torch.Tensor) -> Selection:
        self._check_queries(queries)
        always, candidate = self._always_and_candidates()
        keys = self._keys()  # [L, Hkv, N, D]
        q = grouped_query_rows(queries, self.num_kv_heads)  # [L, Hkv, R, D]
        scale = self.head_dim**-0.5
        per_layer = max(1, q.shape[1] * q.shape[2] * self._n)
        step = max(1, _CHUNK_ELEMENTS // per_layer)
        token_scores = torch.empty(self.num_layers, self._n, dtype=torch.float32)
        for lo in range(0, self.num_layers, step):
            hi = min(self.num_layers, lo + step)
            logits = (q[lo:hi] @ keys[lo:hi].float().transpose(-1, -2)) * scale  # [l, Hkv, R, N]
            if self.use_probabilities:
                logits = torch.softmax(logits, dim=-1)
            token_scores[lo:hi] = reduce_scores(logits, self.config.query_reduce)
        k = min(self.config.budget, int(candidate.sum()))
        top = token_scores.masked_fill(~candidate[None, :], float("-inf")).topk(k, dim=1).indices  # [L, k]
        chosen = torch.zeros(self.num_layers, self._n, dtype=torch.bool)
        chosen.scatter_(1, top, True)
        return self._selection(chosen, always, torch.full((self.num_layers,), k, dtype=torch.int64))
