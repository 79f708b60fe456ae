"""The serving side of the host tier: clusters in a `HostKVStore`, one extent per offloaded cluster.

A cluster's tokens occupy one contiguous extent (same rows in every layer), so bringing it back is one
copy per layer. The radix tree may free an extent's tokens piecemeal (node eviction works on tree
nodes, a cluster can span several); each extent keeps a live-token count and is returned to the store
when the last of its tokens is released. `read` resolves host rows (decoded from negative tree/row
values) to K/V for one layer; every read is counted.
"""

from __future__ import annotations

from typing import Callable, List, Tuple

import torch

from ..host_store import HostKVStore, HostStoreFullError

__all__ = ["HostTier", "encode_host", "decode_host"]


def encode_host(host_rows: torch.Tensor) -> torch.Tensor:
    """Host-store rows ``[n] int64 >= 0`` → tree/row values ``[n] int64 < 0`` (device slots are ``> 0``)."""
    return -(host_rows + 1)


def decode_host(values: torch.Tensor) -> torch.Tensor:
    """Tree/row values ``< 0`` → host-store rows."""
    return -values - 1

KVReader = Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]
"""``read(slots [M] int64) -> (k [L, M, H, D], v [L, M, H, Dv])`` from the device pool."""


class HostTier:
    """Host store plus extent bookkeeping for the mosaic serving path."""

    def __init__(self, store: HostKVStore) -> None:
        self.store = store
        self._extent_of = torch.full((store.capacity,), -1, dtype=torch.int64)  # host row -> extent start
        self._live: dict[int, list] = {}  # extent start -> [Extent, live tokens]
        self.full_events = 0
        """Offloads cut short because the store was full (the clusters stayed on the device)."""
        self.copies = 0
        """Host → device copy operations issued by `read` (one per extent per layer)."""
        self.bytes_read = 0

    @property
    def used_tokens(self) -> int:
        return self.store.num_used

    def put_clusters(self, read_kv: KVReader, slot_groups: List[torch.Tensor]) -> List[torch.Tensor]:
        """Copy each group of device slots (one cluster) into its own extent; returns host rows per group.

        Stops at the first group that does not fit (`HostStoreFullError`): the returned list is then
        shorter than ``slot_groups`` and the remaining clusters simply stay on the device.
        """
        rows = []
        for slots in slot_groups:
            k, v = read_kv(slots)
            try:
                extent = self.store.put(k, v)
            except HostStoreFullError:
                self.full_events += 1
                break
            host = torch.arange(extent.start, extent.start + extent.length, dtype=torch.int64)
            self._extent_of[host] = extent.start
            self._live[extent.start] = [extent, extent.length]
            rows.append(host)
        return rows

    def release(self, host_rows: torch.Tensor) -> None:
        """The tree dropped these host rows; free extents with no live token left."""
        if host_rows.numel() == 0:
            return
        starts, counts = torch.unique(self._extent_of[host_rows], return_counts=True)
        for start, count in zip(starts.tolist(), counts.tolist()):
            assert start >= 0, "release of a host row that belongs to no extent"
            entry = self._live[start]
            entry[1] -= count
            assert entry[1] >= 0, f"extent {start} released more tokens than it holds"
            if entry[1] == 0:
                self.store.free(entry[0])
                self._extent_of[start : start + entry[0].length] = -1
                del self._live[start]

    def clear(self) -> None:
        """Forget every extent (the radix cache was flushed: no tree value refers to host rows any more)."""
        self.store.clear()
        self._extent_of.fill_(-1)
        self._live.clear()

    def read(self, layer: int, host_rows: torch.Tensor, device) -> Tuple[torch.Tensor, torch.Tensor]:
        """K/V of ``host_rows [n]`` at ``layer``: ``([n, H, D], [n, Hv, Dv])`` on ``device``."""
        starts = torch.unique(self._extent_of[host_rows])
        self.copies += int(starts.numel())
        k = self.store.k_buffer[layer][host_rows].to(device, non_blocking=True)
        v = self.store.v_buffer[layer][host_rows].to(device, non_blocking=True)
        self.bytes_read += k.numel() * k.element_size() + v.numel() * v.element_size()
        return k, v

    def read_keys(self, host_rows: torch.Tensor) -> torch.Tensor:
        """``[L, n, H, D]`` keys of all layers (index maintenance)."""
        return self.store.k_buffer[:, host_rows]

    def check_integrity(self) -> None:
        self.store.check_integrity()
        live_tokens = sum(count for _, count in self._live.values())
        assert live_tokens <= self.store.num_used, f"{live_tokens=} > used {self.store.num_used}"
        assert all(0 < count <= e.length for e, count in self._live.values())
