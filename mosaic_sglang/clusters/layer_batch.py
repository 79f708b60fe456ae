"""One layer of several sequences (a decode batch, a prefill batch): selection over many `ClusterIndex`es
scored in one batched call.

`select_layer_batch` returns each sequence's attended positions (always ∪ taken members; a host sync to
size them). `select_layer_into` is the serving path's device form for the exact fill: each sequence's
selected part, whose length ``f = min(budget, eligible)`` the caller planned on the host, is written
into a buffer the caller gives, with no host synchronisation (no ``.item()``, ``.tolist()``,
``nonzero`` or data-dependent shape), so a re-select decode step can run inside a CUDA graph later.
"""

from __future__ import annotations

from typing import Sequence

import torch

from . import select as selection
from .inputs import check_queries, describe

__all__ = ["select_layer_batch", "select_layer_into"]


def _prepare(indexes, layer_id, queries, seq_lens, caller: str):
    if len(indexes) != len(queries):
        raise ValueError(f"{caller}: expected one query tensor per index, got {len(queries)} for {len(indexes)}")
    for i, q in enumerate(queries):
        if not isinstance(q, torch.Tensor) or q.dim() != 3:
            raise ValueError(f"{caller}: queries[{i}]: expected [Tq, Hq, D], got {describe(q)}")
    seq_lens = [None] * len(indexes) if seq_lens is None else list(seq_lens)
    views = [index.view() for index in indexes]
    layers = [torch.arange(layer_id, layer_id + 1, device=index.device) for index in indexes]  # no host copy
    checked = [check_queries(q[None], 1, index.num_kv_heads, index.head_dim, index.device)
               for index, q in zip(indexes, queries)]
    return views, layers, selection.choose_clusters(views, layers, checked, seq_lens), seq_lens


def select_layer_batch(
    indexes: Sequence, layer_id: int, queries: Sequence[torch.Tensor],
    seq_lens: Sequence[int | None] | None = None,
) -> list[torch.Tensor]:
    """Attended positions of several sequences at one layer, scored in one batched call (a decode batch).

    Args:
        indexes: one `ClusterIndex` per sequence (same score and fill rule; budgets may differ).
        layer_id: the layer.
        queries: per sequence ``[Tq_i, Hq, D]`` float queries of that layer.
        seq_lens: per sequence the end of the served sequence (default: each index's end).

    Returns:
        Per sequence ``[n_i] int64`` sorted positions ``< index.num_tokens`` (always attended ∪ taken
        members); a sequence's result does not depend on the others in the batch.
    """
    views, layers, takes, seq_lens = _prepare(indexes, layer_id, queries, seq_lens, "select_layer_batch")
    return [selection.attended_mask(v, l, t, n)[0].nonzero().flatten() for v, l, t, n in zip(views, layers, takes, seq_lens)]


def select_layer_into(
    indexes: Sequence, layer_id: int, queries: Sequence[torch.Tensor],
    seq_lens: Sequence[int | None], outs: Sequence[torch.Tensor],
) -> None:
    """Selected parts of several sequences at one layer (exact fill), written without a host sync.

    Args:
        indexes, layer_id, queries, seq_lens: as `select_layer_batch` (``config.fill`` must be 'exact').
        outs: per sequence ``[f_i + 1] int64`` on its index's device, ``f_i = min(budget, eligible)`` (host
            int, from the same always rule); ``outs[i][:f_i]`` receives the selected positions
            (ascending, none always attended), ``outs[i][f_i]`` is scratch.
    """
    for index in indexes:
        if index.config.fill != "exact" or index.config.budget_mode != "tokens":
            raise ValueError("select_layer_into: expected fill='exact' and budget_mode='tokens' (fixed lengths), "
                             f"got fill={index.config.fill!r}, budget_mode={index.config.budget_mode!r}")
    views, layers, takes, seq_lens = _prepare(indexes, layer_id, queries, seq_lens, "select_layer_into")
    for view, layer, take, seq_len, out in zip(views, layers, takes, seq_lens, outs):
        selection.emit_selected(view, layer, take, seq_len, out)
