"""Integrity checks for `ClusterIndex`: every invariant, against a float64 recomputation from keys.

Kept apart from the index so the hot path stays short; they read the index only through its
`IndexView`. Tests call `ClusterIndex.check_integrity` after every operation sequence.
"""

from __future__ import annotations

import torch

from .table import ClusterTable
from .view import IndexView

__all__ = ["check_integrity", "recompute_summaries"]

_RECOMPUTE_CHUNK = 16384
"""Positions per chunk when summaries are recomputed from keys (bounds temporary memory)."""


def check_integrity(view: IndexView) -> None:
    """Verify the invariants; raise ``AssertionError`` naming the first broken one.

    Every visual token is in exactly one cluster per membership group and text tokens in none;
    cluster ids are dense (no empty cluster below the count, no size above the cap); summaries
    (key sums, squared-norm sums, sizes, first positions, last frames) equal a float64
    recomputation from membership and the keys (the stored copy or ``key_reader``); the running
    key statistics, marks and active set are consistent. O(N): reads every key.
    """
    table = view.table
    visual = view.frame_ids >= 0
    assign = view.assign
    counts = torch.tensor(view.num_clusters, device=view.device)[:, None]  # [G, 1]
    _check(bool((assign[:, ~visual] == -1).all()), "text tokens must belong to no cluster")
    in_range = (assign[:, visual] >= 0) & (assign[:, visual] < counts)
    _check(bool(in_range.all()), "every visual token must be in exactly one cluster of every group")
    _check(view.num_visual == int(visual.sum()), f"visual count {view.num_visual} != {int(visual.sum())}")
    ref, ref_abs, key_sum, key_sq = recompute_summaries(view, table.capacity, torch.float64)
    ids = torch.arange(table.capacity, device=view.device)[None, :]
    _check(torch.equal(table.size, ref.size), "cluster sizes must equal the member counts")
    live = table.size[ids < counts]
    _check(bool((live >= 1).all()), "cluster ids must be dense (no empty cluster below the count)")
    _check(bool((live <= view.config.max_cluster_size).all()), "a cluster exceeds the size cap")
    _check(torch.equal(table.first_pos, ref.first_pos), "first_pos must be the smallest member position")
    _check(torch.equal(table.last_ord, ref.last_ord), "last_ord must be the latest member frame")
    _close(table.key_sum, ref.key_sum, ref_abs.key_sum, "cluster key sums")
    _close(table.sq_sum, ref.sq_sum, ref.sq_sum, "cluster squared-norm sums")
    _close(view.key_sum, key_sum, ref_abs.key_sum.sum(1), "running key sum")
    _close(view.key_sq, key_sq, key_sq, "running squared-norm sum")
    _check(not bool((view.marked & ~(ids < counts)).any()), "only live clusters may be marked")
    _check(int(view.marked.sum()) == view.num_marked, f"marked count {view.num_marked} is stale")
    active = view.active
    _check(bool(((active >= -1) & (active < counts)).all()), "active ids must be live clusters")
    flat = active + torch.arange(active.shape[0], device=view.device)[:, None] * table.capacity
    flat = flat[active >= 0]
    _check(flat.unique().numel() == flat.numel(), "active ids must be unique per group")


def recompute_summaries(view: IndexView, capacity: int, dtype: torch.dtype):
    """Summaries rebuilt from membership and keys: ``(table, abs_table, key_sum [L, H, D],
    key_sq [L, H])``; ``abs_table`` sums |keys| (the scale of the rounding error)."""
    groups = view.layers_of_group.shape[0]
    table = ClusterTable(view.layers_of_group, view.num_kv_heads, view.head_dim, capacity=capacity, dtype=dtype)
    abs_table = ClusterTable(view.layers_of_group, view.num_kv_heads, view.head_dim, capacity=capacity, dtype=dtype)
    key_sum = torch.zeros(view.num_layers, view.num_kv_heads, view.head_dim, dtype=dtype, device=view.device)
    key_sq = torch.zeros(view.num_layers, view.num_kv_heads, dtype=dtype, device=view.device)
    visual = (view.frame_ids >= 0).nonzero().flatten()
    for pos in torch.split(visual, _RECOMPUTE_CHUNK):
        keys = view.read_keys(pos).to(dtype)  # [L, m, H, D]
        m = pos.numel()
        g = torch.arange(groups, device=view.device).repeat_interleave(m)
        cluster = view.assign[:, pos].flatten()
        row = torch.arange(m, device=view.device).repeat(groups)
        for t, k in ((table, keys), (abs_table, keys.abs())):
            t.add(g, cluster, pos.repeat(groups), view.frame_ord[pos].repeat(groups), k, row)
        key_sum += keys.sum(1)
        key_sq += keys.square().sum((1, 3))
    return table, abs_table, key_sum, key_sq


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise AssertionError(f"ClusterIndex integrity: {what}")


def _close(got: torch.Tensor, ref: torch.Tensor, scale: torch.Tensor, what: str) -> None:
    """float32 accumulation of <= a few hundred terms: error well under 1e-5 of the sum of |terms|."""
    err = (got.double() - ref.double()).abs()
    bound = 1e-5 * scale.double().abs() + 1e-6
    if not bool((err <= bound).all()):
        _check(False, f"{what} differ from a recomputation (max error {float(err.max()):.3g})")
