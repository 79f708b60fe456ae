"""The read side of the cluster index: summaries → scores → budget fill → attended positions.

Pure functions over `IndexView`s (what `ClusterIndex.view` returns), so the same code serves one
sequence (its layers as rows), one layer of many sequences (a decode batch: one row per sequence) and
anything in between. `choose_clusters` is the one selection path: rows that share a query length are
stacked (cluster axis zero-padded with ``cost = 0``, never taken), scored with one `score_clusters`
matmul and filled with one sort (`fill_budget_exact` or `fill_budget`, ``MosaicConfig.fill``; with
``budget_mode='mass'``, at a question, each row takes what reaches the mass target, `_mass_fill`). A
sequence alone is scored without padding, so its result does not depend on what else is in the batch.

The result is a token count per cluster (``take``): whole clusters give all their *eligible* members,
the exact fill's boundary cluster its lowest eligible positions. Eligible = clustered and not always
attended (`always_attended_mask` of the sequence being served, whose recent window ends at
``seq_len``: the index's own end offline, the request's end when serving), so a selection never repeats
an always-attended token and attends exactly ``min(budget, eligible)`` selected tokens per layer.
"""

from __future__ import annotations

from collections import defaultdict
from typing import NamedTuple, Sequence

import torch

from mosaic_sglang.kernels.emit_members import eligible_bounds

from ..retrieval.base import always_attended_mask
from ..retrieval.budget import fill_budget, fill_budget_exact, mass_budget
from .mass import always_log_mass, mass_shares
from .scoring import LayerSummaries, score_clusters
from .view import IndexView

__all__ = ["ClusterChoice", "layer_summaries", "choose_clusters", "attended_mask", "taken_mask",
           "eligible_range", "cluster_members", "heads_as_rows", "summaries_per_head", "row_layers", "index_always_lse"]


class ClusterChoice(NamedTuple):
    """Clusters chosen per row, CSR over rows (what a transfer engine moves): a row is a layer, or with
    ``selection_heads='per_kv_head'`` a (layer, KV head) pair, row ``l · H + h``.

    Attributes:
        indptr: ``[rows + 1] int64``.
        cluster_ids: ``[nnz] int64`` ids in the row's membership group, ascending per row.
    """

    indptr: torch.Tensor
    cluster_ids: torch.Tensor


def layer_summaries(view: IndexView, layers: torch.Tensor, seq_len: int | None = None) -> LayerSummaries:
    """What scoring needs for ``layers [R] int64`` of one index (``C`` = largest group's cluster count);
    costs count eligible members only (see module docstring; ``seq_len`` default: the index's end).

    ``full`` (exact mode) when the budget covers every visual token: no scoring, every cluster.
    """
    device = view.device
    group = view.group_of_layer[layers]  # [R]
    num_c = max(view.num_clusters)
    config = view.config
    covers = config.budget >= view.num_visual and (config.budget_mode == "tokens" or config.mass_target >= 1)
    full = num_c == 0 or covers
    table = view.table
    size = table.size[group, :num_c]  # [R, C]
    # ids are dense and never empty below a group's count, and sizes past it are 0 (`check_integrity`),
    # so "exists" is "has a member": no host list copied to the device per call
    valid = size > 0
    cost = (size - _covered_counts(view, num_c, seq_len)[group]) * valid
    if full:
        empty = torch.empty(0, device=device)
        return LayerSummaries(valid, empty, empty, cost, True)
    n = size.clamp(min=1).float()
    centroid = table.key_sum[layers, :num_c].float() / n[..., None, None]
    spread = table.sq_sum[layers, :num_c].float() / n[..., None] - centroid.square().sum(-1)
    return LayerSummaries(valid, centroid, spread, cost, False)


def choose_clusters(
    views: Sequence[IndexView],
    layers: Sequence[torch.Tensor],
    queries: Sequence[torch.Tensor],
    seq_lens: Sequence[int | None] | None = None,
    always_lses: Sequence[torch.Tensor | None] | None = None,
) -> list[torch.Tensor]:
    """Tokens to take per cluster for several (index, layers) items, in as few batched calls as their
    shapes allow.

    Args:
        views: one `IndexView` per item (the same ``score``/``query_reduce``/``fill`` rule; budgets may differ).
        layers: per item ``[R_i] int64`` the layers to select for.
        queries: per item ``[R_i, Tq_i, Hq, D]`` float queries of those layers (on the index's device).
        seq_lens: per item the end of the served sequence (its recent window); None: the index's end.
        always_lses: per item optional ``[R_i, H, Tq_i · group]`` float32 `mass.always_log_mass` of the
            positions the item attends whatever is selected (a server passes the exact, causal one: sinks,
            text, window and the forward's own tokens). Used by ``score='size_weighted'`` with
            ``share_of_total`` and by mass budgets; None there: computed from the index's own always-attended
            keys (`index_always_lse`: no causality, no tokens past the index).

    Returns:
        Per item ``[R_i, C_i] int64`` eligible members to take per cluster (``C_i`` = the item's largest
        group count); per row the sum is ``min(budget, eligible)`` with the exact fill, at most the
        budget with the whole fill, and everything eligible in exact mode (budget >= visual tokens).
        With ``selection_heads='per_kv_head'`` each KV head chooses its own clusters: ``[R_i · H, C_i]``,
        row ``r · H + h`` for KV head ``h`` of row ``r`` (the same budget per head).
    """
    seq_lens = [None] * len(views) if seq_lens is None else seq_lens
    always_lses = [None] * len(views) if always_lses is None else list(always_lses)
    out: list[torch.Tensor | None] = [None] * len(views)
    by_length = defaultdict(list)
    for i, q in enumerate(queries):
        by_length[q.shape[1]].append(i)
    per_head = bool(views) and views[0].config.selection_heads == "per_kv_head"
    if per_head:  # every KV head is a row of its own, scored by its GQA group's query heads
        queries = [heads_as_rows(q, v.num_kv_heads) for q, v in zip(queries, views)]
        always_lses = [None if a is None else a.reshape(a.shape[0] * a.shape[1], 1, -1) for a in always_lses]
    for items in by_length.values():
        scored = []
        for i in items:
            summaries = layer_summaries(views[i], layers[i], seq_lens[i])
            if per_head:
                summaries = summaries_per_head(summaries, views[i].num_kv_heads)
            if summaries.full:
                out[i] = summaries.cost
            else:
                scored.append((i, summaries))
        if not scored:
            continue
        config = views[scored[0][0]].config
        fill = fill_budget_exact if config.fill == "exact" else _whole
        always_lses = _always_parts(config, views, layers, queries, seq_lens, always_lses, [i for i, _ in scored])
        if config.budget_mode == "mass" and config.mass_target < 1:  # a question (decode keeps it): item by item
            for i, s in scored:
                out[i] = _mass_fill(views[i], queries[i], s, always_lses[i], fill)
            continue
        if len(scored) == 1:  # one sequence (its layers as rows): no stacking
            i, s = scored[0]
            scores = score_clusters(queries[i], s.centroid, s.spread, s.cost, rule=config.score, reduce=config.query_reduce,
                                    always_lse=always_lses[i])
            out[i] = fill(scores, s.cost, views[i].config.budget)
            continue
        width = max(s.cost.shape[1] for _, s in scored)
        cost = torch.cat([_pad(s.cost, width) for _, s in scored])  # [R, C]
        centroid = torch.cat([_pad(s.centroid, width) for _, s in scored])  # [R, C, H, D]
        spread = torch.cat([_pad(s.spread, width) for _, s in scored])  # [R, C, H]
        q = torch.cat([queries[i] for i, _ in scored])  # [R, Tq, Hq, D]
        always = None if always_lses[scored[0][0]] is None else torch.cat([always_lses[i] for i, _ in scored])
        scores = score_clusters(q, centroid, spread, cost, rule=config.score, reduce=config.query_reduce,
                                always_lse=always)
        rows = [s.cost.shape[0] for _, s in scored]
        budgets = torch.cat([cost.new_full((r,), views[i].config.budget) for (i, _), r in zip(scored, rows)])  # [R]
        take = fill(scores, cost, budgets)
        for (i, s), part in zip(scored, torch.split(take, rows)):
            out[i] = part[:, : s.cost.shape[1]]
    return out


def row_layers(view: IndexView, layers: torch.Tensor) -> torch.Tensor:
    """The layer of each row `choose_clusters` returns for ``layers [R]``: ``layers`` itself, or each
    repeated once per KV head with ``selection_heads='per_kv_head'`` (``[R · H]``)."""
    if view.config.selection_heads == "per_kv_head":
        return layers.repeat_interleave(view.num_kv_heads)
    return layers


def heads_as_rows(queries: torch.Tensor, num_kv_heads: int) -> torch.Tensor:
    """``[R, Tq, Hq, D]`` → ``[R · H, Tq, Hq / H, D]``: each KV head's GQA group of query heads as a row of
    its own (row ``r · H + h``; query head ``i`` reads KV head ``i // (Hq / H)``, as in ``repeat_kv``)."""
    r, tq, hq, d = queries.shape
    if hq % num_kv_heads:
        raise ValueError(f"heads_as_rows: expected query heads a multiple of {num_kv_heads} KV heads, got {hq}")
    grouped = queries.reshape(r, tq, num_kv_heads, hq // num_kv_heads, d)
    return grouped.transpose(1, 2).reshape(r * num_kv_heads, tq, hq // num_kv_heads, d)


def summaries_per_head(s: LayerSummaries, num_kv_heads: int) -> LayerSummaries:
    """`LayerSummaries` of ``R`` rows over ``H`` KV heads as ``R · H`` rows of one head each (row ``r · H +
    h``, as `heads_as_rows`): the clusters are the same for every head; a head scores them by its own
    centroids and spreads."""
    def rows(x):
        return x.repeat_interleave(num_kv_heads, 0)

    if s.full:
        return LayerSummaries(rows(s.valid), s.centroid, s.spread, rows(s.cost), True)
    r, c, h, d = s.centroid.shape
    centroid = s.centroid.permute(0, 2, 1, 3).reshape(r * h, c, 1, d)
    spread = s.spread.permute(0, 2, 1).reshape(r * h, c, 1)
    return LayerSummaries(rows(s.valid), centroid, spread, rows(s.cost), False)


def attended_mask(view: IndexView, layers: torch.Tensor, take: torch.Tensor, seq_len: int | None = None) -> torch.Tensor:
    """``[R, N] bool`` per row: always-attended positions ∪ the taken members at ``layers [R]``.

    ``take [R, C] int64`` (from `choose_clusters`): a cluster with ``take >= cost`` gives every member;
    the (at most one per row) cluster with ``0 < take < cost`` its ``take`` lowest eligible positions.
    """
    always = always_attended_mask(view.frame_ids, view.config, seq_len=seq_len)  # [N]
    return taken_mask(view, layers, take, seq_len) | always[None, :]


def taken_mask(view: IndexView, layers: torch.Tensor, take: torch.Tensor, seq_len: int | None = None) -> torch.Tensor:
    """``[R, N] bool`` the eligible members ``take`` gives at ``layers [R]`` (`eligible_range`: `attended_mask`
    without the always part). No host synchronisation (fixed shapes, no data-dependent branch); O(R · N):
    the question's path. Re-selection emits from member lists instead (`layer_batch.select_layer_into`)."""
    assign = view.assign[view.group_of_layer[layers]]  # [R, N]
    num_c = take.shape[1]
    if num_c == 0:
        return torch.zeros_like(assign, dtype=torch.bool)
    lo, hi = eligible_range(view, seq_len)
    position = torch.arange(assign.shape[1], device=assign.device)
    safe = assign.clamp(min=0)
    eligible = (assign >= 0) & (position >= lo) & (position < hi)
    cost = torch.zeros_like(take).scatter_add_(1, safe, eligible.long())  # [R, C] eligible members
    whole = (take > 0) & (take >= cost)
    mask = whole.gather(1, safe) & eligible  # members outside the range come back with the always part
    partial = (take > 0) & (take < cost)  # the exact fill's boundary cluster (rows without one: count 0)
    boundary = partial.long().argmax(1)  # [R]
    count = take.gather(1, boundary[:, None]) * partial.any(1, keepdim=True)  # [R, 1]
    in_boundary = eligible & (assign == boundary[:, None])
    return mask | (in_boundary & (torch.cumsum(in_boundary, 1) <= count))


def eligible_range(view: IndexView, seq_len: int | None = None) -> tuple[int, int]:
    """``[lo, hi)``, host ints: the positions a member may be selected from when serving a sequence that
    ends at ``seq_len`` (default the index's end) — past the sinks, before the recent window and the
    sequence's end (`kernels.emit_members.eligible_bounds`, clamped to the index). Members outside it are
    the members `always_attended_mask` keeps, plus (a served prefix shorter than the index, no window)
    the members past the prefix's end, which are never selected."""
    n = view.num_tokens
    lo, hi = eligible_bounds(view.config.sink_tokens, view.config.recent_window, n if seq_len is None else seq_len)
    lo = min(lo, n)
    return lo, max(lo, min(hi, n))


def _always_parts(config, views, layers, queries, seq_lens, given: list, items: list) -> list:
    """The always parts' log-masses the scoring of ``items`` uses: the given ones, the index's own estimate
    where none was given; all None when the config does not weigh them (`MosaicConfig.weighs_always_part`)."""
    if not config.weighs_always_part:
        return [None] * len(given)
    out = list(given)
    for i in items:
        if out[i] is None:
            out[i] = index_always_lse(views[i], layers[i], queries[i], seq_lens[i])
    return out


def index_always_lse(view: IndexView, layers: torch.Tensor, queries: torch.Tensor, seq_len=None) -> torch.Tensor:
    """``[R, H, Tq · group]`` `always_log_mass` of the index's own always-attended positions (sinks, text,
    recent window of a sequence ending at ``seq_len``) at ``layers [R]`` for ``queries`` (``[R, Tq, Hq, D]``,
    or per-KV-head rows ``[R · H, Tq, Hq / H, D]``, then ``[R · H, 1, Tq · group]``). Every query is taken to
    see every such position, and positions past the index (a forward's own tokens) are not in it: the
    offline estimate; a server passes its exact one (`choose_clusters`). Reads their keys (a host sync)."""
    always = always_attended_mask(view.frame_ids, view.config, seq_len=seq_len).nonzero().flatten()
    keys = view.read_keys(always)[layers]  # [R, M, H, D]
    if queries.shape[0] != keys.shape[0]:  # per-KV-head rows (`heads_as_rows`): row r · H + h, head h's keys
        r, m, h, d = keys.shape
        keys = keys.permute(0, 2, 1, 3).reshape(r * h, m, 1, d)
    return always_log_mass(queries, keys)


def _mass_fill(view: IndexView, queries: torch.Tensor, s: LayerSummaries, always_lse: torch.Tensor, fill):
    """``budget_mode='mass'``: per row the fewest clusters (by estimated share of the total mass per token)
    whose shares, with the always-attended positions' exact share, reach ``mass_target``; at most the
    budget (`mass_shares`, `mass_budget`). Per-KV-head rows each reach the target on their own head: a
    head whose sinks and text hold its attention takes nothing, a head spread over the video takes more."""
    shares = mass_shares(queries, s.centroid, s.spread, s.cost, always_lse)
    budget = mass_budget(shares.per_token, s.cost, view.config.mass_target, view.config.budget, covered=shares.covered)
    return fill(shares.per_token, s.cost, budget)


def _whole(scores: torch.Tensor, costs: torch.Tensor, budget) -> torch.Tensor:
    """`fill_budget` as token counts: every eligible member of each chosen cluster."""
    return fill_budget(scores, costs, budget) * costs


def cluster_members(view: IndexView, group: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Members of every cluster of membership ``group``, CSR by cluster id (the view's member lists).

    Returns:
        ``(indptr [C + 1] int64, positions [V] int64)``; cluster ``c`` owns
        ``positions[indptr[c]:indptr[c + 1]]`` (ascending).
    """
    return view.member_lists().group(group)


def _covered_counts(view: IndexView, num_c: int, seq_len: int | None = None) -> torch.Tensor:
    """``[G, C] int64`` members per cluster outside `eligible_range` (sinks, the recent window of a
    sequence ending at ``seq_len``): always attended anyway, so choosing their cluster costs no budget for
    them. Reads only those positions (O(sinks + window)): no scan of the index per selection."""
    lo, hi = eligible_range(view, seq_len)
    a = view.assign  # [G, N], text is -1; every position read is scattered (no mask indexing: no host sync)
    counts = torch.zeros(a.shape[0], num_c + 1, dtype=torch.int64, device=view.device)
    for part in (a[:, :lo], a[:, hi:]):
        counts.scatter_add_(1, torch.where(part >= 0, part, num_c), torch.ones_like(part))
    return counts[:, :num_c]


def _pad(x: torch.Tensor, width: int) -> torch.Tensor:
    """Zero-pad the cluster dimension (dim 1) of ``x [R, C, ...]`` to ``width``."""
    if x.shape[1] == width:
        return x
    pad = x.new_zeros((x.shape[0], width - x.shape[1]) + tuple(x.shape[2:]))
    return torch.cat([x, pad], 1)
