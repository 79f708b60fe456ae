"""Integrity checks for `ClusterIndex`: every invariant, against a float64 recomputation from keys.

Kept apart from the index so the hot path stays short; tests call `ClusterIndex.check_integrity`
after every operation sequence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .cluster_table import ClusterTable

if TYPE_CHECKING:
    from .cluster_index import ClusterIndex

__all__ = ["check_integrity", "recompute_summaries"]

_RECOMPUTE_CHUNK = 16384
"""Positions per chunk when summaries are recomputed from keys (bounds temporary memory)."""


def check_integrity(index: "ClusterIndex") -> None:
    """Verify the invariants; raise ``AssertionError`` naming the first broken one.

    Every visual token is in exactly one cluster per membership group and text tokens in none;
    cluster ids are dense (no empty cluster below the count, no size above the cap); summaries
    (key sums, squared-norm sums, sizes, first positions, last frames) equal a float64
    recomputation from membership and the keys (the stored copy or ``key_reader``); the running
    key statistics, marks and active set are consistent. O(N): reads every key.
    """
    n, table = index._n, index._table
    visual = index._frame_ids[:n] >= 0
    assign = index._assign[:, :n]
    counts = torch.tensor(index._num_clusters, device=index.device)[:, None]  # [G, 1]
    _check(bool((index._assign[:, n:] == -1).all()), "positions beyond num_tokens must be unassigned")
    _check(bool((assign[:, ~visual] == -1).all()), "text tokens must belong to no cluster")
    in_range = (assign[:, visual] >= 0) & (assign[:, visual] < counts)
    _check(bool(in_range.all()), "every visual token must be in exactly one cluster of every group")
    _check(index._num_visual == int(visual.sum()), f"visual count {index._num_visual} != {int(visual.sum())}")
    ref, ref_abs, key_sum, key_sq = recompute_summaries(index, table.capacity, torch.float64)
    ids = torch.arange(table.capacity, device=index.device)[None, :]
    _check(torch.equal(table.size, ref.size), "cluster sizes must equal the member counts")
    live = table.size[ids < counts]
    _check(bool((live >= 1).all()), "cluster ids must be dense (no empty cluster below the count)")
    _check(bool((live <= index.config.max_cluster_size).all()), "a cluster exceeds the size cap")
    _check(torch.equal(table.first_pos, ref.first_pos), "first_pos must be the smallest member position")
    _check(torch.equal(table.last_ord, ref.last_ord), "last_ord must be the latest member frame")
    _close(table.key_sum, ref.key_sum, ref_abs.key_sum, "cluster key sums")
    _close(table.sq_sum, ref.sq_sum, ref.sq_sum, "cluster squared-norm sums")
    _close(index._key_sum, key_sum, ref_abs.key_sum.sum(1), "running key sum")
    _close(index._key_sq, key_sq, key_sq, "running squared-norm sum")
    _check(not bool((index._marked & ~(ids < counts)).any()), "only live clusters may be marked")
    _check(int(index._marked.sum()) == index._num_marked, f"marked count {index._num_marked} is stale")
    active = index._active
    _check(bool(((active >= -1) & (active < counts)).all()), "active ids must be live clusters")
    flat = active + torch.arange(active.shape[0], device=index.device)[:, None] * table.capacity
    flat = flat[active >= 0]
    _check(flat.unique().numel() == flat.numel(), "active ids must be unique per group")


def recompute_summaries(index: "ClusterIndex", capacity: int, dtype: torch.dtype):
    """Summaries rebuilt from membership and keys: ``(table, abs_table, key_sum [L, H, D],
    key_sq [L, H])``; ``abs_table`` sums |keys| (the scale of the rounding error)."""
    groups = index._layers_of_group.shape[0]
    table = ClusterTable(index._layers_of_group, index.num_kv_heads, index.head_dim, capacity=capacity, dtype=dtype)
    abs_table = ClusterTable(index._layers_of_group, index.num_kv_heads, index.head_dim, capacity=capacity, dtype=dtype)
    key_sum = torch.zeros(index.num_layers, index.num_kv_heads, index.head_dim, dtype=dtype, device=index.device)
    key_sq = torch.zeros(index.num_layers, index.num_kv_heads, dtype=dtype, device=index.device)
    visual = (index._frame_ids[: index._n] >= 0).nonzero().flatten()
    for pos in torch.split(visual, _RECOMPUTE_CHUNK):
        keys = index._read_keys(pos).to(dtype)  # [L, m, H, D]
        m = pos.numel()
        g = torch.arange(groups, device=index.device).repeat_interleave(m)
        cluster = index._assign[:, pos].flatten()
        row = torch.arange(m, device=index.device).repeat(groups)
        for t, k in ((table, keys), (abs_table, keys.abs())):
            t.add(g, cluster, pos.repeat(groups), index._frame_ord[pos].repeat(groups), k, row)
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
