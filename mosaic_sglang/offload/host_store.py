"""`HostKVStore`: the host tier of the offload path — cluster-contiguous K/V in host memory.

Layout: one K buffer ``[num_layers, capacity_tokens, num_kv_heads, head_dim]`` and one V buffer
``[num_layers, capacity_tokens, num_kv_heads, v_head_dim]`` (pinned when CUDA is available, so
host→device copies are true asynchronous DMA). A cluster occupies ONE contiguous extent of token rows,
at the same offsets in every layer, so moving a cluster is one contiguous copy per layer
(``k[layer, start:start + length]``), never one per token.

Allocation: `ExtentAllocator` (first fit over a free list sorted by offset, coalescing frees; see
`extents.py`). Fragmentation: clusters are 1..``max_cluster_size`` tokens, so after interleaved frees
the free space can be split into holes smaller than a request; `allocate` then fails even though
``num_free >= n`` (the error says so and reports the largest hole). There is no compaction: moving an
extent would invalidate the extents that callers (residency, the tier's row map) hold.
`fragmentation` (1 − largest hole / free) measures it.

When full: `allocate` raises `HostStoreFullError` naming the capacity, the request, the free tokens and
the largest hole. We chose a clear error over oldest-session eviction because the host store holds the
*only* copy of an offloaded cluster (its device slots were returned to SGLang's allocator): evicting it
would silently lose KV of a live or cached prefix that the radix tree still matches. Only the cache
(radix tree / session owner) knows which prefixes are unreferenced, so eviction belongs there. What
happens today: the policy catches the error and leaves the clusters that did not fit on the device (a
``host_store_full_events`` count); host extents come back when SGLang evicts a cached prefix for device
memory (its host rows are freed with it) or on a flush, or, with a spill tier, the least recently read
extents move to disk (`host_tier`). The store never evicts by itself.

Cost: `allocate` is O(free extents) (a linear first-fit scan), `free` is O(log F) search plus a list
insert. Not thread-safe (SGLang's scheduler is one Python thread).
"""

from __future__ import annotations

from typing import Sequence

import torch

from .extents import Extent, ExtentAllocator

__all__ = ["Extent", "HostKVStore", "HostStoreFullError"]


class HostStoreFullError(RuntimeError):
    """`HostKVStore.allocate` found no free extent large enough for the request."""


class HostKVStore:
    """Cluster-contiguous host store for the K/V of offloaded clusters (all sequences of a process).

    Args:
        capacity_tokens: token rows per layer (``MosaicConfig.host_store_tokens``), >= 1.
        num_layers, num_kv_heads, head_dim: K row shape ``[H, D]`` per layer.
        v_head_dim: V head dim (default ``head_dim``).
        dtype: K/V dtype (the KV pool's), default float16.
        pin_memory: pin the buffers (default: ``torch.cuda.is_available()``).
        poison: fill unwritten and freed rows with NaN (tests / ``MOSAIC_DEBUG``), so reading a row that
            holds no cluster fails loudly. Needs a floating dtype.

    Example:
        >>> store = HostKVStore(16, num_layers=2, num_kv_heads=1, head_dim=4, dtype=torch.float32)
        >>> e = store.put(torch.ones(2, 3, 1, 4), torch.zeros(2, 3, 1, 4))
        >>> e, store.num_free
        (Extent(start=0, length=3), 13)
        >>> store.read_layer([e], 1)[0].shape
        torch.Size([3, 1, 4])
    """

    def __init__(
        self,
        capacity_tokens: int,
        *,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        v_head_dim: int | None = None,
        dtype: torch.dtype = torch.float16,
        pin_memory: bool | None = None,
        poison: bool = False,
    ) -> None:
        v_head_dim = head_dim if v_head_dim is None else v_head_dim
        for name, value in (("capacity_tokens", capacity_tokens), ("num_layers", num_layers),
                            ("num_kv_heads", num_kv_heads), ("head_dim", head_dim), ("v_head_dim", v_head_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"HostKVStore: {name}: expected an integer >= 1, got {value!r}")
        if pin_memory is None:
            pin_memory = torch.cuda.is_available()
        self.capacity = capacity_tokens
        self.num_layers, self.num_kv_heads, self.head_dim, self.v_head_dim = num_layers, num_kv_heads, head_dim, v_head_dim
        self.dtype = dtype
        self.poison = poison
        self.k_buffer = torch.empty(num_layers, capacity_tokens, num_kv_heads, head_dim, dtype=dtype, pin_memory=pin_memory)
        """``[L, capacity, H, D]`` host K."""
        self.v_buffer = torch.empty(num_layers, capacity_tokens, num_kv_heads, v_head_dim, dtype=dtype, pin_memory=pin_memory)
        """``[L, capacity, H, Dv]`` host V."""
        if poison:
            self.k_buffer.fill_(float("nan"))
            self.v_buffer.fill_(float("nan"))
        self.rows = ExtentAllocator(capacity_tokens)
        """Which token rows hold a cluster."""

    # -- accounting --------------------------------------------------------------------------------

    @property
    def num_free(self) -> int:
        """Free token rows (in any number of holes)."""
        return self.rows.num_free

    @property
    def num_used(self) -> int:
        return self.rows.num_used

    @property
    def num_extents(self) -> int:
        """Allocated extents (clusters held)."""
        return self.rows.num_extents

    @property
    def largest_free(self) -> int:
        """The largest request `allocate` can satisfy now."""
        return self.rows.largest_free

    @property
    def fragmentation(self) -> float:
        """``1 - largest_free / num_free`` (0: one hole; near 1: free space shattered); 0 when full."""
        free = self.rows.num_free
        return 0.0 if free == 0 else 1.0 - self.largest_free / free

    @property
    def bytes_per_token(self) -> int:
        """Bytes of one token row of K and V in one layer (what one layer of a copy moves per token)."""
        return (self.num_kv_heads * (self.head_dim + self.v_head_dim)) * self.k_buffer.element_size()

    # -- allocation --------------------------------------------------------------------------------

    def allocate(self, length: int) -> Extent:
        """Reserve ``length`` contiguous rows (first fit, lowest offset). Contents are undefined
        (NaN with ``poison``) until written.

        Raises:
            ValueError: ``length < 1``.
            HostStoreFullError: no hole of ``length`` rows; the message gives capacity, request, free
                rows and the largest hole.
        """
        if not isinstance(length, int) or isinstance(length, bool) or length < 1:
            raise ValueError(f"HostKVStore.allocate: length: expected an integer >= 1, got {length!r}")
        extent = self.rows.allocate(length)
        if extent is not None:
            return extent
        free = self.rows.num_free
        why = "fragmented: no single hole is large enough" if free >= length else "not enough free rows"
        raise HostStoreFullError(
            f"HostKVStore full: requested {length} contiguous token rows, capacity {self.capacity}, "
            f"free {free}, largest free extent {self.largest_free} ({why}); fix: raise "
            f"MosaicConfig.host_store_tokens or free host extents of evicted/finished sessions first"
        )

    def free(self, extent: Extent) -> None:
        """Return an extent given by `allocate`/`put`; coalesces with free neighbours.

        Raises:
            ValueError: the extent is not currently allocated exactly as given (double free, a
                never-allocated range, or a wrong length) — freeing it would corrupt the free list.
        """
        start, length = int(extent[0]), int(extent[1])
        try:
            self.rows.free(Extent(start, length))
        except ValueError as e:
            raise ValueError(f"HostKVStore.{e}") from None
        if self.poison:
            self.k_buffer[:, start : start + length].fill_(float("nan"))
            self.v_buffer[:, start : start + length].fill_(float("nan"))

    def clear(self) -> None:
        """Free every extent (e.g. after all sessions ended)."""
        for extent in self.rows.extents():
            self.free(extent)

    # -- data --------------------------------------------------------------------------------------

    def put(self, k: torch.Tensor, v: torch.Tensor) -> Extent:
        """Allocate an extent for one cluster and copy its K/V in (one copy per tensor, all layers).

        Args:
            k: ``[L, n, H, D]`` (any device; cast to the store's dtype), the cluster's keys, in the order
                the caller wants them back (e.g. ascending positions).
            v: ``[L, n, H, Dv]``.

        Returns:
            The `Extent` (``length == n``) the cluster now occupies in every layer.

        Raises:
            ValueError: shape mismatch or ``n == 0``.  HostStoreFullError: see `allocate`.
        """
        expected_k = (self.num_layers, k.shape[1] if k.dim() == 4 else -1, self.num_kv_heads, self.head_dim)
        if k.dim() != 4 or tuple(k.shape) != expected_k or tuple(v.shape) != expected_k[:3] + (self.v_head_dim,):
            raise ValueError(
                f"HostKVStore.put: expected k [L={self.num_layers}, n, H={self.num_kv_heads}, D={self.head_dim}] and "
                f"v [.., Dv={self.v_head_dim}], got k {tuple(k.shape)}, v {tuple(v.shape)}"
            )
        extent = self.allocate(k.shape[1])
        self.write(extent, k, v)
        return extent

    def write(self, extent: Extent, k: torch.Tensor, v: torch.Tensor) -> None:
        """Overwrite an allocated extent with ``k [L, length, H, D]``, ``v [L, length, H, Dv]``."""
        start, length = extent
        assert self.rows.length_of(start) == length, f"write to an unallocated extent {extent}"
        self.k_buffer[:, start : start + length].copy_(k)
        self.v_buffer[:, start : start + length].copy_(v)

    def extent_view(self, extent: Extent, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views ``(k [length, H, D], v [length, H, Dv])`` of one extent in one layer (no copy)."""
        start, length = extent
        return self.k_buffer[layer, start : start + length], self.v_buffer[layer, start : start + length]

    def read_layer(self, extents: Sequence[Extent], layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of the given extents of one layer, concatenated in the given order.

        Returns:
            ``(k [sum lengths, H, D], v [sum lengths, H, Dv])`` in the store's dtype, on the host.
        """
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"HostKVStore.read_layer: layer: expected 0 <= layer < {self.num_layers}, got {layer!r}")
        for e in extents:
            assert self.rows.length_of(int(e[0])) == int(e[1]), f"read of an unallocated extent {e}"
        if not extents:
            return self.k_buffer[layer, :0].clone(), self.v_buffer[layer, :0].clone()
        ks, vs = zip(*(self.extent_view(e, layer) for e in extents))
        return torch.cat(ks), torch.cat(vs)

    # -- invariants --------------------------------------------------------------------------------

    def check_integrity(self) -> None:
        """Raise ``AssertionError`` naming the first broken invariant of the row allocation (see
        `ExtentAllocator.check_integrity`)."""
        self.rows.check_integrity()
