"""Cluster members as CSR: what the emission kernel (K3, `emit_members`) reads, so a selection writes
the members of its chosen clusters in O(selected) instead of scanning every position's cluster id.

`ClusterIndex.member_lists` builds `MemberLists` from the assignment when something asks for it (a
selection, the offload planner) and keeps it until membership changes (a token joins or opens a
cluster, a split, a regroup, a truncation); text appends and decode steps leave it valid. So the build
(one sort of G·N `(cluster, position)` keys) happens once per extend at most, and a
decode step that re-selects at every layer reuses it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..csr import indptr_from_counts
from ..host_ints import host_ints_to_device

__all__ = ["MemberLists", "build_member_lists"]


class MemberLists(NamedTuple):
    """Members of every cluster of every membership group, one global cluster numbering.

    Group ``g``'s cluster ``c`` is global cluster ``group_base[g] + c``; it owns
    ``positions[indptr[group_base[g] + c] : indptr[group_base[g] + c + 1]]``, ascending.

    Attributes:
        indptr: ``[ΣC_g + 1] int64`` CSR over the global clusters.
        positions: ``[G · V] int64`` member positions (every visual token once per group).
        group_base: ``[G] int64`` global id of each group's cluster 0 (on the index's device).
    """

    indptr: torch.Tensor
    positions: torch.Tensor
    group_base: torch.Tensor

    def group(self, g: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(indptr [C_g + 1], positions [V])`` of group ``g`` alone (views, ``indptr`` rebased to 0)."""
        base = int(self.group_base[g])
        end = int(self.group_base[g + 1]) if g + 1 < self.group_base.numel() else self.indptr.numel() - 1
        indptr = self.indptr[base : end + 1]
        start = int(indptr[0])
        return indptr - start, self.positions[start : int(indptr[-1])]


def build_member_lists(assign: torch.Tensor, num_clusters: list[int], num_members: int) -> MemberLists:
    """`MemberLists` from ``assign [G, N] int64`` (cluster id per position and group, ``-1`` for none), the
    host cluster counts per group (ids ``0 .. num_clusters[g] - 1`` live, none empty) and the members per
    group (``num_members``: every visual token is in one cluster of every group).

    No host synchronisation (fixed shapes from the host counts: a decode step may build it): one sort of
    ``G · N`` keys ``(global cluster, position)``, text last.
    """
    device = assign.device
    groups, n = assign.shape
    (counts,) = host_ints_to_device([num_clusters], device)  # [G], one pinned copy: no sync
    group_base = torch.cumsum(counts, 0) - counts  # [G]
    total = int(sum(num_clusters))
    cluster = torch.where(assign >= 0, group_base[:, None] + assign, total)  # [G, N] global id, text -> total
    key = cluster * (n + 1) + torch.arange(n, device=device)  # ascending: by cluster, then position
    key = key.flatten().sort().values[: groups * num_members]  # the members; text keys sort last
    cluster, positions = key // (n + 1), key % (n + 1)
    sizes = torch.zeros(total, dtype=torch.int64, device=device).scatter_add_(0, cluster, torch.ones_like(cluster))
    return MemberLists(indptr_from_counts(sizes), positions, group_base)
