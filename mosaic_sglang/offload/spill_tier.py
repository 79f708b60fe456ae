"""`SpillTier`: the third tier below the host store — whole cluster extents as blobs in a key-value
storage backend (an SGLang HiCache storage backend; `integration.hicache_spill` adapts one).

When the host store has no room, the host tier writes its least recently read extents here and frees
their host rows; a later read of such a cluster loads it back into a free host extent (all layers in one
blob, one backend read) before the copy to the device. Extents never change after they are offloaded,
so a loaded extent keeps its blob: spilling it again frees its host rows without a second write. A blob
is deleted when the tree frees the cluster.

Blob layout: one flat tensor in the store's dtype, ``k [L, n, H, D]`` then ``v [L, n, H, Dv]``
(contiguous, row-major). Keys are unique per process and per write (``<prefix>-<serial>``): a backend's
``set`` may keep an existing key's old bytes, so no key is ever reused.

A backend that loses a blob (it evicted it on its own, or someone deleted the file) loses the only copy
of that cluster's KV: the read raises `SpillLostError` naming the key. The file backend is created with
its own eviction off for that reason (`integration.hicache_spill`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Optional, Protocol

import torch

from .extents import Extent
from .host_store import HostKVStore

__all__ = ["SpillBackend", "SpillTier", "SpillStats", "SpillLostError", "SpillRefusedError"]


class SpillLostError(RuntimeError):
    """The spill backend no longer holds a blob the host tier wrote (the cluster's only copy)."""


class SpillRefusedError(RuntimeError):
    """The backend refused a write where a refusal may not be absorbed (tensor parallelism)."""


class SpillBackend(Protocol):
    """What the spill tier needs of a storage backend (blobs of bytes by string key)."""

    name: str
    """For logs and errors (e.g. ``'hicache:file'``)."""

    def put(self, key: str, value: torch.Tensor) -> bool:
        """Store ``value`` (a contiguous CPU tensor) under a new ``key``; False when it could not."""

    def get(self, key: str, out: torch.Tensor) -> bool:
        """Fill ``out`` (contiguous CPU tensor of the stored size) from ``key``; False when it is absent."""

    def delete(self, key: str) -> None:
        """Forget ``key`` (no error when absent)."""

    def clear(self) -> None:
        """Forget every key this process wrote."""


@dataclass
class SpillStats:
    """Running totals of one spill tier."""

    writes: int = 0
    """Extents written (a spill of an extent that already has its blob writes nothing)."""
    written_bytes: int = 0
    failed_writes: int = 0
    """Writes the backend refused (the extent stayed in the host store)."""
    spills: int = 0
    """Extents whose host rows were freed (written now or earlier)."""
    spilled_tokens: int = 0
    loads: int = 0
    """Extents read back into the host store."""
    loaded_tokens: int = 0
    direct_reads: int = 0
    """Blobs read without placing them in the host store (a read larger than the store could free)."""
    loaded_bytes: int = 0
    """Bytes of every blob read (loads and direct reads)."""


class SpillTier:
    """Blob I/O of cluster extents between a `HostKVStore` and a `SpillBackend`.

    Args:
        backend: where blobs go.
        store: the host store whose extents are written and loaded (shapes, dtype, buffers).
        refusal_is_fatal: raise `SpillRefusedError` when the backend refuses a write instead of leaving
            the cluster where it is. Under tensor parallelism a refusal seen by one rank only (its disk is
            full) would make that rank offload less than its peers and split their radix trees, so the
            serving path sets it there.
    """

    def __init__(self, backend: SpillBackend, store: HostKVStore, *, refusal_is_fatal: bool = False) -> None:
        self.backend, self.store, self.refusal_is_fatal = backend, store, refusal_is_fatal
        self.stats = SpillStats()
        self._prefix = f"mosaic-{uuid.uuid4().hex[:12]}"
        self._serial = 0
        self.held_tokens = 0
        """Tokens of the extents that have a blob (spilled or loaded back)."""

    def blob_numel(self, length: int) -> int:
        s = self.store
        return s.num_layers * length * s.num_kv_heads * (s.head_dim + s.v_head_dim)

    def write(self, extent: Extent) -> Optional[str]:
        """Write host extent ``extent`` (all layers) as a new blob; its key, or None if refused."""
        s, (start, length) = self.store, extent
        blob = torch.cat([s.k_buffer[:, start : start + length].reshape(-1), s.v_buffer[:, start : start + length].reshape(-1)])
        key = f"{self._prefix}-{self._serial}"
        self._serial += 1
        if not self.backend.put(key, blob):
            self.stats.failed_writes += 1
            if self.refusal_is_fatal:
                raise SpillRefusedError(
                    f"spill tier ({self.backend.name}): the backend refused a {length}-token blob; with tensor "
                    "parallelism every rank must spill alike, so this stops the rank instead of diverging"
                )
            return None
        self.stats.writes += 1
        self.stats.written_bytes += blob.numel() * blob.element_size()
        self.held_tokens += length
        return key

    def load(self, key: str, extent: Extent) -> None:
        """Fill host extent ``extent`` (allocated, ``length`` = the blob's) from blob ``key``.

        Raises:
            SpillLostError: the backend does not hold ``key`` (or holds fewer bytes).
        """
        k, v = self._read(key, extent.length)
        self.store.write(extent, k, v)
        self.stats.loads += 1
        self.stats.loaded_tokens += extent.length

    def read_blob(self, key: str, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(k [L, length, H, D], v [L, length, H, Dv])`` of blob ``key`` without placing it in the host
        store (a read larger than the store's free room). Raises `SpillLostError` as `load`."""
        self.stats.direct_reads += 1
        return self._read(key, length)

    def _read(self, key: str, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.store
        blob = torch.empty(self.blob_numel(length), dtype=s.dtype)
        if not self.backend.get(key, blob):
            raise SpillLostError(
                f"spill tier ({self.backend.name}): blob {key!r} of a {length}-token cluster is gone from the "
                "backend; it held the cluster's only copy (the backend must not evict Mosaic's blobs)"
            )
        self.stats.loaded_bytes += blob.numel() * blob.element_size()
        k_numel = s.num_layers * length * s.num_kv_heads * s.head_dim
        return (blob[:k_numel].view(s.num_layers, length, s.num_kv_heads, s.head_dim),
                blob[k_numel:].view(s.num_layers, length, s.num_kv_heads, s.v_head_dim))

    def spilled(self, length: int) -> None:
        """Count a spill of ``length`` tokens (the host rows were freed)."""
        self.stats.spills += 1
        self.stats.spilled_tokens += length

    def forget(self, key: str, length: int) -> None:
        """The cluster was freed: its blob goes."""
        self.backend.delete(key)
        self.held_tokens -= length

    def clear(self) -> None:
        self.backend.clear()
        self.held_tokens = 0
