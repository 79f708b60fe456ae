"""Checksums of offloaded clusters (``MOSAIC_DEBUG=1``): written once per extent, verified on every read.

When a cluster goes to the host store, each layer's K and V bytes are hashed (BLAKE2b, 8-byte digest).
Every later read of that cluster — a copy into a device cluster cache, a hit served from it, or a direct
host read — hashes the bytes actually served and compares. A mismatch raises `OffloadCorruptionError`
naming the extent and layer: in debug runs a corrupt copy, a stale cache slot or a host row overwritten
by a later extent stops the process instead of reaching attention.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["ExtentChecksums", "OffloadCorruptionError", "digest"]


class OffloadCorruptionError(AssertionError):
    """The K/V served for an offloaded cluster differ from what was offloaded."""


def digest(k: torch.Tensor, v: torch.Tensor) -> bytes:
    """8-byte BLAKE2b of the bytes of ``k`` then ``v`` (any shape and dtype, copied to host)."""
    h = hashlib.blake2b(digest_size=8)
    for t in (k, v):
        h.update(t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.digest()


class ExtentChecksums:
    """Per-layer digests of each live extent, keyed by the extent's first host row."""

    def __init__(self) -> None:
        self._digests: dict[int, list[bytes]] = {}

    def record(self, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """``k [L, n, H, D]``, ``v [L, n, H, Dv]``: the cluster as it left the device."""
        self._digests[start] = [digest(k[layer], v[layer]) for layer in range(k.shape[0])]

    def verify(self, start: int, layer: int, k: torch.Tensor, v: torch.Tensor, *, where: str) -> None:
        """``k [n, H, D]``, ``v [n, H, Dv]``: the whole extent as served from ``where``."""
        expected = self._digests.get(start)
        assert expected is not None, f"no checksum for extent {start}"
        if digest(k, v) != expected[layer]:
            raise OffloadCorruptionError(
                f"offloaded cluster at host row {start}, layer {layer}: the K/V served from {where} differ "
                "from what was offloaded"
            )

    def forget(self, start: int) -> None:
        self._digests.pop(start, None)

    def clear(self) -> None:
        self._digests.clear()

    def __len__(self) -> int:
        return len(self._digests)
