"""Scattered offload of a cached prefix's tokens to the host store, keeping SGLang's radix tree exact.

Encoding (in tree node values and in ``req_to_token`` rows alike): a value ``v > 0`` is a device slot;
``v < 0`` means the token's K/V lives in the host store at row ``h = -v - 1``. The tree's structure and
matching are untouched (a second question on the same video still matches the whole prefix); only the
mosaic attention backend reads such rows, resolving negative entries from the host store.

Offloading ``k`` tokens of a node: patch the node value → report ``-k`` to the tree's evictable /
protected ledger (``adjust_component_size``) → patch every live ``req_to_token`` row that aliases the
slots → give the slots back to the allocator. `MosaicFullComponent.reclaimable_value_len` counts only
device entries, so later lock / unlock / evict moves stay consistent with the allocator.
"""

from __future__ import annotations

from typing import List, Tuple

import torch

from sglang.srt.mem_cache.unified_cache.components.base import ComponentType

from ..offload.host_tier import decode_host, encode_host
from .runtime import get_runtime

__all__ = ["encode_host", "decode_host", "PrefixOffloader"]

FULL = ComponentType.FULL


class PrefixOffloader:
    """Moves path positions of a cached prefix from device slots to host rows (tree side only: the
    caller has already copied the K/V into the host store)."""

    def __init__(self, cache) -> None:
        self.cache = cache

    def path_segments(self, node_id) -> List[Tuple[object, int, int]]:
        """``[(node, start, end)]`` from the root to ``node_id``, in path positions."""
        core = self.cache.tree_core
        node = core.node_by_id(node_id)
        chain = []
        while node is not core.root_node:
            chain.append(node)
            node = node.parent
        segments, start = [], 0
        for node in reversed(chain):
            length = len(node.component_data[FULL].value)
            segments.append((node, start, start + length))
            start += length
        return segments

    def offload(self, node_id, positions: torch.Tensor, host_rows: torch.Tensor) -> torch.Tensor:
        """Mark ``positions`` of the path to ``node_id`` as living in ``host_rows`` and free their slots.

        Args:
            node_id: tree node whose root path holds the positions (locked or evictable).
            positions: ``[n] int64`` ascending unique path positions, each currently a device slot.
            host_rows: ``[n] int64`` host-store rows already holding those tokens' K/V.

        Returns:
            ``[n] int64`` the device slots given back to SGLang's allocator.
        """
        encoded = encode_host(host_rows)
        slots = self._replace_values(node_id, positions, encoded, from_device=True)
        self._patch_live_rows(positions, slots, encoded)  # segments walk ascending positions: same order
        self.cache.token_to_kv_pool_allocator.free(slots.to(self._allocator_device()))
        return slots

    def rehost(self, node_id, positions: torch.Tensor, host_rows: torch.Tensor) -> torch.Tensor:
        """Point ``positions`` of the path to ``node_id``, each in the host store now, at ``host_rows`` (their
        K/V already copied there: a provisional extent laid out again). No device slot changes hands, so the
        tree's ledger and the allocator are untouched.

        Args:
            node_id: tree node whose root path holds the positions.
            positions: ``[n] int64`` ascending unique path positions, each currently a host encoding.
            host_rows: ``[n] int64`` their new host rows.

        Returns:
            ``[n] int64`` the host rows they left (the caller releases them once nothing refers to them).
        """
        encoded = encode_host(host_rows)
        before = self._replace_values(node_id, positions, encoded, from_device=False)
        self._patch_live_rows(positions, before, encoded)
        return decode_host(before)

    def _replace_values(self, node_id, positions: torch.Tensor, encoded: torch.Tensor, *, from_device: bool) -> torch.Tensor:
        """Write ``encoded [n]`` into the tree node values at ``positions [n]`` (ascending, unique) of the path to
        ``node_id``; each must hold a device slot (``from_device``: the tree's ledger loses them) or a host
        encoding. Returns ``[n] int64`` the values they held, in position order."""
        assert bool((positions[1:] > positions[:-1]).all()), "positions must be ascending and unique"
        held = []
        for node, start, end in self.path_segments(node_id):
            inside = (positions >= start) & (positions < end)
            if not bool(inside.any()):
                continue
            offsets = positions[inside] - start
            value = node.component_data[FULL].value
            before = value[offsets].to(torch.int64)
            expected = before > 0 if from_device else before < 0
            assert bool(expected.all()), (f"{'offload of a non-device' if from_device else 'rehost of a device'} entry "
                                          f"in node {node.id}: {before.tolist()}")
            value[offsets] = encoded[inside].to(value.dtype)
            if from_device:
                self.cache.tree_core.adjust_component_size(node.id, FULL, -int(offsets.numel()))
            held.append(before)
        before = torch.cat(held) if held else torch.empty(0, dtype=torch.int64)
        assert before.numel() == positions.numel(), f"positions past the path: {positions.numel()=} {before.numel()=}"
        return before

    def _patch_live_rows(self, positions: torch.Tensor, slots: torch.Tensor, encoded: torch.Tensor) -> None:
        """Every live request row that holds ``slots`` (device slots, or host encodings when rehosting) at these
        positions gets the new host encoding."""
        pool = self.cache.req_to_token_pool
        free_rows = set(pool.free_slots)
        live = [r for r in range(1, pool.req_to_token.shape[0]) if r not in free_rows]
        if not live:
            return
        rtt = pool.req_to_token
        rows = torch.tensor(live, device=rtt.device)
        pos = positions.to(rtt.device)
        current = rtt[rows[:, None], pos[None, :]]  # [R, n]
        hit = current == slots.to(rtt.device, rtt.dtype)[None, :]
        if bool(hit.any()):
            get_runtime().rows.invalidate()  # host copies of those rows are stale now
            r, c = hit.nonzero(as_tuple=True)
            rtt[rows[r], pos[c]] = encoded.to(rtt.device, rtt.dtype)[c]

    def _allocator_device(self):
        return getattr(self.cache.token_to_kv_pool_allocator, "device", "cpu")
