"""`ClusterTable`: the per-cluster summaries of one sequence, in preallocated tensors.

Rows are cluster ids of a membership group (one group when membership is shared, one per layer
otherwise). Summaries are kept per layer and KV head so every layer can score every cluster; the
layers of group ``g`` are ``layers_of_group[g]``. Capacity grows by doubling (amortised O(1) per
cluster); rows at or beyond a group's cluster count are kept zeroed ("empty").
"""

from __future__ import annotations

import torch

__all__ = ["ClusterTable", "NO_POSITION", "add_rows", "grow"]

NO_POSITION = torch.iinfo(torch.int64).max
"""`first_pos` of an empty row: neutral for the running ``amin``."""

_MIN_CAPACITY = 64
"""First allocation, in clusters: a few frames' worth, so short streams never reallocate."""


class ClusterTable:
    """Summaries per cluster: key sums, squared-norm sums, size, first position, last frame.

    Attributes (``C`` = capacity):
        key_sum: ``[L, C, H, D]`` float32 (``float64`` for a recomputed reference) sum of member keys.
        sq_sum: ``[L, C, H]`` sum of squared key norms.
        size: ``[G, C]`` int64 members.
        first_pos: ``[G, C]`` int64 smallest member position (bounds the member scan of a split).
        last_ord: ``[G, C]`` int64 ordinal of the latest frame with a member (-1 when empty).
    """

    def __init__(
        self,
        layers_of_group: torch.Tensor,
        num_kv_heads: int,
        head_dim: int,
        *,
        capacity: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.layers_of_group = layers_of_group  # [G, Lg] int64
        num_groups = layers_of_group.shape[0]
        num_layers = layers_of_group.numel()
        device = layers_of_group.device
        self.capacity = capacity
        self.key_sum = torch.zeros(num_layers, capacity, num_kv_heads, head_dim, dtype=dtype, device=device)
        self.sq_sum = torch.zeros(num_layers, capacity, num_kv_heads, dtype=dtype, device=device)
        self.size = torch.zeros(num_groups, capacity, dtype=torch.int64, device=device)
        self.first_pos = torch.full((num_groups, capacity), NO_POSITION, dtype=torch.int64, device=device)
        self.last_ord = torch.full((num_groups, capacity), -1, dtype=torch.int64, device=device)

    def reserve(self, needed: int) -> None:
        """Make room for ids ``< needed`` (doubling); new rows are empty."""
        if needed <= self.capacity:
            return
        capacity = max(needed, 2 * self.capacity, _MIN_CAPACITY)
        self.key_sum = grow(self.key_sum, 1, capacity, 0)
        self.sq_sum = grow(self.sq_sum, 1, capacity, 0)
        self.size = grow(self.size, 1, capacity, 0)
        self.first_pos = grow(self.first_pos, 1, capacity, NO_POSITION)
        self.last_ord = grow(self.last_ord, 1, capacity, -1)
        self.capacity = capacity

    def clear(self, group: torch.Tensor, cluster: torch.Tensor) -> None:
        """Empty the rows ``(group[i], cluster[i])`` (before re-adding their members exactly)."""
        layer = self.layers_of_group[group].flatten()  # [P * Lg]
        rows = cluster.repeat_interleave(self.layers_of_group.shape[1])
        self.key_sum[layer, rows] = 0
        self.sq_sum[layer, rows] = 0
        self.size[group, cluster] = 0
        self.first_pos[group, cluster] = NO_POSITION
        self.last_ord[group, cluster] = -1

    def move(self, group: int, src: torch.Tensor, dst: torch.Tensor) -> None:
        """Move rows ``src [P]`` of ``group`` to the empty rows ``dst [P]`` (disjoint); ``src`` become empty."""
        layer = self.layers_of_group[group]  # [Lg]
        self.key_sum[layer[:, None], dst] = self.key_sum[layer[:, None], src]
        self.sq_sum[layer[:, None], dst] = self.sq_sum[layer[:, None], src]
        for t in (self.size, self.first_pos, self.last_ord):
            t[group, dst] = t[group, src]
        self.clear(torch.full_like(src, group), src)

    def add(
        self,
        group: torch.Tensor,
        cluster: torch.Tensor,
        position: torch.Tensor,
        frame_ord: torch.Tensor,
        keys: torch.Tensor,
        key_row: torch.Tensor,
    ) -> None:
        """Add tokens to clusters: O(1) per token, vectorised over the batch (one `add_rows` each).

        Args:
            group, cluster, position, frame_ord: ``[P] int64`` per added (group, token) pair.
            keys: ``[L, K, H, D]`` float keys the pairs read from.
            key_row: ``[P] int64`` row of ``keys`` (dim 1) holding the pair's token.
        """
        lg = self.layers_of_group.shape[1]
        layer = self.layers_of_group[group].flatten()  # [P * Lg]
        row = layer * self.capacity + cluster.repeat_interleave(lg)
        k = keys[layer, key_row.repeat_interleave(lg)].to(self.key_sum.dtype)  # [P * Lg, H, D]
        num_layers, _, num_heads, head_dim = self.key_sum.shape
        add_rows(self.key_sum.view(-1, num_heads, head_dim), row, k)
        add_rows(self.sq_sum.view(-1, num_heads), row, k.square().sum(-1))
        flat = group * self.capacity + cluster
        self.size.view(-1).index_add_(0, flat, torch.ones_like(flat))
        self.first_pos.view(-1).scatter_reduce_(0, flat, position, reduce="amin")
        self.last_ord.view(-1).scatter_reduce_(0, flat, frame_ord, reduce="amax")

    def gather(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-layer summaries of the clusters ``ids`` of every group.

        Args:
            ids: ``[G, A] int64`` cluster ids per group (valid ids only; clamp padding first).

        Returns:
            ``(key_sum [L, A, H, D], sq_sum [L, A, H], size [L, A])``, float32; layer ``l`` reads the
            ids of its group.
        """
        num_layers, _, num_heads, head_dim = self.key_sum.shape
        group_of_layer = self.layers_of_group.new_empty(num_layers)
        group_of_layer[self.layers_of_group] = torch.arange(
            self.layers_of_group.shape[0], device=ids.device
        )[:, None].expand_as(self.layers_of_group)
        ids_by_layer = ids[group_of_layer]  # [L, A]
        key_sum = self.key_sum.gather(1, ids_by_layer[:, :, None, None].expand(-1, -1, num_heads, head_dim))
        sq_sum = self.sq_sum.gather(1, ids_by_layer[:, :, None].expand(-1, -1, num_heads))
        size = self.size[group_of_layer[:, None], ids_by_layer]
        return key_sum.float(), sq_sum.float(), size.float()


def add_rows(t: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``t.index_add_(0, index, values)`` with a run-to-run deterministic sum on every device.

    CUDA's float ``index_add_`` accumulates with atomics, in an order that changes between runs, so a
    cluster's key sums (and every threshold test on them: join, split) could differ between runs and
    between tensor-parallel ranks; ``index_put_(accumulate=True)`` sorts the indices first there. On the
    CPU ``index_add_`` is already sequential (kept: same bits as before).
    """
    if t.is_cuda and t.is_floating_point():
        return t.index_put_((index,), values, accumulate=True)
    return t.index_add_(0, index, values)


def grow(t: torch.Tensor, dim: int, capacity: int, fill: float | int) -> torch.Tensor:
    """``t`` widened along ``dim`` to ``capacity`` (new entries ``fill``): the doubling arenas' growth step."""
    shape = list(t.shape)
    shape[dim] = capacity
    out = t.new_full(shape, fill)
    out.narrow(dim, 0, t.shape[dim]).copy_(t)
    return out
