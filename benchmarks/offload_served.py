"""The served host layout of a per-layer membership, for benchmarks/offload.py's ``...-served`` row.

The layer-major row of offload.py gives every (layer, cluster) an extent of its own. The server does not:
`planner.closed_groups` groups the offloaded positions into connected components of "shares a cluster in
some layer" (cut at ``MAX_GROUP_TOKENS``), `HostTier(layer_orders=True).put_clusters` writes each group as
one extent whose plane ``l`` is in layer ``l``'s cluster order (`layer_orders.extent_order`), and
`HostTier.read_cached` makes the sub-ranges a layer's selection touches resident in the video's device
cluster cache (`ClusterResidency` keyed by sub-range, `TransferEngine` copies): a cluster split over ``p``
groups is ``p`` copies. This module drives exactly those functions; nothing of the layout is re-implemented.
"""

from __future__ import annotations

import time

import torch

from mosaic_sglang.offload.host_store import HostKVStore
from mosaic_sglang.offload.host_tier import HostTier
from mosaic_sglang.offload.planner import closed_groups
from mosaic_sglang.offload.residency import ClusterResidency

__all__ = ["served_tier", "run_served"]

KEY = 0
"""The one video's cluster-cache key in the tier."""


def served_tier(index, trace, cfg, always_mask: torch.Tensor, dtype) -> tuple[HostTier, torch.Tensor, torch.Tensor, dict]:
    """Offload every clustered position of ``index`` (per-layer membership) as the server does at request end.

    ``path`` (the radix path's device slots, `closed_groups`): position ``p`` sits in slot ``p + 1`` (> 0: on the
    device, may move), except the always-attended positions (sinks, recent window, text), given slot 0, so they
    stay on the device as in every other row; `closed_groups` also keeps ``sink_tokens`` and unclustered
    positions. One `closed_groups(..., sealed_only=False)` call (the request-end offload of the whole history);
    each group → one extent through `HostTier.put_clusters` (plane ``l`` in layer ``l``'s cluster order).

    Returns:
        ``(tier, row_of, start_of, info)``: the tier; ``[N] int64`` host row of each position (-1: on the device);
        ``[N] int64`` indexed by host row (rows < N), the start of that row's extent (what `HostTier.read_cached`
        is given with the rows); ``info``: groups, their mean tokens, and the pieces
        (sub-ranges) per (layer, cluster) over every offloaded cluster, and the clustered positions kept on the
        device (always attended).
    """
    n = index.num_tokens
    path = torch.arange(1, n + 1, dtype=torch.int64)
    path[always_mask[:n]] = 0
    groups, clusters = closed_groups(index, path, sink_tokens=cfg.sink_tokens, sealed_only=False)
    moved = int(sum(g.numel() for g in groups))
    assign = index.view().assign[:, :n]
    expected = (assign >= 0).all(0) & ~always_mask[:n] & (torch.arange(n) >= cfg.sink_tokens)
    assert moved == int(expected.sum()), f"closed_groups moved {moved} positions, expected {int(expected.sum())}"
    k, v = trace.keys.to(dtype), trace.values.to(dtype)
    num_layers, _, heads, dim = k.shape
    store = HostKVStore(max(1, moved), num_layers=num_layers, num_kv_heads=heads, head_dim=dim, dtype=dtype,
                        pin_memory=False)
    tier = HostTier(store, max_cached_videos=1, layer_orders=True)
    rows = tier.put_clusters(lambda slots: (k[:, slots - 1], v[:, slots - 1]), [path[g] for g in groups], clusters)
    assert len(rows) == len(groups), "host store full"
    row_of = torch.full((n,), -1, dtype=torch.int64)
    start_of = torch.full((n,), -1, dtype=torch.int64)
    for g, r in zip(groups, rows):
        row_of[g], start_of[r] = r, r[0]
    assert bool((row_of[expected] >= 0).all()), "an offloadable position in no group"
    host = row_of >= 0
    pieces = pairs = 0
    per_layer = assign[index.view().group_of_layer]  # [L, N] cluster of each position in each layer
    for layer in range(num_layers):  # sub-ranges of every offloaded (layer, cluster), from the tier's orders
        pieces += int(tier.orders.sub_ranges(layer, row_of[host], start_of[row_of[host]])[0].numel())
        pairs += int(torch.unique(per_layer[layer, host]).numel())
    info = dict(groups=len(groups), mean_group_tokens=moved / max(1, len(groups)),
                pieces_per_cluster_all=pieces / max(1, pairs), kept_clustered=int(((assign >= 0).any(0) & ~host).sum()))
    return tier, row_of, start_of, info


def run_served(name, select_units, index, trace, cfg, queries, always_mask, dtype, *, lists=1):
    """The per-layer index's selections (``select_units``: per layer, the cluster ids to attend) read through
    the served host tier (`served_tier`), one `HostTier.read_cached` per layer, no prefetch (the tier refuses it
    with per-layer orders). Rows as `offload.run_units`, plus ``pieces`` (sub-ranges read) per selected
    (layer, cluster) with host members, ``overflow`` reads that bypassed the cache, and the layout's ``info``.
    ``ms``: the selection and the `read_cached` calls (which also gather the rows' K/V from the device cache:
    a little more work than `run_units` times)."""
    tier, row_of, start_of, info = served_tier(index, trace, cfg, always_mask, dtype)
    num_layers = trace.keys.shape[0]
    cap = ClusterResidency.capacity_for(cfg.budget * lists, cfg.residency_slack)
    cache = tier.caches.get(KEY, cap)
    res, eng, bpt = cache.residency, cache.engine, tier.store.bytes_per_token
    view = index.view()
    cluster_of = view.assign[view.group_of_layer, : index.num_tokens].cpu()  # [L, N] each position's cluster
    rows = []
    for q in queries:
        start_resident = [set(res.resident_clusters(layer)) for layer in range(num_layers)]
        runs0 = eng.stats.runs
        t0 = time.perf_counter()
        per_layer = select_units(q)
        tier.begin_forward([KEY])
        spent = time.perf_counter() - t0  # select + the tier's reads; not this function's own bookkeeping
        ops = nbytes = missed = asked = hits = overflow = pieces = selected = 0
        for layer in range(num_layers):
            chosen = torch.isin(cluster_of[layer], per_layer[layer]) & (row_of >= 0)  # [N] selected, on the host
            host_rows, with_host = row_of[chosen], int(torch.unique(cluster_of[layer, chosen]).numel())
            ids, _, _, _, length = tier.orders.sub_ranges(layer, host_rows, start_of[host_rows])
            fresh = torch.tensor([i not in start_resident[layer] for i in ids.tolist()], dtype=torch.bool)
            missed += int(length[fresh].sum()) * bpt
            pieces, selected = pieces + ids.numel(), selected + with_host
            t0 = time.perf_counter()
            counts = tier.read_cached(KEY, cap, layer, host_rows, "cpu").counts
            spent += time.perf_counter() - t0
            ops, nbytes, overflow = ops + counts.copies, nbytes + counts.copy_bytes, overflow + counts.overflow_reads
            asked, hits = asked + counts.cache_lookups, hits + counts.cache_hits
        ms = 1e3 * spent
        res.check_integrity()
        rows.append(dict(ops=ops, runs=eng.stats.runs - runs0, bytes=nbytes, missed_bytes=missed, ms=ms,
                         units=sum(p.numel() for p in per_layer), hit=hits / asked if asked else float("nan"),
                         peak_resident=tier.resident_tokens(KEY), pieces_per_cluster=pieces / max(1, selected),
                         overflow=overflow, **info))
    tier.check_integrity()
    return name, rows, cap
