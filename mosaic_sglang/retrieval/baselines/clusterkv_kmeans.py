"""`ClusterKVRetriever`: ClusterKV-style semantic clusters — k-means over the keys at a fixed count."""

from __future__ import annotations

import math

import torch

from ...config import MosaicConfig
from ..base import Selection
from .stream import BaselineRetriever, fill_units, grouped_query_rows, reduce_scores

__all__ = ["ClusterKVRetriever", "CLUSTERKV_TOKENS_PER_CLUSTER", "CLUSTERKV_ITERATIONS"]

CLUSTERKV_TOKENS_PER_CLUSTER = 16
"""Cluster count = ceil(candidate tokens / this). Our choice (the count is a knob of the method, not
derived from the stream), set equal to Quest's page size so both baselines move units of ~16 tokens."""
CLUSTERKV_ITERATIONS = 10
"""k-means iterations (cosine assignment, mean update)."""


class ClusterKVRetriever(BaselineRetriever):
    """Clusters of the visual and text candidates by key direction, recomputed from scratch when the
    stream grew since the last clustering (ClusterKV, Liu et al., 2024: k-means in the keys' semantic
    space, a fixed number of clusters, clusters scored by ``q · centroid``).

    One membership per layer (the `Retriever` protocol serves one attended set per layer): features are
    the layer's unit-normalised keys of all KV heads concatenated; k-means with cosine assignment,
    ``ceil(N_candidates / tokens_per_cluster)`` clusters, deterministic initialisation at evenly spaced
    candidates, ``iterations`` rounds. Score of a cluster: ``q · c / √D`` with ``c`` the mean of its raw
    keys per KV head, aggregated over query heads and tokens by ``config.query_reduce``. ``num_units`` =
    clusters chosen. The clustering is the expensive part (``O(iterations · N · K · H·D)`` per layer);
    `select` pays it only after an `append`.

    Example:
        >>> r = ClusterKVRetriever(MosaicConfig(budget=2, sink_tokens=0, recent_window=0), num_layers=1,
        ...                        num_kv_heads=1, head_dim=2, tokens_per_cluster=2)
        >>> k = torch.tensor([[1., 0.], [0., 1.], [1., 0.1], [0.1, 1.]]).reshape(1, 4, 1, 2)
        >>> r.append(k, torch.zeros(4, dtype=torch.int64))
        >>> r.select(torch.tensor([0., 1.]).reshape(1, 1, 1, 2)).indices.tolist()
        [1, 3]
    """

    def __init__(self, config: MosaicConfig, *, num_layers: int, num_kv_heads: int, head_dim: int,
                 tokens_per_cluster: int = CLUSTERKV_TOKENS_PER_CLUSTER,
                 iterations: int = CLUSTERKV_ITERATIONS) -> None:
        super().__init__(config, num_layers=num_layers, num_kv_heads=num_kv_heads, head_dim=head_dim)
        if tokens_per_cluster < 1 or iterations < 1:
            raise ValueError(f"{type(self).__name__}: expected tokens_per_cluster >= 1 and iterations >= 1, got "
                             f"{tokens_per_cluster!r}, {iterations!r}")
        self.tokens_per_cluster, self.iterations = tokens_per_cluster, iterations
        self._keys: list[torch.Tensor] = []  # [L, T, Hkv, D] chunks
        self._clustered_at = -1
        self._assign = torch.empty(num_layers, 0, dtype=torch.int64)  # [L, N] cluster, -1 none
        self._centroids = torch.zeros(num_layers, num_kv_heads, 0, head_dim)  # [L, Hkv, K, D]

    def memberships(self) -> torch.Tensor:
        """``[L, N] int64`` cluster of every position per layer (``-1``: always attended), clustering first
        if the stream grew since the last clustering."""
        if self._n == 0:
            raise ValueError(f"{type(self).__name__}.memberships: nothing appended yet")
        if self._clustered_at != self._n:
            self._cluster(self._always_and_candidates()[1])
        return self._assign

    def _observe(self, keys: torch.Tensor, frame_ids: torch.Tensor, start: int) -> None:
        self._keys.append(keys.float())

    def _cluster(self, candidate: torch.Tensor) -> None:
        keys = torch.cat(self._keys, 1) if len(self._keys) != 1 else self._keys[0]
        self._keys = [keys]
        positions = candidate.nonzero().flatten()
        m = positions.numel()
        k = max(1, math.ceil(m / self.tokens_per_cluster)) if m else 0
        raw = keys[:, positions]  # [L, M, Hkv, D]
        feats = torch.nn.functional.normalize(raw, dim=-1).flatten(2)  # [L, M, Hkv*D]
        centres = feats[:, torch.linspace(0, max(m - 1, 0), k).round().long()] if k else feats[:, :0]
        assign = torch.zeros(self.num_layers, m, dtype=torch.int64)
        for _ in range(self.iterations if k else 0):
            assign = (feats @ torch.nn.functional.normalize(centres, dim=-1).transpose(1, 2)).argmax(-1)  # [L, M]
            sums = torch.zeros_like(centres).scatter_add_(1, assign[..., None].expand_as(feats), feats)
            counts = torch.zeros(self.num_layers, k).scatter_add_(1, assign, torch.ones_like(assign, dtype=torch.float))
            centres = torch.where(counts[..., None] > 0, sums / counts.clamp(min=1)[..., None], centres)  # empty: keep
        full = torch.full((self.num_layers, self._n), -1, dtype=torch.int64)
        full[:, positions] = assign
        sums = torch.zeros(self.num_layers, k, self.num_kv_heads, self.head_dim)
        for layer in range(self.num_layers):
            sums[layer].index_add_(0, assign[layer], raw[layer])
        counts = torch.stack([torch.bincount(assign[layer], minlength=k) for layer in range(self.num_layers)])
        self._centroids = (sums / counts.clamp(min=1)[..., None, None]).transpose(1, 2)  # [L, Hkv, K, D]
        self._assign, self._clustered_at = full, self._n

    def select(self, queries: torch.Tensor) -> Selection:
        self._check_queries(queries)
        always, candidate = self._always_and_candidates()
        if self._clustered_at != self._n:
            self._cluster(candidate)
        q = grouped_query_rows(queries, self.num_kv_heads)  # [L, Hkv, R, D]
        scores = reduce_scores(q @ self._centroids.transpose(-1, -2) * self.head_dim**-0.5, self.config.query_reduce)
        chosen, num_units = [], []
        for layer in range(self.num_layers):  # memberships differ per layer
            c, n = fill_units(scores[layer:layer + 1], self._assign[layer], candidate, self.config.budget)
            chosen.append(c)
            num_units.append(n)
        return self._selection(torch.cat(chosen), always, torch.cat(num_units))
