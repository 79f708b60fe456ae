"""Which clustered tokens of a cached video leave the device: the offload plan, one group per cluster.

Called when a request ends (every clustered token moves) and after each prefill chunk is checkpointed
into the radix tree (``sealed_only``: only settled clusters — no token can join them; with regrouping on,
the regrouped ones — with no member in the last ``active_frames`` frames, `ClusterIndex.movable_clusters`).
Sinks stay on the device. With regrouping and per-layer memberships (`stream_groups`), sealed clusters not
regrouped yet move too, into *provisional* extents, and are written again in the regrouped layout once
movable (host to host), so a streamed prefill's device tokens do not wait for a regrouping span.
"""

from __future__ import annotations

import torch

from ..clusters import ClusterIndex

__all__ = ["clusters_to_offload", "closed_groups", "component_groups", "groups_to_move", "settled_members",
           "stream_groups"]


def clusters_to_offload(index: ClusterIndex, path: torch.Tensor, *, sink_tokens: int,
                        sealed_only: bool) -> list[torch.Tensor]:
    """Per cluster with a member to move, those members' positions (ascending), clusters in id order.

    Args:
        index: the video's cluster index (shared membership: group 0).
        path: ``[P] int64`` tree values of the request's cached path (device slots ``> 0``, host
            encodings ``< 0``), ``P >= index.num_tokens``.
        sink_tokens: positions below this never move (attention sinks stay on the device).
        sealed_only: move settled clusters outside the active frames only (mid-prefill:
            `ClusterIndex.movable_clusters`: no token can join them and no regroup will change them),
            else every clustered token (request end).
    """
    indptr, members = (t.cpu() for t in index.cluster_members(0))  # the extent map is host bookkeeping
    on_device = (path[members] > 0) & (members >= sink_tokens)
    if sealed_only:
        on_device &= settled_members(indptr, index.movable_clusters(0).cpu())
    return groups_to_move(indptr, members, on_device)


MAX_GROUP_TOKENS = 4096
"""Largest offload group of `closed_groups`: a component past it is cut into position runs (a cluster cut
there is two copies), so no extent needs a huge contiguous stretch of host rows."""


def closed_groups(index: ClusterIndex, path: torch.Tensor, *, sink_tokens: int, sealed_only: bool,
                  max_group_tokens: int = MAX_GROUP_TOKENS) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """With one membership per layer: the positions to move, grouped so that a group holds whole clusters of
    *every* layer where it can (the connected components of "shares a cluster in some layer" among the
    positions that move), and each position's cluster per layer. The host tier lays each group out as one
    extent with a row order per layer (`layer_orders.py`), so a layer's cluster inside it is one copy. A
    cluster split over groups (some of it moved earlier or kept on the device, or a component cut at
    ``max_group_tokens``) is one copy per group.

    Args: as `clusters_to_offload`; ``sealed_only`` moves a position only when its cluster is movable in every
    layer (`ClusterIndex.movable_clusters` of each layer's group): the device bound of a streamed prefill does
    not wait for a whole component to settle.

    Returns:
        ``(groups, clusters)``: per group, ``[M] int64`` positions (ascending) and ``[L, M] int64`` their
        cluster id in each layer; groups by first position.
    """
    n = index.num_tokens
    assign = index.view().assign[:, :n].cpu()  # [G, N]
    position = torch.arange(n)
    move = (assign >= 0).all(0) & (path[:n] > 0) & (position >= sink_tokens)
    if sealed_only:
        move &= _every_group(index, assign, index.movable_clusters)
    return component_groups(index, move, max_group_tokens)


def stream_groups(index: ClusterIndex, path: torch.Tensor, provisional: torch.Tensor, *, sink_tokens: int,
                  sealed_only: bool, max_group_tokens: int = MAX_GROUP_TOKENS):
    """With regrouping and one membership per layer: `closed_groups`, plus what keeps a streamed prefill's
    device bound at the clusters still open. A sealed position whose clusters are not regrouped yet moves at
    once, in its online clusters' layout (*provisional*); once every layer's cluster of a provisional host
    position is movable (regrouped and sealed; at the request's end: regrouped), it is laid out again with
    the regrouped clusters (*rehosted*, host to host).

    Args: as `closed_groups`; ``provisional``: ``[N] bool`` host positions in provisional extents.

    Returns:
        ``(final, provisional_new)``: each ``(groups, clusters)`` as `closed_groups`. ``final`` groups may mix
        device positions (``path > 0``) with provisional host ones (``path < 0``): both are written in
        the settled layout. ``provisional_new``: device positions to move provisionally (at the request's
        end: every device position not regrouped yet, so that a later regroup still lays it out again).
    """
    n = index.num_tokens
    assign = index.view().assign[:, :n].cpu()  # [G, N]
    eligible = (assign >= 0).all(0) & (torch.arange(n) >= sink_tokens)
    on_device = path[:n] > 0
    if not sealed_only:  # the request ended: every device position moves, settled ones (and provisional) for good
        settled = _every_group(index, assign, index.settled_clusters)
        final = eligible & settled & (on_device | provisional[:n])
        early = eligible & on_device & ~settled
        return component_groups(index, final, max_group_tokens), component_groups(index, early, max_group_tokens)
    movable = _every_group(index, assign, index.movable_clusters)
    final = eligible & movable & (on_device | provisional[:n])
    early = eligible & on_device & ~movable & _every_group(index, assign, index.sealed_clusters)
    return component_groups(index, final, max_group_tokens), component_groups(index, early, max_group_tokens)


def _every_group(index: ClusterIndex, assign: torch.Tensor, per_cluster) -> torch.Tensor:
    """``[N] bool``: positions whose cluster satisfies ``per_cluster(group) -> [C_g] bool`` in every
    membership group (``assign [G, N]``, ``-1``: unclustered, never satisfies)."""
    ok = torch.ones(assign.shape[1], dtype=torch.bool)
    for g in range(assign.shape[0]):
        ok &= per_cluster(g).cpu()[assign[g].clamp(min=0)] & (assign[g] >= 0)
    return ok


def component_groups(index: ClusterIndex, move: torch.Tensor,
                     max_group_tokens: int = MAX_GROUP_TOKENS) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The positions ``move [N] bool`` grouped as `closed_groups` returns them: the connected components of
    "shares a cluster in some layer" (cut at ``max_group_tokens``), with each position's cluster per layer."""
    view = index.view()
    n = index.num_tokens
    assign = view.assign[:, :n].cpu()  # [G, N]
    position = torch.arange(n)
    # connected components, each labelled by its first position: every cluster takes its members' lowest
    # label, then labels jump to their label's label (a label is a position of the same component), until
    # nothing changes; the jumps keep the sweeps few when clusters chain across a long stretch
    label = torch.where(move, position, n)
    while True:
        before = label.clone()
        for g in range(assign.shape[0]):
            ids = assign[g, move]
            low = torch.full((int(assign[g].max()) + 1,), n, dtype=torch.int64).scatter_reduce(0, ids, label[move], "amin")
            label[move] = torch.minimum(label[move], low[ids])
        while True:
            jumped = torch.cat([label, label.new_full((1,), n)])[label]
            if torch.equal(jumped, label):
                break
            label = jumped
        if torch.equal(label, before):
            break
    members = position[move]
    members = members[torch.argsort(label[move] * (n + 1) + members)]  # by component, then position
    counts = torch.unique_consecutive(label[members], return_counts=True)[1]
    groups = [piece for component in torch.split(members, counts.tolist())
              for piece in torch.split(component, max_group_tokens)]
    per_layer = assign[view.group_of_layer.cpu()]  # [L, N]
    return groups, [per_layer[:, g] for g in groups]


def settled_members(indptr: torch.Tensor, settled: torch.Tensor) -> torch.Tensor:
    """``[V] bool`` per member (CSR by cluster, `ClusterIndex.cluster_members`): its cluster is settled
    (``settled [C] bool``, `ClusterIndex.settled_clusters`)."""
    return torch.repeat_interleave(settled, indptr[1:] - indptr[:-1])


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
