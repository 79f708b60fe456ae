"""One layer of several sequences (a decode batch, a prefill batch): selection over many `ClusterIndex`es
scored in one batched call.

`select_layer_batch` returns each sequence's attended positions (always ∪ taken members; a host sync to
size them). `select_layer_into` is the serving path's device form for the exact fill: each sequence's
selected part, whose length ``f = min(budget, eligible)`` the caller planned on the host, is written
into a buffer the caller gives, with no host synchronisation (no ``.item()``, ``.tolist()``,
``nonzero`` or data-dependent shape), so a re-select decode step can run inside a CUDA graph later.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from mosaic_sglang.kernels.emit_members import emit_members

from ..host_ints import host_ints_to_device

from . import select as selection
from .inputs import check_queries, describe

__all__ = ["select_layer_batch", "select_layer_into"]


def _prepare(indexes, layer_id, queries, seq_lens, always_lses, caller: str):
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
    return views, layers, selection.choose_clusters(views, layers, checked, seq_lens, always_lses), seq_lens


def select_layer_batch(
    indexes: Sequence, layer_id: int, queries: Sequence[torch.Tensor],
    seq_lens: Sequence[int | None] | None = None, always_lses: Sequence[torch.Tensor | None] | None = None,
) -> list[torch.Tensor]:
    """Attended positions of several sequences at one layer, scored in one batched call (a decode batch).

    Args:
        indexes: one `ClusterIndex` per sequence (same score and fill rule; budgets may differ).
        layer_id: the layer.
        queries: per sequence ``[Tq_i, Hq, D]`` float queries of that layer.
        seq_lens: per sequence the end of the served sequence (default: each index's end).
        always_lses: per sequence optional ``[1, H, Tq_i · group]`` float32 `mass.always_log_mass` of what it
            attends anyway (see `select.choose_clusters`).

    Returns:
        Per sequence ``[n_i] int64`` sorted positions ``< index.num_tokens`` (always attended ∪ taken
        members); a sequence's result does not depend on the others in the batch. With
        ``selection_heads='per_kv_head'`` ``[H, n_i]``, row ``h`` KV head ``h``'s positions (token budgets:
        every head attends as many; mass budgets: shorter rows end in ``-1``).
    """
    views, layers, takes, seq_lens = _prepare(indexes, layer_id, queries, seq_lens, always_lses, "select_layer_batch")
    out = []
    for v, l, t, n in zip(views, layers, takes, seq_lens):
        mask = selection.attended_mask(v, selection.row_layers(v, l), t, n)  # [1 or H, N]
        out.append(mask[0].nonzero().flatten() if mask.shape[0] == 1 else pad_sequence([m.nonzero().flatten() for m in mask], batch_first=True, padding_value=-1))
    return out


def select_layer_into(
    indexes: Sequence, layer_id: int, queries: Sequence[torch.Tensor],
    seq_lens: Sequence[int | None], outs: Sequence[torch.Tensor],
    always_lses: Sequence[torch.Tensor | None] | None = None,
) -> None:
    """Selected parts of several sequences at one layer (exact fill), written without a host sync.

    Scored in one batched call; every sequence's taken members are emitted by one K3 call over the
    batch's member lists (concatenated once per batch composition, `_BatchMembers`) and sorted per
    sequence by one sort: O(Σ C_i + Σ f_i log) per layer, nothing proportional to the contexts.

    Args:
        indexes, layer_id, queries, seq_lens, always_lses: as `select_layer_batch` (``config.fill`` must be
            'exact'; with ``share_of_total`` pass ``always_lses``: the index's own estimate reads keys, a sync).
        outs: per sequence ``[f_i + 1] int64`` on its index's device, ``f_i = min(budget, eligible)`` (host
            int, from the same always rule); ``outs[i][:f_i]`` receives the selected positions
            (ascending, none always attended), ``outs[i][f_i]`` is scratch. With
            ``selection_heads='per_kv_head'``: ``[H · f_i + 1]``, KV head ``h``'s part at ``[h · f_i,
            (h + 1) · f_i)`` (each ascending).
    """
    for index in indexes:
        if index.config.fill != "exact" or index.config.budget_mode != "tokens":
            raise ValueError("select_layer_into: expected fill='exact' and budget_mode='tokens' (fixed lengths), "
                             f"got fill={index.config.fill!r}, budget_mode={index.config.budget_mode!r}")
    if len(outs) != len(indexes):
        raise ValueError(f"select_layer_into: expected one output per index, got {len(outs)} for {len(indexes)}")
    if not indexes:
        return
    views, layers, takes, seq_lens = _prepare(indexes, layer_id, queries, seq_lens, always_lses, "select_layer_into")
    device = views[0].device
    members = _BATCH.get([v.member_lists() for v in views])
    width = max(t.shape[1] for t in takes)
    # a row per sequence, or per (sequence, KV head) with selection_heads='per_kv_head' (row i·H + h)
    take = torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in takes])  # [R, C], pads take 0
    heads = [t.shape[0] for t in takes]  # rows of each sequence (1 or H)
    groups = torch.cat([v.group_of_layer[selection.row_layers(v, l)] for v, l in zip(views, layers)])  # [R]
    bounds = [b for v, n, h in zip(views, seq_lens, heads) for b in [selection.eligible_range(v, n)] * h]
    parts = [out.numel() - 1 for out in outs]
    for f, h, i in zip(parts, heads, range(len(outs))):
        if f % h:
            raise ValueError(f"select_layer_into: outs[{i}]: expected {h} heads x f + 1 entries, got {f + 1}")
    sizes = [f // h for f, h in zip(parts, heads) for _ in range(h)]  # planned length of every row
    starts = list(itertools.accumulate(sizes, initial=0))
    total = starts.pop()
    # every per-row host int in one copy; pinned + non_blocking on CUDA (a pageable copy waits for the stream)
    first = [members.first_group[i] for i, h in enumerate(heads) for _ in range(h)]  # each row's item's group 0
    lo, hi, offset, planned, first = host_ints_to_device(
        [[b[0] for b in bounds], [b[1] for b in bounds], starts, sizes, first], device)
    base = members.group_base[first + groups]  # [R] global id of each row's cluster 0
    # a row never writes past its planned length (into the next row's part), even if its fill disagreed
    # with the plan: the takes are cut at f_i along the cluster order (a no-op when they agree, as tested)
    reach = torch.cumsum(take, 1)
    take = (reach.clamp(max=planned[:, None]) - (reach - take)).clamp(min=0)
    flat = emit_members(members.indptr, members.positions, base, take, lo, hi, offset, size=total)
    # one sort orders every sequence's part: key = (row, position)
    stride = max(v.num_tokens for v in views) + 1
    row = torch.repeat_interleave(torch.arange(len(sizes), device=device), planned, output_size=total)
    ordered = (flat + row * stride).sort().values - row * stride
    for out, start, f in zip(outs, itertools.accumulate(parts, initial=0), parts):
        out[:f].copy_(ordered[start : start + f])


class _BatchMembers:
    """The member lists of a batch's indexes as one CSR (global cluster ids item after item), kept while
    the batch's lists are the same objects (a decode batch re-selecting step after step): rebuilt, O(Σ
    members), only when the batch composition or a membership changes. One entry (the latest batch); it
    holds the lists it was built from, so their ids cannot be reused while it is kept."""

    def __init__(self) -> None:
        self._lists: list = []
        self.indptr = self.positions = self.group_base = None
        self.first_group: list[int] = []
        """Host ints: item ``j``'s first entry in ``group_base``."""

    def get(self, lists: list) -> "_BatchMembers":
        if len(lists) != len(self._lists) or any(a is not b for a, b in zip(lists, self._lists)):
            self._build(lists)
        return self

    def _build(self, lists: list) -> None:
        if len(lists) == 1:  # one sequence: its own lists
            (only,) = lists
            self.indptr, self.positions, bases = only.indptr, only.positions, [only.group_base]
        else:
            indptr, positions, bases, clusters, members = [lists[0].indptr[:1]], [], [], 0, 0
            for m in lists:
                indptr.append(m.indptr[1:] + members)
                positions.append(m.positions)
                bases.append(m.group_base + clusters)
                clusters, members = clusters + m.indptr.numel() - 1, members + m.positions.numel()
            self.indptr, self.positions = torch.cat(indptr), torch.cat(positions)
        self.group_base = torch.cat(bases)  # [Σ G_i] global id of each item's groups' cluster 0
        self.first_group = list(itertools.accumulate((b.numel() for b in bases), initial=0))[:-1]
        self._lists = list(lists)


_BATCH = _BatchMembers()
