"""Recall vs cluster size: Mosaic's granularity knobs swept on both trace families (issue 13).

One command (``python benchmarks/granularity_frontier.py``; ``--quick`` for a CI smoke run). For each
``join_threshold`` (how far a cluster's spread may grow when a token joins, relative to the stream's key
variance; ``split_threshold`` kept at 1.5× it, the default ratio) and ``max_cluster_size``, one
`ClusterIndex` per trace is built frame by frame (`retrieval_quality.py`'s protocol) and the question
selects at a 10 % budget. Per point: attention-mass recall and top-10 recall against exact attention,
clusters in the index, mean tokens per *selected* cluster (selected tokens / clusters used, the unit a
transfer moves), and ingest time per frame. The issue's goal reads off the table: the largest selected
clusters whose mass recall stays within 1 point of the online baseline's (join 0.2, no regrouping: the
defaults before issue 13; ≥ 16 tokens on the synthetic trace, ≥ 8 on the captions). The ``mass recall``
column is one cluster list per layer (``selection_heads='shared'``) whatever the defaults are; rows not
marked ``per-layer`` have one membership for all layers. Rows ``k-means/T``: Mosaic's scoring and exact
fill over memberships from k-means at ~T tokens per cluster over the whole index (`ClusterKVRetriever`'s
clustering), or per span of 16 frames (``per 16 frames``): candidates for coarse groups formed off the
decode path, and the same with ``+ online tail``: the frames a stream has not regrouped by the question
(the active frames and the sealed ones after the last complete span) keep the online baseline's clusters.
Rows ``+ tail at the question``: the served regrouping, and when the question arrives
`ClusterIndex.regroup_tail` regroups what is still online (its time: ``tail ms``), with one membership for
all layers or one per layer (``per-layer``). Rows ``+ regroup/T per F frames``: the served option
(`MosaicConfig.regroup_tokens`/`regroup_frames`): the online index whose `maintain` regroups every F
sealed frames by k-means in its own membership geometry (shared over layers, z-scored keys); the unsettled
tail (active and not yet due frames) keeps its online clusters.

Two more columns per row bound what a better scorer could buy at that granularity. ``per-head``: the same
index selected with ``selection_heads='per_kv_head'`` (each KV head ranks the clusters from its own GQA
group; quality per head, averaged). ``exact-mass ceiling``: the same memberships ranked by each cluster's
*true* attention mass per eligible token (the question's exact attention averaged over its tokens and
query heads; the exact fill as Mosaic's), the optimal order for one shared selection per layer: no
cluster scorer recalls more than this (up to the boundary cluster) with these clusters and this budget.
When it falls short of the goal, the gap is the clustering's, not the scorer's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mosaic_sglang.clusters import ClusterIndex  # noqa: E402
from mosaic_sglang.clusters.mass import always_log_mass  # noqa: E402
from mosaic_sglang.clusters.scoring import score_clusters  # noqa: E402
from mosaic_sglang.config import MosaicConfig  # noqa: E402
from mosaic_sglang.retrieval import Selection, always_attended_positions, selection_quality  # noqa: E402
from mosaic_sglang.retrieval.baselines import ClusterKVRetriever  # noqa: E402
from mosaic_sglang.retrieval.budget import fill_budget_exact  # noqa: E402
from mosaic_sglang.traces import Trace  # noqa: E402
from per_head_selection import head_masks, per_head_select, quality_per_head  # noqa: E402
from trace_families import (ONLINE_BASELINE, add_trace_arguments, exact_mean_probs, ingest, load_traces,  # noqa: E402
                            write_json)

JOIN_THRESHOLDS = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
MAX_CLUSTER_SIZES = (64, 256)
KMEANS_TOKENS_PER_CLUSTER = (8, 16, 32)
KMEANS_WINDOW_FRAMES = 16
"""Frames per span of the windowed k-means rows (clusters never cross a span: frame locality)."""
REGROUP_POINTS = ((8, 16), (16, 16), (16, 4), (32, 16))
"""``(regroup_tokens, regroup_frames)`` of the served regrouping rows (`MosaicConfig`, default join)."""
TAIL_POINTS = (("shared", 16, 16), ("shared", 16, 32), ("per_layer", 16, 16), ("per_layer", 16, 32),
               ("per_layer", 20, 32), ("per_layer", 24, 32))
"""``(membership, regroup_tokens, regroup_frames)`` of the rows whose tail is regrouped at the question."""
BUDGET = 0.10


def point(trace: Trace, probs: torch.Tensor, join: float, max_size: int, regroup_tokens: int = 0,
          regroup_frames: int = KMEANS_WINDOW_FRAMES, membership: str = "shared", tail: bool = False) -> dict:
    """One online index (``probs``: `exact_mean_probs` of the trace, for the ceiling column); ``tail``: the
    frames not regrouped yet are regrouped when the question arrives (`ClusterIndex.regroup_tail`, its
    time in ``tail_ms``). Selected with one list per layer (the per-head column: one per KV head)."""
    num_layers, n, hkv, d = trace.keys.shape
    config = MosaicConfig(budget=max(1, round(BUDGET * n)), join_threshold=join, split_threshold=1.5 * join,
                          max_cluster_size=max_size, regroup_tokens=regroup_tokens, regroup_frames=regroup_frames,
                          regroup_tail=tail, membership=membership, selection_heads="shared")
    index = ClusterIndex(config, num_layers=num_layers, num_kv_heads=hkv, head_dim=d)
    started = time.perf_counter()
    frames = ingest(index, trace)
    ingest_ms = 1e3 * (time.perf_counter() - started) / frames
    started = time.perf_counter()
    if tail:
        index.regroup_tail()
    tail_ms = 1e3 * (time.perf_counter() - started)
    selection = index.select(trace.queries)
    quality = selection_quality(trace.queries, trace.keys, trace.values, selection,
                                query_positions=trace.query_positions).mean()
    always = always_attended_positions(trace.frame_ids.clone(), config)
    selected = selection.sizes().float() - always.numel()
    view = index.view()
    assign = view.assign[view.group_of_layer].clone()  # [L, N] each layer's membership
    assign[:, always] = -1  # eligible members only, as the costs count them
    by_head = per_head_select(index, trace.queries)  # its units: clusters per (layer, head) row
    heads = head_masks(by_head, num_layers, hkv, n)
    per_head = quality_per_head(trace, [Selection.from_mask(m, torch.zeros(num_layers)) for m in heads], hkv)
    head_units = ((by_head.sizes().float() - always.numel()).sum() / by_head.num_units.sum().clamp(min=1)).item()
    label = join if not regroup_tokens else f"{join} + regroup/{regroup_tokens} per {regroup_frames} frames"
    if tail or membership != "shared":
        label = f"{label}{' + tail at the question' if tail else ''}{' (per-layer)' if membership == 'per_layer' else ''}"
    return {"join_threshold": label, "max_cluster_size": max_size, "mass_recall": quality.mass_recall.item(),
            "top10_recall": quality.topk_recall.item(), "clusters": index.num_clusters,
            "tokens_per_selected_cluster": (selected.sum() / selection.num_units.sum().clamp(min=1)).item(),
            "per_head_mass_recall": per_head["mass_recall"], "per_head_tokens_per_selected_cluster": head_units,
            "ceiling_mass_recall": exact_rank_recall(trace, probs, assign, config.budget, always),
            "ingest_ms_per_frame": ingest_ms, "tail_ms": tail_ms}


def select_members(trace: Trace, assign: torch.Tensor, scores: torch.Tensor, budget: int,
                   always: torch.Tensor) -> tuple[Selection, torch.Tensor]:
    """Mosaic's exact fill over given memberships: ``assign [L, N] int64`` (``-1``: not eligible),
    ``scores [L, C]`` per cluster (higher first). Whole clusters by rank, then the boundary cluster's
    lowest positions, ``budget`` eligible tokens per layer; ``always [M]`` positions are added.

    Returns:
        ``(selection, chosen [L, N] bool)``: the attended sets and the selected members alone.
    """
    num_layers, n = assign.shape
    num_c = scores.shape[1]
    member = assign >= 0
    safe = assign.clamp(min=0)
    cost = torch.zeros(num_layers, num_c, dtype=torch.int64).scatter_add_(1, safe, member.long())
    take = fill_budget_exact(scores, cost, budget)  # [L, C] tokens per cluster, lowest positions first
    rank = torch.zeros_like(assign)  # position rank within its cluster, to truncate the boundary cluster
    for layer in range(num_layers):
        key = torch.where(member[layer], assign[layer], num_c) * (n + 1) + torch.arange(n)
        order = torch.argsort(key)
        cluster = key[order] // (n + 1)
        counts = torch.bincount(cluster, minlength=num_c + 1)
        starts = torch.cumsum(counts, 0) - counts
        rank[layer, order] = torch.arange(n) - starts[cluster]
    chosen = member & (rank < take.gather(1, safe))
    mask = chosen.clone()
    mask[:, always] = True
    return Selection.from_mask(mask, (take > 0).sum(1)), chosen


def exact_rank_recall(trace: Trace, probs: torch.Tensor, assign: torch.Tensor, budget: int,
                      always: torch.Tensor) -> float:
    """Mass recall of the memberships ``assign [L, N]`` (``-1``: not eligible) ranked by each cluster's exact
    mass per eligible token (``probs [L, N]``, `exact_mean_probs`) and filled as Mosaic fills, with the
    ``always [M]`` positions attended."""
    num_layers = assign.shape[0]
    num_c = int(assign.max()) + 1
    member = assign >= 0
    safe = assign.clamp(min=0)
    mass = torch.zeros(num_layers, num_c).scatter_add_(1, safe, torch.where(member, probs, 0.0))
    cost = torch.zeros(num_layers, num_c).scatter_add_(1, safe, member.float())
    scores = torch.where(cost > 0, mass / cost.clamp(min=1), float("-inf"))
    selection, _ = select_members(trace, assign, scores, budget, always)
    return selection_quality(trace.queries, trace.keys, trace.values, selection,
                             query_positions=trace.query_positions).mean().mass_recall.item()


def _kmeans_memberships(trace: Trace, config: MosaicConfig, tokens_per_cluster: int, window_frames) -> torch.Tensor:
    """``[L, N]`` k-means memberships (`ClusterKVRetriever`'s clustering) over the whole trace, or over each
    span of ``window_frames`` frames separately (cluster ids offset per span); ``-1``: always attended."""
    num_layers, n, hkv, d = trace.keys.shape
    if window_frames is None:
        spans = [(0, n)]
    else:
        ordinal = torch.cumsum(torch.cat([torch.ones(1, dtype=torch.long),
                                          (trace.frame_ids[1:] != trace.frame_ids[:-1]).long()]), 0)
        frame_of = torch.where(trace.frame_ids >= 0, ordinal, 0).cummax(0).values  # text joins the frame before
        edges = (frame_of // (2 * window_frames)).tolist()  # each frame counts twice in ordinal (frame + text)
        spans, start = [], 0
        for i in range(1, n + 1):
            if i == n or edges[i] != edges[start]:
                spans.append((start, i))
                start = i
    local = config.replace(sink_tokens=0, recent_window=0)  # text stays out; the sinks/window are cut below
    out = torch.full((num_layers, n), -1, dtype=torch.int64)
    offset = 0
    for a, b in spans:
        kmeans = ClusterKVRetriever(local, num_layers=num_layers, num_kv_heads=hkv, head_dim=d,
                                    tokens_per_cluster=tokens_per_cluster)
        kmeans.append(trace.keys[:, a:b], trace.frame_ids[a:b])
        part = kmeans.memberships()
        out[:, a:b] = torch.where(part >= 0, part + offset, -1)
        offset += int(part.max()) + 1 if (part >= 0).any() else 0
    out[:, always_attended_positions(trace.frame_ids.clone(), config)] = -1
    return out


def kmeans_point(trace: Trace, probs: torch.Tensor, tokens_per_cluster: int, window_frames=None,
                 online_tail: bool = False) -> dict:
    """Mosaic's scoring and exact fill over k-means memberships instead of its online ones: does a coarse
    membership formed off the decode path keep the recall (over the whole index, or per span of frames)?

    ``online_tail``: the frames a served index has not regrouped yet at the question (the last
    `active_frames`, and the sealed frames after the last complete span of ``window_frames``) keep the
    online index's clusters (`ONLINE_BASELINE`), as `MosaicConfig.regroup_tokens` leaves them."""
    num_layers, n, hkv, d = trace.keys.shape
    config = MosaicConfig(budget=max(1, round(BUDGET * n)), **ONLINE_BASELINE)
    assign = _kmeans_memberships(trace, config, tokens_per_cluster, window_frames)  # [L, N], -1: always attended
    always = always_attended_positions(trace.frame_ids.clone(), config)
    if online_tail:
        assign = _with_online_tail(trace, assign, config, window_frames, always)
    selection, chosen = select_members(trace, assign, _mosaic_scores(trace, assign, config), config.budget, always)
    quality = selection_quality(trace.queries, trace.keys, trace.values, selection,
                                query_positions=trace.query_positions).mean()
    where = "" if window_frames is None else f" per {window_frames} frames"
    tail = " + online tail" if online_tail else ""
    return {"join_threshold": f"k-means/{tokens_per_cluster}{where}{tail}", "max_cluster_size": "-",
            "mass_recall": quality.mass_recall.item(), "top10_recall": quality.topk_recall.item(),
            "clusters": int(assign[0][assign[0] >= 0].unique().numel()),  # layer 0's (k-means: per layer)
            "tokens_per_selected_cluster": (chosen.sum() / selection.num_units.sum().clamp(min=1)).item(),
            "per_head_mass_recall": float("nan"), "per_head_tokens_per_selected_cluster": float("nan"),
            "ceiling_mass_recall": exact_rank_recall(trace, probs, assign, config.budget, always),
            "ingest_ms_per_frame": float("nan"), "tail_ms": float("nan")}


def _mosaic_scores(trace: Trace, assign: torch.Tensor, config: MosaicConfig) -> torch.Tensor:
    """``[L, C]`` Mosaic's cluster scores (``config.score``: size-weighted log-mass with spread) of the
    memberships ``assign [L, N]`` (``-1``: not eligible), summaries computed from the trace's keys."""
    num_layers, n, hkv, d = trace.keys.shape
    num_c = int(assign.max()) + 1
    keys = trace.keys.float()
    member = assign >= 0
    safe = assign.clamp(min=0)
    size = torch.zeros(num_layers, num_c).scatter_add_(1, safe, member.float())  # [L, C]
    sums = torch.zeros(num_layers, num_c, hkv, d)
    squares = torch.zeros(num_layers, num_c, hkv)
    for layer in range(num_layers):
        rows = member[layer]
        sums[layer].index_add_(0, assign[layer, rows], keys[layer, rows])
        squares[layer].index_add_(0, assign[layer, rows], keys[layer, rows].square().sum(-1))
    centroid = sums / size.clamp(min=1)[..., None, None]
    spread = squares / size.clamp(min=1)[..., None] - centroid.square().sum(-1)
    always_lse = None
    if config.score == "size_weighted" and config.share_of_total:  # as the index estimates it (`index_always_lse`)
        always_lse = always_log_mass(trace.queries, keys[:, always_attended_positions(trace.frame_ids.clone(), config)])
    return score_clusters(trace.queries, centroid, spread, size.long(), rule=config.score, reduce=config.query_reduce,
                          always_lse=always_lse)


def _with_online_tail(trace: Trace, assign: torch.Tensor, config: MosaicConfig, window_frames: int,
                      always: torch.Tensor) -> torch.Tensor:
    """``assign [L, N]`` with the positions of the not yet regrouped frames (see `kmeans_point`) taken from
    the online index (``config``: `ONLINE_BASELINE`, frame by frame; ids offset past ``assign``'s)."""
    num_layers, n, hkv, d = trace.keys.shape
    index = ClusterIndex(config, num_layers=num_layers, num_kv_heads=hkv, head_dim=d)
    ingest(index, trace)
    view = index.view()
    online = view.assign[view.group_of_layer].clone()  # [L, N]
    online[:, always] = -1
    visual = trace.frame_ids >= 0
    starts = visual & torch.cat([torch.ones(1, dtype=torch.bool), trace.frame_ids[1:] != trace.frame_ids[:-1]])
    frame = torch.cumsum(starts.long(), 0) - 1  # frame number of each position (text: the frame before)
    sealed = int(frame.max()) + 1 - config.active_frames
    settled = (sealed // window_frames) * window_frames  # frames in complete regrouped spans
    tail = (frame >= settled)[None, :]
    return torch.where(tail, torch.where(online >= 0, online + int(assign.max()) + 1, -1), assign)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_trace_arguments(parser)
    args = parser.parse_args(argv)
    joins, sizes, kmeans_sizes, regroup_points = JOIN_THRESHOLDS, MAX_CLUSTER_SIZES, KMEANS_TOKENS_PER_CLUSTER, REGROUP_POINTS
    tail_points = TAIL_POINTS
    if args.quick:  # two points, one k-means row, one regrouping row, one with its tail regrouped
        joins, sizes, kmeans_sizes, regroup_points = (0.2, 1.6), (64,), (16,), ((16, 4),)
        tail_points = (("shared", 16, 4),)
    started = time.perf_counter()
    rows = []
    for name, trace in load_traces(args):
        probs = exact_mean_probs(trace)
        for max_size in sizes:
            for join in joins:
                rows.append({"trace": name, **point(trace, probs, join, max_size)})
        for tokens, frames in regroup_points:
            rows.append({"trace": name, **point(trace, probs, MosaicConfig().join_threshold, 64, tokens, frames)})
        for membership, tokens, frames in tail_points:
            rows.append({"trace": name, **point(trace, probs, MosaicConfig().join_threshold, 64, tokens, frames,
                                                membership, tail=True)})
        for window in (None, KMEANS_WINDOW_FRAMES):
            for per_cluster in kmeans_sizes:
                rows.append({"trace": name, **kmeans_point(trace, probs, per_cluster, window)})
        for per_cluster in kmeans_sizes:  # the windowed rows as a stream would have them at the question
            rows.append({"trace": name, **kmeans_point(trace, probs, per_cluster, KMEANS_WINDOW_FRAMES, online_tail=True)})
    print("| trace | max_cluster_size | join_threshold | mass recall | top-10 recall | clusters | "
          "tokens / selected cluster | per-head mass recall (tokens / cluster) | exact-mass ceiling | ingest ms / frame "
          "| tail ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['trace']} | {r['max_cluster_size']} | {r['join_threshold']} | {r['mass_recall']:.3f} | "
              f"{r['top10_recall']:.3f} | {r['clusters']} | {r['tokens_per_selected_cluster']:.1f} | "
              f"{r['per_head_mass_recall']:.3f} ({r['per_head_tokens_per_selected_cluster']:.1f}) | {r['ceiling_mass_recall']:.3f} | {r['ingest_ms_per_frame']:.2f} | "
              f"{r['tail_ms']:.0f} |")
    print(f"total {time.perf_counter() - started:.0f} s")
    write_json(args.out, {"rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
