"""Per-layer row orders inside host extents: one cluster membership per layer, served from the host tier.

With ``MosaicConfig.membership='per_layer'`` every layer has clusters of its own. The host tier still
allocates one extent of rows per offloaded group of positions (the radix tree keeps one host row per
position, for every layer), but writes layer ``l``'s plane of the extent in (layer-``l`` cluster, position)
order. Each layer-``l`` cluster inside the extent is then one contiguous **sub-range** of that plane: one
copy per (layer, cluster), as a shared cluster is one copy per layer. A cluster whose members went to the
host in several extents has one sub-range in each (the offload planner groups positions so that this is
rare: `planner.closed_groups`).

Bookkeeping over the tier's virtual row space, by virtual row (``[L, rows] int32``): ``rank`` (the row's
offset inside its extent in layer ``l``'s order), ``sub`` (the offset of its sub-range's first row) and
``length`` (its sub-range's length). A sub-range is named by ``extent start + sub``, a virtual row of that
extent, unique within a layer: the id the device cluster caches keep.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["LayerOrders", "ExtentOrder", "extent_order"]


class ExtentOrder(NamedTuple):
    """One extent's layout (``L`` layers, ``M`` rows), from `extent_order`.

    Attributes:
        rank: ``[L, M] int64`` offset of member ``i`` in layer ``l``'s order.
        sub: ``[L, M] int64`` offset of the first row of member ``i``'s sub-range in layer ``l``.
        length: ``[L, M] int64`` length of that sub-range.
    """

    rank: torch.Tensor
    sub: torch.Tensor
    length: torch.Tensor

    def permute(self, x: torch.Tensor) -> torch.Tensor:
        """``x [L, M, ...]`` (members in the group's order) → the planes as written: row ``rank[l, i]`` of
        layer ``l`` holds member ``i``."""
        out = torch.empty_like(x)
        for layer in range(x.shape[0]):
            out[layer, self.rank[layer]] = x[layer]
        return out


def extent_order(cluster_of: torch.Tensor) -> ExtentOrder:
    """The layout of an extent whose members (ascending positions) belong to clusters ``cluster_of [L, M]
    int64`` (layer ``l``'s cluster id of member ``i``): per layer, members sorted by cluster, positions in
    order within one; each cluster's run is a sub-range."""
    num_layers, m = cluster_of.shape
    order = torch.sort(cluster_of, dim=1, stable=True).indices  # [L, M] member at each offset
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(m).expand(num_layers, m).contiguous())
    ordered = torch.gather(cluster_of, 1, order)  # [L, M] cluster id at each offset
    opens = torch.ones_like(ordered, dtype=torch.bool)
    opens[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    offsets = torch.arange(m).expand(num_layers, m)
    first = torch.where(opens, offsets, 0).cummax(dim=1).values  # [L, M] sub-range start at each offset
    closes = torch.ones_like(opens)
    closes[:, :-1] = opens[:, 1:]
    last = torch.where(closes, offsets, m).flip(1).cummin(dim=1).values.flip(1)  # sub-range end - 1 at each offset
    sub_at, length_at = first, last - first + 1
    return ExtentOrder(rank, torch.gather(sub_at, 1, rank), torch.gather(length_at, 1, rank))


class LayerOrders:
    """The per-layer layout of every live extent of a host tier (see the module docstring).

    Args:
        num_layers: ``L``.
        capacity: rows of the tier's virtual row space.
    """

    def __init__(self, num_layers: int, capacity: int) -> None:
        self.rank = torch.zeros(num_layers, capacity, dtype=torch.int32)
        self.sub = torch.zeros(num_layers, capacity, dtype=torch.int32)
        self.length = torch.zeros(num_layers, capacity, dtype=torch.int32)

    def hold(self, start: int, layout: ExtentOrder) -> None:
        """Extent ``[start, start + M)`` is laid out as ``layout``."""
        m = layout.rank.shape[1]
        self.rank[:, start : start + m] = layout.rank.to(torch.int32)
        self.sub[:, start : start + m] = layout.sub.to(torch.int32)
        self.length[:, start : start + m] = layout.length.to(torch.int32)

    def sub_ranges(self, layer: int, host_rows: torch.Tensor, starts: torch.Tensor):
        """Of virtual ``host_rows [n]`` in extents ``starts [n]`` at ``layer``: ``(ids [u], which [n], offset
        [n], sub [u], length [u])``: the sub-ranges they lie in (ids ``start + sub``, ascending), each row's
        sub-range, its offset inside it, and each sub-range's offset in its extent and length."""
        sub = self.sub[layer, host_rows].long()
        ids, which = torch.unique(starts + sub, return_inverse=True)
        first = torch.zeros(ids.numel(), dtype=torch.int64).scatter_(0, which, torch.arange(which.numel()))
        offset = self.rank[layer, host_rows].long() - sub
        return ids, which, offset, sub[first], self.length[layer, host_rows[first]].long()

    def physical(self, layer: int, host_rows: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """Rows of layer ``layer``'s plane, relative to their extents' placement: ``start + rank``."""
        return starts + self.rank[layer, host_rows].long()

    def check(self, start: int, length: int) -> None:
        """Debug: in every layer the extent's ranks are a permutation of its rows and each sub-range lies
        inside it."""
        rank = self.rank[:, start : start + length].long()
        assert bool((torch.sort(rank, dim=1).values == torch.arange(length)).all()), \
            f"extent {start}: per-layer ranks are not a permutation of its {length} rows"
        sub, n = self.sub[:, start : start + length].long(), self.length[:, start : start + length].long()
        assert bool(((sub <= rank) & (rank < sub + n) & (sub + n <= length)).all()), \
            f"extent {start}: a row outside its sub-range"
