"""Which clustered tokens of a cached video leave the device: the offload plan, one group per cluster.

Called when a request ends (every clustered token moves) and after each prefill chunk is checkpointed
into the radix tree (``sealed_only``: only clusters with no member in the last ``active_frames``
frames, which can no longer receive tokens, and with regrouping on, only regrouped ones). Sinks and tokens already on the host stay where they are.
"""

from __future__ import annotations

import torch

from ..clusters import ClusterIndex

__all__ = ["clusters_to_offload", "groups_to_move", "sealed_members"]


def clusters_to_offload(index: ClusterIndex, path: torch.Tensor, *, sink_tokens: int,
                        sealed_only: bool) -> list[torch.Tensor]:
    """Per cluster with a member to move, those members' positions (ascending), clusters in id order.

    Args:
        index: the video's cluster index (shared membership: group 0).
        path: ``[P] int64`` tree values of the request's cached path (device slots ``> 0``, host
            encodings ``< 0``), ``P >= index.num_tokens``.
        sink_tokens: positions below this never move (attention sinks stay on the device).
        sealed_only: move settled clusters only (mid-prefill: no member in the frames after
            `ClusterIndex.settled_frames`, which may still join or be regrouped), else every clustered token
            (request end).
    """
    indptr, members = (t.cpu() for t in index.cluster_members(0))  # the extent map is host bookkeeping
    on_device = (path[members] > 0) & (members >= sink_tokens)
    if sealed_only:
        on_device &= sealed_members(indptr, members, index.settled_end())
    return groups_to_move(indptr, members, on_device)


def sealed_members(indptr: torch.Tensor, members: torch.Tensor, settled_end: int) -> torch.Tensor:
    """``[V] bool`` per member: its cluster's last member lies before position ``settled_end``.

    Args:
        indptr, members: CSR of member positions by cluster (`ClusterIndex.cluster_members`).
        settled_end: first position of a frame whose clusters may still change
            (`ClusterIndex.settled_end`).
    """
    if members.numel() == 0:
        return torch.zeros(0, dtype=torch.bool)
    sizes = indptr[1:] - indptr[:-1]
    last_member = members[indptr[1:].clamp(min=1) - 1]  # ascending members: the last is the max
    sealed_cluster = (sizes > 0) & (last_member < settled_end)
    return torch.repeat_interleave(sealed_cluster, sizes)


def groups_to_move(indptr: torch.Tensor, members: torch.Tensor, move: torch.Tensor) -> list[torch.Tensor]:
    """Per cluster with at least one member to move, those members (ascending), clusters in id order.

    Vectorised over all members; the Python work is per cluster *moved*, so a stream that offloads each
    cluster once pays for each once, not at every chunk.

    Args:
        indptr: ``[C + 1] int64`` CSR of ``members`` by cluster.
        members: ``[V] int64`` positions.
        move: ``[V] bool`` which members move.
    """
    sizes = indptr[1:] - indptr[:-1]
    cluster_of = torch.repeat_interleave(torch.arange(sizes.numel()), sizes)[move]
    if cluster_of.numel() == 0:
        return []
    counts = torch.bincount(cluster_of, minlength=sizes.numel())
    return list(torch.split(members[move], counts[counts > 0].tolist()))
