"""Regrouping sealed clusters into coarser ones: k-means over their members, off the decode path.

Used by `ClusterIndex.maintain` when ``config.regroup_tokens > 0``: once ``config.regroup_frames`` frames
are sealed (no cluster with a member there can receive a token again), the online clusters of those
frames (typically 2-5 tokens each: the join test is local and strict) are replaced by k-means clusters of
about ``regroup_tokens`` tokens in the same membership geometry. Pure torch, deterministic (no random
draw: the initial centres are members evenly spaced in position order, which also starts every centre
in a different part of the span).
"""

from __future__ import annotations

import torch

from .split import segment_mean

__all__ = ["regroup_kmeans", "RegroupSealed", "REGROUP_ITERS"]

REGROUP_ITERS = 8
"""Lloyd steps (fixed, like `split.LLOYD_ITERS`: predictable maintenance work, no data-dependent loop)."""


def regroup_kmeans(features: torch.Tensor, tokens_per_cluster: int, max_cluster_size: int) -> tuple[torch.Tensor, int]:
    """Cluster ``M`` members into about ``M / tokens_per_cluster`` groups, none over the size cap.

    Args:
        features: ``[M, F]`` float32 membership features of the members, **in ascending position order**.
        tokens_per_cluster: target mean size (``K = ceil(M / tokens_per_cluster)`` centres).
        max_cluster_size: cap; a k-means group larger than it is cut into consecutive runs of members (in
            position order) of at most the cap.

    Returns:
        ``(labels [M] int64, count)``: dense group ids in ``[0, count)``, numbered by first member.
    """
    m = features.shape[0]
    device = features.device
    if m == 0:
        return torch.empty(0, dtype=torch.int64, device=device), 0
    k = -(-m // tokens_per_cluster)
    centres = features[torch.linspace(0, m - 1, k, device=device).round().long()]  # [K, F]
    sq = features.square().sum(-1)  # [M]
    labels = torch.zeros(m, dtype=torch.int64, device=device)
    for _ in range(REGROUP_ITERS):
        d2 = sq[:, None] - 2 * features @ centres.T + centres.square().sum(-1)[None, :]  # [M, K]
        labels = d2.argmin(1)
        centres = segment_mean(features, labels, torch.ones(m, dtype=torch.bool, device=device), centres)  # empty: kept
    return _dense_under_cap(labels, max_cluster_size)


def _dense_under_cap(labels: torch.Tensor, cap: int) -> tuple[torch.Tensor, int]:
    """Renumber ``labels [M]`` densely by first member, cutting groups over ``cap`` into position runs."""
    m = labels.numel()
    order = torch.argsort(labels, stable=True)  # stable: members of a group stay in position order
    sorted_labels = labels[order]
    new_group = torch.ones(m, dtype=torch.bool, device=labels.device)
    new_group[1:] = sorted_labels[1:] != sorted_labels[:-1]
    start = torch.where(new_group, torch.arange(m, device=labels.device), 0).cummax(0).values
    rank = torch.arange(m, device=labels.device) - start  # rank of a member inside its k-means group
    new_group |= (rank % cap == 0)  # every cap-th member opens the next run
    piece = torch.cumsum(new_group.long(), 0) - 1
    out = torch.empty_like(labels)
    out[order] = piece
    # number by first member (position order), so ids follow the stream
    first = torch.full((int(piece[-1]) + 1,), m, dtype=torch.int64, device=labels.device)
    first.scatter_reduce_(0, out, torch.arange(m, device=labels.device), reduce="amin")
    renumber = torch.empty_like(first)
    renumber[torch.argsort(first)] = torch.arange(first.numel(), device=labels.device)
    return renumber[out], first.numel()


class RegroupSealed:
    """`ClusterIndex`'s regrouping half (a mixin over the index's state, kept here with its maths): which
    frames are settled, the regroup of a due span, and the id compaction it needs."""

    def _sealed_frames(self) -> int:
        """Frames (from the stream's start) no token can join any more: all but the last `active_frames`."""
        return max(self._num_frames - self.config.active_frames, 0)

    @property
    def settled_frames(self) -> int:
        """Frames (from the stream's start) that no token can join and that no regroup will touch again:
        without regrouping, the sealed frames; with it, those regrouped."""
        return self._regrouped_ord if self.config.regroup_tokens else self._sealed_frames()

    def settled_clusters(self, group: int = 0) -> torch.Tensor:
        """``[C_g] bool`` per cluster of ``group``: it will not change any more (no join, no regroup, no
        split): what an offload may move as a whole. Without regrouping, the sealed clusters (last member
        before the last `active_frames` frames) not waiting for a split; with it, the regrouped ones."""
        count = self._num_clusters[group]
        if self.config.regroup_tokens:
            return self._regrouped[group, :count].clone()
        return (self._table.last_ord[group, :count] < self._sealed_frames()) & ~self._marked[group, :count]

    def _regroup_due(self) -> None:
        """Regroup the sealed frames past the last regrouped one, ``config.regroup_frames`` at a time (a
        prefill chunk can seal many frames at once: each span stays one bounded k-means)."""
        span = self.config.regroup_frames
        while self._sealed_frames() - self._regrouped_ord >= span:
            self._regroup_span(self._regrouped_ord + span)
            self._regrouped_ord += span  # only once the span is done
            self.num_regroups += 1

    def regroup_tail(self) -> int:
        """Regroup every cluster not regrouped yet, the active frames' included: what `maintain` leaves online
        until a whole span of ``regroup_frames`` is sealed. For when the stream pauses (a question
        arrives; never in a decode step): a question's selection takes much of its budget from the recent
        frames, where online clusters are smallest (benchmarks/README.md, granularity section).

        Complete spans go first, as `maintain` would; the rest (at most ``regroup_frames - 1`` sealed
        frames plus the active ones, and any piece of a frame continued after an earlier tail) is one more
        k-means span. Afterwards no cluster takes joins: tokens appended later (a frame continued, the next
        frames) start fresh clusters, and the next span falls due ``regroup_frames`` sealed frames after
        this point.

        Returns:
            Clusters the tail span replaced, over all membership groups (0 without ``regroup_tokens`` or
            when every cluster was regrouped already).
        """
        if not self.config.regroup_tokens:
            return 0
        self._regroup_due()
        online = sum(int((~self._regrouped[g, :count]).sum()) for g, count in enumerate(self._num_clusters))
        if online:
            self._regroup_span(self._num_frames)
            self.num_regroups += 1
        self._regrouped_ord = max(self._regrouped_ord, self._num_frames)
        return online

    def sealed_clusters(self, group: int = 0) -> torch.Tensor:
        """``[C_g] bool``: clusters with no member in the last `active_frames` frames (no token joins them any
        more; a regroup may still replace them)."""
        return self._table.last_ord[group, : self._num_clusters[group]] < self._sealed_frames()

    def movable_clusters(self, group: int = 0) -> torch.Tensor:
        """``[C_g] bool``: settled clusters with no member in the last `active_frames` frames, what an
        offload may move before the request ends. The recent frames are what a question reads most, so
        they stay on the device even when `regroup_tail` has settled them."""
        return self.settled_clusters(group) & self.sealed_clusters(group)

    def _regroup_span(self, hi_ord: int) -> None:
        """Replace every not yet regrouped cluster whose last member lies before frame ``hi_ord`` (the span's
        own clusters, and any piece a split left behind earlier) by k-means clusters of about
        ``config.regroup_tokens`` tokens, per membership group; ids stay dense."""
        cfg = self.config
        mean, inv_std = self._key_scale()
        for g in range(self._layers_of_group.shape[0]):
            count = self._num_clusters[g]
            old = ((self._table.last_ord[g, :count] < hi_ord) & ~self._regrouped[g, :count]).nonzero().flatten()  # [R]
            if old.numel() == 0:
                continue
            lo = int(self._table.first_pos[g, old].min())
            span = self._assign[g, lo : self._n]
            member = torch.zeros(count + 1, dtype=torch.bool, device=self.device)  # [C + 1]: the last is "none"
            member[old] = True
            positions = member[span].nonzero().flatten() + lo  # ascending; span == -1 reads member[C] = False
            keys = self._read_keys(positions)  # [L, M, H, D]
            layers = self._layers_of_group[g]  # only this group's layers (per_layer: one)
            z = (keys[layers] - mean[layers][:, None]) * inv_std[layers][:, None, :, None]  # [Lg, M, H, D]
            labels, k = regroup_kmeans(z.permute(1, 0, 2, 3).reshape(positions.numel(), -1), cfg.regroup_tokens,
                                       cfg.max_cluster_size)
            # everything that can fail is done: now the state changes
            extra = max(k - old.numel(), 0)
            ids = torch.cat([old, self._allocate(torch.full((extra,), g, device=self.device))])[:k]
            self._num_marked -= int(self._marked[g, old].sum())
            self._marked[g, old] = False
            active = self._active[g]
            self._active[g] = torch.where((active >= 0) & member[active.clamp(min=0)], -1, active)  # sealed: not active
            self._table.clear(torch.full_like(old, g), old)
            self._add(torch.full_like(positions, g), ids[labels], positions, self._frame_ord[positions], keys,
                      torch.arange(positions.numel(), device=self.device))
            self._regrouped[g, ids] = True
            if k < old.numel():
                self._compact(g, old[k:])

    def _compact(self, g: int, holes: torch.Tensor) -> None:
        """Close the emptied ids ``holes [h]`` (ascending) of group ``g``: the highest live ids move into
        them (their table rows, marks, regrouped flags, members and active entries), so ids stay dense."""
        count = self._num_clusters[g]
        new_count = count - holes.numel()
        top = torch.arange(new_count, count, device=self.device)
        is_hole = torch.zeros(count, dtype=torch.bool, device=self.device)
        is_hole[holes] = True
        movers, targets = top[~is_hole[top]], holes[holes < new_count]
        remap = torch.arange(count, device=self.device)
        remap[movers] = targets
        if movers.numel():
            lo = int(self._table.first_pos[g, movers].min())
            span = self._assign[g, lo : self._n]
            self._assign[g, lo : self._n] = torch.where(span >= 0, remap[span.clamp(min=0)], span)
            self._members = None
            self._table.move(g, movers, targets)
            self._marked[g, targets] = self._marked[g, movers]
            self._regrouped[g, targets] = self._regrouped[g, movers]
        self._marked[g, new_count:count] = False
        self._regrouped[g, new_count:count] = False
        active = self._active[g]  # holes were sealed clusters, already out of the active set
        self._active[g] = torch.where(active >= 0, remap[active.clamp(min=0)], -1)
        self._num_clusters[g] = new_count
