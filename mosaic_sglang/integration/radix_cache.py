"""The ``mosaic`` radix-cache backend: SGLang's `UnifiedRadixCache`, plus the lifetime hooks of Mosaic's
per-sequence state.

Cluster state is keyed by KV slot, not by request (a second question on the same video is a new request
whose ``req_to_token`` row points at the same slots), so its lifetime follows the slots: when the tree
frees slots (eviction), `MosaicFullComponent` tells the policy; when a request ends, `on_release` drops
its per-request state; `reset` (flush_cache) drops everything. Subclassing `UnifiedRadixCache` keeps
streaming sessions, the session radix cache and tlru working (SGLang checks ``isinstance``).
"""

from __future__ import annotations

import torch

from sglang.srt.mem_cache.unified_cache.cache_action import FreeComponentDeviceSlot, FreeDeviceKV
from sglang.srt.mem_cache.unified_cache.components.base import ComponentType
from sglang.srt.mem_cache.unified_cache.components.full import FullComponent
from sglang.srt.mem_cache.unified_radix_cache import UnifiedRadixCache
from sglang.srt.session.streaming_session import is_virtual_node

from ..offload.host_tier import decode_host
from .prefix_offload import PrefixOffloader
from .runtime import get_runtime

__all__ = ["MosaicRadixCache", "MosaicFullComponent", "create_mosaic_radix_cache"]


class MosaicFullComponent(FullComponent):
    """FULL tree component whose values may hold host encodings (``< 0``, see `prefix_offload`).

    Only device entries count as reclaimable pool tokens; a freed value's device entries go to the
    allocator and its host entries back to the host tier; the policy hears about both.
    """

    def reclaimable_value_len(self, node) -> int:
        value = node.component_data[self.component_type].value
        return 0 if value is None else int((value > 0).sum())

    def apply_component_action(self, action) -> None:
        if isinstance(action, FreeComponentDeviceSlot) and action.indices:
            values = [idx.flatten().to(torch.int64) for idx in action.indices]
            freed = torch.cat(values)
            if freed.numel():
                runtime = get_runtime()
                runtime.policy.on_slots_freed(freed.cpu())
                host = freed[freed < 0]
                if host.numel() and runtime.host is not None:
                    runtime.host.release(decode_host(host.cpu()))
            if bool((freed < 0).any()):
                action = FreeComponentDeviceSlot([v[v > 0] for v in values], component_type=action.component_type)
        super().apply_component_action(action)


class MosaicRadixCache(UnifiedRadixCache):
    """`UnifiedRadixCache` whose request and reset events reach the Mosaic runtime."""

    def on_release(self, req, *, checkpointed: bool) -> None:
        super().on_release(req, checkpointed=checkpointed)
        runtime = get_runtime()
        runtime.release(req.rid)
        if runtime.host is not None and _tree_owned(req):
            path = self.path_device_indices(req.last_node).to("cpu", torch.int64)
            runtime.policy.offload_prefix(path, req.last_node, PrefixOffloader(self), runtime.read_slot_kv)

    def claim_kv_row(self, req) -> bool:
        """A streaming session keeping the finished turn's KV row skips `on_release` (SGLang returns
        early): the turn's per-request state is released here instead (it leaked before: ~13 MB/min of
        kept selections and masks in a soak of streaming sessions)."""
        claimed = super().claim_kv_row(req)
        if claimed:
            get_runtime().release(req.rid)
        return claimed

    def checkpoint(self, req, *, up_to: int, **kwargs) -> None:
        super().checkpoint(req, up_to=up_to, **kwargs)
        runtime = get_runtime()
        if runtime.host is not None and _tree_owned(req) and not req.finished():
            # chunked prefill: the chunk just inserted is tree-owned; sealed clusters leave the device now
            path = self.path_device_indices(req.last_node).to("cpu", torch.int64)
            runtime.policy.offload_prefix(path, req.last_node, PrefixOffloader(self), runtime.read_slot_kv, sealed_only=True)

    def checkpoint_into_tree(self, req, *, up_to: int, **kwargs) -> None:
        """Insert into the tree; where the insert deduplicated the request's new tokens against a prefix
        already in the tree (another request of the same batch inserted it first), SGLang frees the
        request's copies and re-points its row to the tree's slots: the policy hears which slots moved."""
        row = self.req_to_token_pool.req_to_token[req.kv.req_pool_idx]
        start = req.kv.cache_protected_len
        before = row[start:up_to].to("cpu", torch.int64, copy=True)
        super().checkpoint_into_tree(req, up_to=up_to, **kwargs)
        after = row[start:up_to].to("cpu", torch.int64)
        moved = before != after
        if bool(moved.any()):
            runtime = get_runtime()
            runtime.rows.invalidate()  # the request's row now points at the tree's slots
            runtime.policy.on_slots_remapped(before[moved], after[moved])

    def free_kv_row(self, kv, ranges) -> None:
        """Request-private row ranges going back to the allocator (an unfinished prompt of an aborted
        request, a streaming session's turns at close, overallocation): the policy hears about them, so
        an index over tokens that never reached the tree is cut or dropped now instead of lingering."""
        row = self.req_to_token_pool.req_to_token[kv.req_pool_idx]
        pieces = [row[start:end] for start, end in ranges if end > start]
        super().free_kv_row(kv, ranges)
        if pieces:
            freed = torch.cat(pieces).to("cpu", torch.int64)
            assert bool((freed > 0).all()), "a host-encoded row entry reached free_kv_row (only tree-owned tokens are offloaded)"
            get_runtime().policy.on_slots_freed(freed)

    def _apply_cache_action(self, action) -> None:
        if isinstance(action, FreeDeviceKV):  # goes straight to the allocator: never a host encoding
            assert all(bool((v > 0).all()) for v in action.indices), "host-encoded value reached FreeDeviceKV"
        super()._apply_cache_action(action)

    def protected_size(self) -> int:
        """Locked tree tokens plus the pool slots held by Mosaic's device cluster caches (`ClusterCaches`):
        both are allocated and not evictable, and SGLang's accounting (available + evictable + protected
        = total) must see them."""
        return super().protected_size() + _cache_held_tokens()

    def full_protected_size(self) -> int:
        return super().full_protected_size() + _cache_held_tokens()

    def reset(self) -> None:
        super().reset()
        runtime = get_runtime()
        runtime.rows.invalidate()
        runtime.policy.reset()
        if runtime.host is not None:
            runtime.host.clear()


def _tree_owned(req) -> bool:
    """Whether ``req``'s KV path is tree nodes that the offloader may rewrite.

    A streaming session (``open_session(streaming=True)``) owns its KV in a session record outside the
    tree (its ``last_node`` is a virtual node, its private tokens are counted as ``session_held`` from
    the record's lengths, and the session frees them itself), so its tokens stay on the device: moving
    them would need SGLang's session accounting to know about host rows. Mosaic's selection still
    applies to every turn of the session.
    """
    return req.last_node is not None and not is_virtual_node(req.last_node)


def _cache_held_tokens() -> int:
    host = get_runtime().host
    return 0 if host is None else host.caches.held_tokens


def create_mosaic_radix_cache(ctx):
    """Factory registered as ``--radix-cache-backend mosaic`` (receives SGLang's TreeCacheBuildContext)."""
    from sglang.srt.mem_cache.registry import create_unified_radix_cache

    params = ctx.params
    params.component_registry_override = {
        **(params.component_registry_override or {}),
        ComponentType.FULL: MosaicFullComponent,
    }
    return create_unified_radix_cache(ctx, cache_class=MosaicRadixCache)
