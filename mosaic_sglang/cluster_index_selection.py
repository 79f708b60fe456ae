"""The read side of `ClusterIndex`: scoring cluster summaries and filling the token budget.

`ClusterSelection` holds the selection methods of `ClusterIndex` (which inherits them): `select`,
`select_layer`, `select_clusters`, `layer_summaries`, `positions_of`, `cluster_members`. They only read
the index's state (membership ``_assign [G, capacity]``, summaries ``_table``, frame ids, counts); the
write side (ingest, deferred splits, truncation) stays in ``cluster_index.py``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .cluster_scoring import LayerSummaries, fill_budget, score_clusters
from .retrieval_base import Selection, always_attended_positions

__all__ = ["ClusterChoice", "ClusterSelection"]


class ClusterChoice(NamedTuple):
    """Clusters chosen by `ClusterIndex.select_clusters`, CSR over layers.

    Attributes:
        indptr: ``[num_layers + 1] int64``.
        cluster_ids: ``[nnz] int64`` ids in the layer's membership group, ascending per layer.
    """

    indptr: torch.Tensor
    cluster_ids: torch.Tensor


class ClusterSelection:
    """Selection over a `ClusterIndex`'s state (a mixin: ``ClusterIndex`` sets every attribute used)."""

    # -- selection -------------------------------------------------------------------------------

    def select(self, queries: torch.Tensor) -> Selection:
        """The attended set: always-attended positions ∪ the members of the chosen clusters.

        Args:
            queries: ``[L, Tq, Hq, D]`` float, ``Hq`` a multiple of ``num_kv_heads``.

        Returns:
            `Selection` (CSR over layers, sorted unique positions); ``num_units`` = clusters chosen per
            layer. Per layer: attended <= ``budget`` + |always attended|; everything when
            ``budget >= num_visual_tokens``. Never splits or re-assigns (pure read of the index).
        """
        chosen = self._choose(self._check_queries(queries))  # [L, C] bool
        n, num_layers = self._n, self.num_layers
        always = always_attended_positions(self._frame_ids[:n], self.config)
        assign = self._assign[self._group_of_layer, :n]  # [L, n]
        if chosen.shape[1] == 0:
            mask = torch.zeros(num_layers, n, dtype=torch.bool, device=self.device)
        else:
            mask = chosen.gather(1, assign.clamp(min=0)) & (assign >= 0)
        mask[:, always] = True
        layer_ids, positions = mask.nonzero(as_tuple=True)  # row-major: by layer, then position
        indptr = torch.zeros(num_layers + 1, dtype=torch.int64, device=self.device)
        indptr[1:] = torch.cumsum(torch.bincount(layer_ids, minlength=num_layers), 0)
        return Selection(indptr, positions, chosen.sum(1))

    def select_layer(self, layer_id: int, queries: torch.Tensor) -> torch.Tensor:
        """One layer of `select` (the attention backend runs layer by layer).

        Args:
            layer_id: the layer.
            queries: ``[Tq, Hq, D]`` float, that layer's query vectors.

        Returns:
            ``[n] int64`` sorted positions: always-attended ∪ the members of the chosen clusters.
        """
        if not isinstance(layer_id, int) or not 0 <= layer_id < self.num_layers:
            raise ValueError(f"ClusterIndex.select_layer: layer_id: expected 0 <= id < {self.num_layers}, got {layer_id!r}")
        if not isinstance(queries, torch.Tensor) or queries.dim() != 3:
            raise ValueError(f"ClusterIndex.select_layer: queries: expected [Tq, Hq, D], got {describe(queries)}")
        layers = torch.tensor([layer_id], device=self.device)
        chosen = self._choose(self._check_queries(queries[None], rows=1), layers)[0]  # [C]
        return self.positions_of(layer_id, chosen)

    def select_clusters(self, queries: torch.Tensor) -> ClusterChoice:
        """The chosen clusters per layer (what a transfer engine moves), as `ClusterChoice`."""
        chosen = self._choose(self._check_queries(queries))
        layer_ids, cluster_ids = chosen.nonzero(as_tuple=True)
        indptr = torch.zeros(self.num_layers + 1, dtype=torch.int64, device=self.device)
        indptr[1:] = torch.cumsum(torch.bincount(layer_ids, minlength=self.num_layers), 0)
        return ClusterChoice(indptr, cluster_ids)

    def _choose(self, queries: torch.Tensor, layers: torch.Tensor | None = None) -> torch.Tensor:
        """``[R, C] bool`` chosen clusters of ``layers [R]`` (default all; ``queries [R, Tq, Hq, D]``);
        ``C`` = the largest group's cluster count."""
        layers = torch.arange(self.num_layers, device=self.device) if layers is None else layers
        summaries = self.layer_summaries(layers)
        if summaries.full:
            return summaries.valid  # full budget: every cluster (exact mode)
        scores = score_clusters(
            queries, summaries.centroid, summaries.spread, summaries.cost, rule=self.config.score, reduce=self.config.query_reduce
        )
        return fill_budget(scores, summaries.cost, self.config.budget)

    def layer_summaries(self, layers: torch.Tensor) -> LayerSummaries:
        """What scoring needs for ``layers [R] int64``, as `LayerSummaries` (``C`` = largest group's count)."""
        group = self._group_of_layer[layers]  # [R]
        num_c = max(self._num_clusters)
        counts = torch.tensor(self._num_clusters, device=self.device)[group]
        valid = torch.arange(num_c, device=self.device) < counts[:, None]  # [R, C]
        full = num_c == 0 or self.config.budget >= self._num_visual
        if full:
            empty = torch.empty(0, device=self.device)
            return LayerSummaries(valid, empty, empty, valid.long(), True)
        table = self._table
        size = table.size[group, :num_c]  # [R, C]
        cost = (size - self._covered_counts(num_c)[group]) * valid
        n = size.clamp(min=1).float()
        centroid = table.key_sum[layers, :num_c].float() / n[..., None, None]
        spread = table.sq_sum[layers, :num_c].float() / n[..., None] - centroid.square().sum(-1)
        return LayerSummaries(valid, centroid, spread, cost, False)

    @property
    def frame_ids(self) -> torch.Tensor:
        """``[num_tokens] int64`` frame id of every appended position (``-1`` for text); a view."""
        return self._frame_ids[: self._n]

    def cluster_members(self, group: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Members of every cluster of membership ``group``, CSR by cluster id.

        Returns:
            ``(indptr [C + 1] int64, positions [V] int64)``; cluster ``c`` owns
            ``positions[indptr[c]:indptr[c + 1]]`` (ascending).
        """
        assign = self._assign[group, : self._n]
        positions = (assign >= 0).nonzero().flatten()
        ids = assign[positions]
        order = torch.argsort(ids * (self._n + 1) + positions)
        counts = torch.bincount(ids, minlength=self._num_clusters[group])
        indptr = torch.zeros(counts.numel() + 1, dtype=torch.int64, device=self.device)
        indptr[1:] = torch.cumsum(counts, 0)
        return indptr, positions[order]

    def positions_of(self, layer_id: int, chosen: torch.Tensor) -> torch.Tensor:
        """``[n] int64`` sorted positions: always-attended ∪ members of ``chosen [C] bool`` at ``layer_id``."""
        n = self._n
        assign = self._assign[self._group_of_layer[layer_id], :n]
        if chosen.numel():
            mask = chosen[assign.clamp(min=0)] & (assign >= 0)
        else:
            mask = torch.zeros(n, dtype=torch.bool, device=self.device)
        mask[always_attended_positions(self._frame_ids[:n], self.config)] = True
        return mask.nonzero().flatten()

    def _covered_counts(self, num_c: int) -> torch.Tensor:
        """``[G, C] int64`` members per cluster that are already always attended (sinks, window):
        they are attended anyway, so they cost no budget when their cluster is chosen."""
        n, cfg = self._n, self.config
        sinks = torch.arange(min(cfg.sink_tokens, n), device=self.device)
        window = torch.arange(max(min(cfg.sink_tokens, n), n - cfg.recent_window), n, device=self.device)
        a = self._assign[:, torch.cat([sinks, window])]  # [G, S+W]
        counts = torch.zeros(a.shape[0], num_c + 1, dtype=torch.int64, device=self.device)
        counts.scatter_add_(1, torch.where(a >= 0, a, num_c), torch.ones_like(a))
        return counts[:, :num_c]

    def _check_queries(self, queries, rows: int | None = None) -> torch.Tensor:
        rows = self.num_layers if rows is None else rows
        shape = f"[num_layers={rows}, Tq, num_qo_heads (multiple of {self.num_kv_heads}), head_dim={self.head_dim}]"
        if (not isinstance(queries, torch.Tensor) or not queries.is_floating_point() or queries.dim() != 4
                or queries.shape[0] != rows or queries.shape[3] != self.head_dim
                or queries.shape[1] < 1 or queries.shape[2] < 1 or queries.shape[2] % self.num_kv_heads):
            raise ValueError(f"ClusterIndex.select: queries: expected a float tensor {shape}, got {describe(queries)}")
        return queries.to(self.device)


def describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"shape {tuple(x.shape)} dtype {x.dtype}"
    return type(x).__name__
