"""SGLang's idle memory check, extended to the host tier: no host row leaked or freed twice.

When the scheduler is idle SGLang checks that every KV slot is free, cached in the tree or held by a
request (`SchedulerInvariantChecker`; a leak raises with ``SGLANG_ENABLE_STRICT_MEM_CHECK_DURING_IDLE``,
else warns). Offloaded tokens are not slots: each is a host row that one tree position encodes
(``value < 0``, `prefix_offload`). An AFTER hook on the checker's request-pool check counts the host
encodings in the tree's values and compares them with the rows the host tier holds live
(`HostTier.live_rows`); a difference is reported through the same checker, so it is as loud as a slot leak
(an abort, eviction or flush path that drops tree values without giving their host rows back, or gives
them back twice). SGLang runs its idle check on every pass of its idle loop; this one walks the tree's
values, so it runs once per idle period: only when a forward ran or a request was released since the
last check (what offloads, evicts and releases host rows: offload at a chunk's checkpoint or a request's
release, eviction while a batch is scheduled; a flush clears the tree and the tier together). With offload
on only.
"""

from __future__ import annotations

import weakref

__all__ = ["CHECK_REQ_POOL", "check_host_rows_hook", "register_host_row_check", "host_rows_in_tree"]

_LAST_CHECKED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
"""Runtime -> its ``(forwards, releases)`` at the last check."""

CHECK_REQ_POOL = "sglang.srt.managers.scheduler_components.invariant_checker.SchedulerInvariantChecker._check_req_pool"


def host_rows_in_tree(tree_cache) -> int:
    """Positions of the radix tree whose value is a host encoding (``< 0``)."""
    values = tree_cache.all_values_flatten()
    return int((values < 0).sum()) if values.numel() else 0


def check_host_rows_hook(result, checker):
    """AFTER ``SchedulerInvariantChecker._check_req_pool(checker)`` (idle): the tree's host rows = the
    host tier's live rows, or a leak report."""
    from .radix_cache import MosaicRadixCache
    from .runtime import get_runtime

    cache = checker.tree_cache
    runtime = get_runtime()
    host = runtime.host
    if not isinstance(cache, MosaicRadixCache) or host is None:
        return result
    activity = (runtime.counters.forwards, runtime.releases)
    if activity == _LAST_CHECKED.get(runtime):
        return result  # nothing ran since the last idle check
    _LAST_CHECKED[runtime] = activity
    in_tree, live = host_rows_in_tree(cache), host.live_rows
    if in_tree != live:
        checker._report_leak("mosaic host tier", f"the radix tree encodes {in_tree} host rows but the host tier "
                                                 f"holds {live} live rows ({live - in_tree:+d} leaked)")
    return result


def register_host_row_check(registry, hook_type) -> None:
    registry.register(CHECK_REQ_POOL, check_host_rows_hook, hook_type.AFTER)
