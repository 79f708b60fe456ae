"""Segmented 2-means: split many clusters at once, one Lloyd loop for all of them.

Used by `ClusterIndex.maintain` (deferred splitting). Pure torch, deterministic given the generator.
"""

from __future__ import annotations

import torch

from .table import add_rows

__all__ = ["two_means", "segment_mean"]

LLOYD_ITERS = 8
"""Fixed iteration count: 2-means on at most a few hundred members settles in a handful of Lloyd
steps; a fixed bound keeps maintenance work predictable (no data-dependent loop, no host sync)."""


def two_means(
    features: torch.Tensor, segment: torch.Tensor, num_segments: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split each segment of points in two with 2-means (squared Euclidean distance).

    Initialisation: one member drawn uniformly from ``generator`` per segment, and the member farthest
    from it (k-means++-like, deterministic given the generator). Then `LLOYD_ITERS` Lloyd steps.

    Args:
        features: ``[M, F]`` float32 member features.
        segment: ``[M] int64`` segment (cluster to split) of each member, in ``[0, num_segments)``;
            every segment must have at least one member.
        num_segments: ``S``.
        generator: a CPU ``torch.Generator`` (seeded by the caller).

    Returns:
        ``(right [M] bool, ok [S] bool)``: members assigned to the second child, and whether a
        segment really split (both children non-empty; ``False`` e.g. when all members coincide).
    """
    m = features.shape[0]
    device = features.device
    counts = torch.bincount(segment, minlength=num_segments)  # [S]
    order = torch.argsort(segment, stable=True)
    starts = torch.cumsum(counts, 0) - counts  # [S] first row of each segment in `order`
    draw = torch.rand(num_segments, generator=generator).to(device)
    first = order[starts + (draw * counts).long().clamp(max=counts - 1).clamp(min=0)]
    centre_a = features[first]  # [S, F]
    dist_a = (features - centre_a[segment]).square().sum(-1)  # [M]
    far = torch.full((num_segments,), float("-inf"), device=device).scatter_reduce(
        0, segment, dist_a, reduce="amax"
    )
    rows = torch.arange(m, device=device)
    candidate = torch.where(dist_a == far[segment], rows, m)
    second = torch.full((num_segments,), m, device=device).scatter_reduce(0, segment, candidate, reduce="amin")
    centre_b = features[second]
    right = torch.zeros(m, dtype=torch.bool, device=device)
    for _ in range(LLOYD_ITERS):
        dist_a = (features - centre_a[segment]).square().sum(-1)
        dist_b = (features - centre_b[segment]).square().sum(-1)
        right = dist_b < dist_a
        centre_a = segment_mean(features, segment, ~right, centre_a)
        centre_b = segment_mean(features, segment, right, centre_b)
    n_right = torch.zeros(num_segments, dtype=torch.long, device=device).index_add_(0, segment, right.long())
    ok = (n_right > 0) & (n_right < counts)
    return right, ok


def segment_mean(
    features: torch.Tensor, segment: torch.Tensor, member: torch.Tensor, previous: torch.Tensor
) -> torch.Tensor:
    """``[S, F]`` mean of the selected members per segment; ``previous`` where a segment has none."""
    weight = member.float()
    total = add_rows(torch.zeros_like(previous), segment, features * weight[:, None])
    count = add_rows(torch.zeros(previous.shape[0], device=features.device), segment, weight)
    return torch.where(count[:, None] > 0, total / count.clamp(min=1)[:, None], previous)
