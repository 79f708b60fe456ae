"""Pure-torch reference of K6, token-to-centroid assignment: the two steps of one `ClusterIndex._join`
round (``mosaic_sglang/clusters/README.md``, "Cohesion-aware assignment"), written to be read against it.
`_join` calls both (this reference on the CPU, the Triton kernel for CUDA tensors).

1. `assign_tokens_reference`: every token's nearest candidate cluster that *admits* it — spread after
   the join ``S' = (s·S + s/(s+1)·d²)/(s+1)`` with ``S'/num_pairs <= join_threshold``, and
   ``size < max_cluster_size``. fp32, with `_join`'s own expansion ``d² = |x|² + |c|² − 2x·c``
   (clamped at 0) and its operation order (the formulas `_join` used inline before it called K6).
2. `admit_by_capacity`: per cluster, only the ``max_cluster_size − size`` nearest of the round's joiners
   get in (ties: lower token index first).

Candidate padding (`_join`'s ``ids < 0``): pass ``size >= max_cluster_size``; such a slot never admits.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["Assignment", "assign_tokens_reference", "admit_by_capacity", "check_inputs"]

FLOATS = (torch.float32, torch.float16, torch.bfloat16)


class Assignment(NamedTuple):
    """Nearest admitting candidate per token.

    best: ``[n]`` (or ``[G, n]``) int64 candidate index, ``-1`` when no candidate admits the token.
    d2: same shape, float32 squared distance to it in feature units, ``inf`` when none.
    """

    best: torch.Tensor
    d2: torch.Tensor


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_inputs(x, centroids, spread, size, num_pairs, join_threshold, max_cluster_size, out) -> None:
    """Raise ValueError (expected, got) for bad shapes, dtypes or scalars; reads shapes only (no host sync)."""
    if x.dim() not in (2, 3) or centroids.dim() != x.dim():
        raise ValueError(f"x [n, F] with centroids [A, F] (or [G, n, F] with [G, A, F]): got {tuple(x.shape)} "
                         f"and {tuple(centroids.shape)}")
    if x.dtype not in FLOATS or centroids.dtype not in FLOATS:
        raise ValueError(f"x, centroids: expected float32 / float16 / bfloat16, got {x.dtype}, {centroids.dtype}")
    if centroids.shape[:-2] != x.shape[:-2] or centroids.shape[-1] != x.shape[-1]:
        raise ValueError(f"centroids: expected [{', '.join(map(str, x.shape[:-2]))}{', ' if x.dim() == 3 else ''}"
                         f"A, {x.shape[-1]}], got {tuple(centroids.shape)}")
    cand = tuple(centroids.shape[:-1])
    if tuple(spread.shape) != cand or not spread.is_floating_point():
        raise ValueError(f"spread: expected {list(cand)} float, got {tuple(spread.shape)} {spread.dtype}")
    if tuple(size.shape) != cand or size.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"size: expected {list(cand)} int64 (int32 accepted), got {tuple(size.shape)} {size.dtype}")
    if not _is_int(num_pairs) or num_pairs < 1:
        raise ValueError(f"num_pairs: expected an integer >= 1 ((layer, head) pairs in F), got {num_pairs!r}")
    if not _is_int(max_cluster_size) or max_cluster_size < 1:
        raise ValueError(f"max_cluster_size: expected an integer >= 1, got {max_cluster_size!r}")
    if isinstance(join_threshold, bool) or not isinstance(join_threshold, (int, float)):
        raise ValueError(f"join_threshold: expected a float, got {join_threshold!r}")
    if out is not None:
        tokens = tuple(x.shape[:-1])
        if (len(out) != 2 or tuple(out[0].shape) != tokens or out[0].dtype != torch.int64
                or tuple(out[1].shape) != tokens or out[1].dtype != torch.float32):
            raise ValueError(f"out: expected (best {list(tokens)} int64, d2 {list(tokens)} float32), got "
                             f"{[(tuple(t.shape), t.dtype) for t in out]}")


def assign_tokens_reference(
    x: torch.Tensor,
    centroids: torch.Tensor,
    spread: torch.Tensor,
    size: torch.Tensor,
    *,
    num_pairs: int,
    join_threshold: float,
    max_cluster_size: int,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Assignment:
    """Nearest admitting candidate of every token (one join round, before the capacity cut).

    Args:
        x: ``[n, F]`` (or ``[G, n, F]``, one slice per membership group) float32 token features, as
            `ClusterIndex._features` makes them (float16 / bfloat16 accepted, upcast).
        centroids: ``[A, F]`` (or ``[G, A, F]``) candidate centres in the same feature space.
        spread: ``[A]`` (or ``[G, A]``) float absolute spread S (mean squared member distance to the
            centre, summed over F's (layer, head) pairs) of every candidate.
        size: ``[A]`` (or ``[G, A]``) int64 members per candidate; ``>= max_cluster_size`` never admits
            (the way to pass padding).
        num_pairs: (layer, head) pairs in F: the relative spread is ``S / num_pairs``.
        join_threshold: largest relative spread after the join that still admits.
        max_cluster_size: the size cap.
        out: optional ``(best, d2)`` result buffers of the result's shapes and dtypes.

    Returns:
        `Assignment` ``(best int64, d2 float32)``, shaped like ``x`` without F. Ties in d² go to the
        lowest candidate index (`torch.min`'s rule, which `_join` uses).

    Example:
        >>> x = torch.tensor([[0.0, 0.0], [3.0, 0.0]]); c = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
        >>> a = assign_tokens_reference(x, c, torch.zeros(2), torch.tensor([1, 4]), num_pairs=1,
        ...                             join_threshold=0.5, max_cluster_size=4)
        >>> a.best.tolist(), a.d2.tolist()   # candidate 1 is full; token 1 is too far from candidate 0
        ([0, -1], [1.0, inf])
    """
    check_inputs(x, centroids, spread, size, num_pairs, join_threshold, max_cluster_size, out)
    batched = x.dim() == 3
    xs, cs, ss, zs = (t if batched else t[None] for t in (x, centroids, spread, size))
    groups, n, _ = xs.shape
    best = torch.full((groups, n), -1, dtype=torch.int64, device=x.device)
    best_d2 = torch.full((groups, n), float("inf"), dtype=torch.float32, device=x.device)
    if cs.shape[1] > 0:  # every group at once: [G, n, A]
        xf, cf = xs.float(), cs.float()  # [G, n, F], [G, A, F]
        d2 = (xf.square().sum(-1, keepdim=True) + cf.square().sum(-1)[:, None, :]
              - 2 * torch.bmm(xf, cf.transpose(1, 2))).clamp(min=0)
        s = zs.float()[:, None, :]  # [G, 1, A]; float32 like `_join`'s sizes
        after = (s * ss.float()[:, None, :] + s / (s + 1) * d2) / (s + 1) / num_pairs  # [G, n, A] relative S'
        admits = (zs < max_cluster_size)[:, None, :] & (after <= join_threshold)
        d2_min, arg = d2.masked_fill(~admits, float("inf")).min(-1)  # first minimum: lowest index
        found = torch.isfinite(d2_min)
        best = torch.where(found, arg, -1)
        best_d2 = torch.where(found, d2_min, float("inf"))
    if not batched:
        best, best_d2 = best[0], best_d2[0]
    if out is not None:
        best, best_d2 = out[0].copy_(best), out[1].copy_(best_d2)
    return Assignment(best, best_d2)


def admit_by_capacity(best: torch.Tensor, d2: torch.Tensor, size: torch.Tensor, max_cluster_size: int, *,
                      pending: torch.Tensor | None = None) -> torch.Tensor:
    """The round's capacity cut: per cluster, only its ``max_cluster_size − size`` nearest joiners get in.

    Vectorised and sync-free (it runs after the kernel on the device): one lexicographic sort by
    (cluster, d², token index), so equal d² go to the lower token index.

    Args:
        best: ``[n]`` (or ``[G, n]``) int64 from `assign_tokens` (``-1``: no candidate).
        d2: same shape float32 distance to ``best``.
        size: ``[A]`` (or ``[G, A]``) int64 candidate sizes (as given to `assign_tokens`).
        max_cluster_size: the size cap.
        pending: optional bool mask shaped like ``best``; tokens off it take no place (``_join``: already
            placed this frame).

    Returns:
        ``keep``: bool shaped like ``best``: the token joins candidate ``best`` this round.

    Example:
        >>> admit_by_capacity(torch.tensor([0, 0, 0, -1]), torch.tensor([3.0, 1.0, 3.0, float("inf")]),
        ...                   torch.tensor([2]), 4).tolist()   # room for 2: the nearest, then token 0
        [True, True, False, False]
    """
    batched = best.dim() == 2
    b, dist, sz = (t if batched else t[None] for t in (best, d2, size))
    groups, n = b.shape
    num_cand = sz.shape[1]
    if num_cand == 0:  # nothing to join (every best is -1)
        return torch.zeros_like(best, dtype=torch.bool)
    ok = b >= 0
    if pending is not None:
        ok &= pending if batched else pending[None]
    # One sort key per (group, candidate); tokens that join nothing share a key past all of them.
    group = torch.arange(groups, device=b.device)[:, None]
    key = torch.where(ok, group * num_cand + b, groups * num_cand).flatten()  # [G·n]
    order = torch.argsort(dist.flatten(), stable=True)  # by d², ties by flat index = (group, token)
    order = order[torch.argsort(key[order], stable=True)]  # then by key: within a key, by d² then token
    sorted_key = key[order]
    first = torch.searchsorted(sorted_key, sorted_key)  # where each key's run starts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=b.device) - first
    room = max_cluster_size - sz.gather(1, b.clamp(min=0))  # [G, n] places left in the chosen cluster
    keep = ok & (rank.view(groups, n) < room)
    return keep if batched else keep[0]
