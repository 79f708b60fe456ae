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

from sglang.srt.mem_cache.unified_cache.cache_action import FreeComponentDeviceSlot
from sglang.srt.mem_cache.unified_cache.components.base import ComponentType
from sglang.srt.mem_cache.unified_cache.components.full import FullComponent
from sglang.srt.mem_cache.unified_radix_cache import UnifiedRadixCache

from .runtime import get_runtime

__all__ = ["MosaicRadixCache", "MosaicFullComponent", "create_mosaic_radix_cache"]


class MosaicFullComponent(FullComponent):
    """FULL tree component that reports freed device slots to the Mosaic policy before freeing them."""

    def apply_component_action(self, action) -> None:
        if isinstance(action, FreeComponentDeviceSlot) and action.indices:
            freed = torch.cat([idx.flatten().to(torch.int64) for idx in action.indices])
            if freed.numel():
                get_runtime().policy.on_slots_freed(freed.cpu())
        super().apply_component_action(action)


class MosaicRadixCache(UnifiedRadixCache):
    """`UnifiedRadixCache` whose request and reset events reach the Mosaic runtime."""

    def on_release(self, req, *, checkpointed: bool) -> None:
        super().on_release(req, checkpointed=checkpointed)
        get_runtime().release(req.rid)

    def reset(self) -> None:
        super().reset()
        get_runtime().policy.reset()


def create_mosaic_radix_cache(ctx):
    """Factory registered as ``--radix-cache-backend mosaic`` (receives SGLang's TreeCacheBuildContext)."""
    from sglang.srt.mem_cache.registry import create_unified_radix_cache

    params = ctx.params
    params.component_registry_override = {
        **(params.component_registry_override or {}),
        ComponentType.FULL: MosaicFullComponent,
    }
    return create_unified_radix_cache(ctx, cache_class=MosaicRadixCache)
