"""Offload tier benchmark: copies, bytes, device-resident KV and step time per decode step.

For each history length (16K … 256K tokens) a synthetic video trace (`mosaic_sglang.traces.synthetic`)
is streamed frame by frame into every retriever; then all sealed units (clusters / frames / tokens)
live in host memory and a few decode steps run, each with the next question token's query (Tq = 1),
so the selection drifts between steps while the topic stays. Every method has the same token budget
per layer and the same device cache of ``ceil(budget × (1 + slack))`` slots per layer; sinks, the recent
window and text stay on the device for everyone.

- ``mosaic``: the online index of the defaults before issue 13 (`trace_families.ONLINE_BASELINE`: no
  regrouping, one membership, one list per layer): `ClusterIndex.select_clusters` → `ClusterResidency`
  (LRU/frequency, cross-layer prefetch) → `TransferEngine` from a `HostKVStore` (one copy per missed cluster
  per layer). The rows below turn on what their names say.
- ``mosaic-nopf``: the same without prefetch.
- ``mosaic-join0.3`` / ``mosaic-regroup16``: Mosaic with coarser clusters: a looser join threshold, or the
  online clusters of every 16 sealed frames regrouped by k-means into ~16-token clusters
  (`MosaicConfig.regroup_tokens`; without prefetch, the config's default); ``--coarse-join 0`` /
  ``--regroup-tokens 0`` leave them out. ``mosaic-regroup16-tail``: the same, with the frames still online
  regrouped when the question arrives (`MosaicConfig.regroup_tail`; ``--no-regroup-tail`` leaves it out).
  ``mosaic-regroup16per32-tail-per-head``: the option set of the granularity section of benchmarks/README.md
  (regrouping every 32 sealed frames, the tail at the question, a cluster list per KV head:
  `MosaicConfig.selection_heads='per_kv_head'`); a layer moves the clusters any head chose (an extent holds
  every head), into a cache of ``ceil(heads × budget × (1 + slack))`` slots (``--no-per-head`` leaves it out).
- ``mosaic-perlayer-regroup24per32-tail-per-head``: the same with one membership per layer
  (`MosaicConfig.membership='per_layer'`), regrouped into ~24-token clusters (``--per-layer-tokens``; 0
  leaves it out): the option set that meets goal 1's recall and size numbers on both quality traces with
  margin. Each layer's clusters get host extents of their own (a layer-major layout: one copy per missed
  (layer, cluster)).
- ``mosaic-perlayer-regroup24per32-tail-per-head-served``: **`MosaicConfig`'s defaults as served**: the same
  index and selections read through the server's host tier (benchmarks/offload_served.py; ``--no-served`` leaves it out). One
  `planner.closed_groups(sealed_only=False)` call, as at request end, over a path where every clustered
  position except sinks, the recent window and text is on the device (those stay there): one extent per group
  (connected components of "shares a cluster in some layer", cut at 4096 tokens), written by
  `HostTier(layer_orders=True).put_clusters` with plane ``l`` in layer ``l``'s cluster order
  (`layer_orders.extent_order`); each layer then `HostTier.read_cached` of the selected clusters' host rows
  (no prefetch: the tier refuses it with per-layer orders). A cluster is one copy per group it spans (a
  *piece*: a sub-range of one extent's plane); the device cache keys, hits and ``ops`` are per piece (the
  tier's `HostReadCounts`); its ``ms`` also counts the tier gathering the selected rows from the cache.
  Printed under the table: the groups, their mean tokens, and the pieces per selected (layer, cluster) with
  host members (and over every offloaded one).
- ``token``: oracle token top-k (`OracleTokenTopK`) with a token LRU; one copy per missed token per layer
  (``runs`` = missed tokens coalesced into contiguous position runs: the fewest copies any DMA engine
  could issue for the same misses). Executed as one batched gather per layer (its best case on CPU).
- ``frame``: ReKV-style frame blocks (`FrameBlockRetriever`) with the same LRU residency as Mosaic,
  one copy per missed frame per layer, no prefetch.

Columns (per decode step, averaged over the steps after the first, cold one):
``ops`` host→device copy operations (all layers: one per missed unit), ``runs`` the contiguous host
reads those ops form (units stored back to back merge; what a DMA engine issues), ``MB`` bytes moved, ``moved/missed`` bytes moved ÷
bytes of the selected units that were not resident at the step's start (1.0 = nothing but the misses;
prefetch of wrong clusters pushes it up), ``dev_MB`` device-resident KV of the sequence (always-attended
tokens + the cache bound), ``hit`` share of selected units already resident (or prefetched) when layers
>= 1 asked, ``ms`` wall time of select + residency + copies. ``dense_MB``: the whole history on device.

    .venv/bin/python benchmarks/offload.py                # full run (~8 min on 2 CPU cores; captions ~9 min)
    .venv/bin/python benchmarks/offload.py --quick        # smoke run (~10 s)
    .venv/bin/python benchmarks/offload.py --out benchmarks/out/offload.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict

import torch

from mosaic_sglang import ClusterIndex, MosaicConfig
from mosaic_sglang.retrieval.baselines import FrameBlockRetriever, OracleTokenTopK
from mosaic_sglang.offload.host_store import Extent, HostKVStore
from mosaic_sglang.offload.residency import ClusterResidency
from mosaic_sglang.retrieval import always_attended_positions
from mosaic_sglang.traces import SyntheticTraceSpec, synthetic_trace
from mosaic_sglang.offload.transfer import TransferEngine
from offload_served import run_served  # benchmarks/offload_served.py (the script's folder is on sys.path)
from trace_families import ONLINE_BASELINE

FRAMES_PER_SCENE = 32
"""A new shot every 32 frames (~30 s at 1 fps): the default trace has 8 scenes in 128 frames; long
histories keep about the same shot length instead of 8 scenes spread over hours."""

DTYPE = torch.float16
"""The KV pool dtype of a bf16/fp16 model: byte counts are those of a real deployment."""


def make_trace(tokens: int, seed: int):
    """A synthetic trace of about ``tokens`` positions (default knobs except length and scene count)."""
    base = SyntheticTraceSpec()
    per_frame = base.tokens_per_frame + base.timestamp_tokens
    frames = max(8, (tokens - base.prompt_tokens - base.question_tokens) // per_frame)
    spec = SyntheticTraceSpec(seed=seed, num_frames=frames, num_scenes=max(8, frames // FRAMES_PER_SCENE))
    return synthetic_trace(spec)


def stream(trace, retrievers) -> float:
    """Append the trace frame by frame to every retriever (ClusterIndex: + maintain per frame, then
    until nothing is marked, so every cluster is sealed). Returns Mosaic's ingest ms per frame."""
    keys = trace.keys.to(DTYPE)
    index = retrievers[0]
    spent = 0.0
    chunks = trace.frame_chunks()
    for a, b in chunks:
        for r in retrievers:
            t0 = time.perf_counter()
            r.append(keys[:, a:b], trace.frame_ids[a:b])
            if r is index:
                r.maintain()
                spent += time.perf_counter() - t0
    while index.num_marked:
        index.maintain()
    return 1e3 * spent / len(chunks)


def offload_clusters(index: ClusterIndex, trace, store: HostKVStore) -> list[list[Extent | None]]:
    """Put every cluster (members in ascending position order) into the host store: per layer, an extent per
    cluster id (None: an id with no member in that layer).

    Shared membership: one extent per cluster holds every layer (the served layout), and every layer's list
    is the same. Per-layer membership (``membership='per_layer'``): each layer's clusters get extents of
    their own, only that layer's plane written: a layer-major host layout, where each layer's clusters are
    contiguous in that layer (the served host tier orders each plane of one extent instead: layer_orders.py)."""
    k, v = trace.keys.to(DTYPE), trace.values.to(DTYPE)
    num_layers = k.shape[0]
    groups = index.view().group_of_layer.tolist()  # [L] membership group of each layer
    by_group: dict[int, list[Extent | None]] = {}
    for layer, group in enumerate(groups):
        if group in by_group:
            continue
        indptr, members = index.cluster_members(group)
        shared = len(set(groups)) == 1
        extents = []
        for c in range(indptr.numel() - 1):
            pos = members[indptr[c] : indptr[c + 1]]
            if pos.numel() == 0:
                extents.append(None)
            elif shared:
                extents.append(store.put(k[:, pos], v[:, pos]))
            else:
                extent = store.allocate(pos.numel())
                kl, vl = store.extent_view(extent, layer)
                kl.copy_(k[layer, pos]), vl.copy_(v[layer, pos])
                extents.append(extent)
        by_group[group] = extents
    return [by_group[groups[layer]] for layer in range(num_layers)]


def offload_frames(trace, store: HostKVStore) -> tuple[list[Extent], torch.Tensor]:
    """Every frame's visual tokens as one extent; also ``[N] int64`` frame of each position."""
    k, v = trace.keys.to(DTYPE), trace.values.to(DTYPE)
    fids = trace.frame_ids
    visual = (fids >= 0).nonzero().flatten()
    _, counts = torch.unique_consecutive(fids[visual], return_counts=True)
    extents = []
    for pos in torch.split(visual, counts.tolist()):
        extents.append(store.put(k[:, pos], v[:, pos]))
    return extents, fids


class TokenLRU:
    """Token-granular device cache (per layer, ``capacity`` slots), vectorised LRU over positions."""

    def __init__(self, num_layers: int, num_tokens: int, capacity: int) -> None:
        self.capacity = capacity
        self.last = torch.full((num_layers, num_tokens), -1, dtype=torch.int64)  # -1: not resident
        self.slot = torch.full((num_layers, num_tokens), -1, dtype=torch.int64)
        self.free = [list(range(capacity)) for _ in range(num_layers)]

    def access(self, layer: int, selected: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Returns ``(missed positions, their slots, hits)``; evicts least recently used tokens."""
        last, slot, free = self.last[layer], self.slot[layer], self.free[layer]
        resident = last >= 0
        hit = resident[selected]
        missed = selected[~hit]
        need = missed.numel() - len(free)
        if need > 0:
            cand = resident.clone()
            cand[selected] = False
            victims = torch.where(cand, last, torch.iinfo(torch.int64).max).topk(need, largest=False).indices
            assert bool(cand[victims].all()), "token LRU: selection larger than the cache"
            free.extend(slot[victims].tolist())
            last[victims], slot[victims] = -1, -1
        got = torch.tensor(free[len(free) - missed.numel() :], dtype=torch.int64)
        del free[len(free) - missed.numel() :]
        slot[missed] = got
        last[selected] = step
        return missed, got, int(hit.sum())


def _runs(positions: torch.Tensor) -> int:
    """Contiguous runs in sorted ``positions``."""
    if positions.numel() == 0:
        return 0
    return 1 + int((positions[1:] != positions[:-1] + 1).sum())


def run_units(name, select_units, extents, store, cfg, queries, num_layers, *, prefetch, lists=1):
    """Mosaic or frame blocks: units with host extents through `ClusterResidency` + `TransferEngine`.
    ``extents``: per layer, the extent of each unit id (`offload_clusters`). ``lists``: budgets selected per
    layer (the KV heads with per-head selection), what the cache is sized by."""
    cap = ClusterResidency.capacity_for(cfg.budget * lists, cfg.residency_slack)
    res = ClusterResidency(cap, num_layers=num_layers, bytes_per_token=store.bytes_per_token)
    dk = torch.zeros(num_layers, cap, store.num_kv_heads, store.head_dim, dtype=DTYPE)
    eng = TransferEngine(store, dk, torch.zeros_like(dk))
    rows = []
    for q in queries:
        start_resident = [set(res.resident_clusters(l)) for l in range(num_layers)]
        ops0, runs0, bytes0 = eng.stats.ops, eng.stats.runs, eng.stats.bytes
        hits0, sel0 = res.stats.predicted_hits, res.stats.predicted_selected
        t0 = time.perf_counter()
        per_layer = select_units(q)  # list of [u] int64 unit ids per layer
        res.begin_step()
        eng.begin_step()
        for layer in range(num_layers):
            ids = per_layer[layer].tolist()
            exts = [extents[layer][u] for u in ids]
            acc = res.access(layer, ids, exts)
            eng.submit(acc.plan)
            eng.wait(layer)
            if prefetch and layer + 1 < num_layers:
                eng.submit(res.prefetch(layer + 1, ids, exts))
        ms = 1e3 * (time.perf_counter() - t0)
        res.check_integrity()
        missed = sum(extents[l][u].length for l in range(num_layers) for u in per_layer[l].tolist()
                     if u not in start_resident[l]) * store.bytes_per_token
        moved = eng.stats.bytes - bytes0
        sel = res.stats.predicted_selected - sel0
        rows.append(dict(ops=eng.stats.ops - ops0, runs=eng.stats.runs - runs0, bytes=moved, missed_bytes=missed, ms=ms,
                         units=sum(p.numel() for p in per_layer),
                         hit=(res.stats.predicted_hits - hits0) / sel if sel else float("nan"),
                         peak_resident=max(res.resident_tokens(l) for l in range(num_layers))))
    return name, rows, cap


def run_tokens(oracle, trace, cfg, queries, num_layers, always_mask):
    """Oracle token top-k with a token LRU; misses copied from the token-granular host tier."""
    cap = ClusterResidency.capacity_for(cfg.budget, cfg.residency_slack)
    n = trace.num_tokens
    lru = TokenLRU(num_layers, n, cap)
    k, v = trace.keys.to(DTYPE), trace.values.to(DTYPE)
    dk = torch.zeros(num_layers, cap, k.shape[2], k.shape[3], dtype=DTYPE)
    dv = torch.zeros_like(dk)
    bpt = k.shape[2] * (k.shape[3] + v.shape[3]) * k.element_size()
    rows = []
    for step, q in enumerate(queries):
        t0 = time.perf_counter()
        sel = oracle.select(q)
        ops = runs = hits = selected_late = 0
        for layer in range(num_layers):
            pos = sel.layer(layer)
            pos = pos[~always_mask[pos]]
            missed, slots, h = lru.access(layer, pos, step)
            dk[layer].index_copy_(0, slots, k[layer, missed])  # batched gather: per-token copies fused
            dv[layer].index_copy_(0, slots, v[layer, missed])
            ops += missed.numel()
            runs += _runs(missed)
            if layer >= 1:
                hits += h
                selected_late += pos.numel()
        ms = 1e3 * (time.perf_counter() - t0)
        rows.append(dict(ops=ops, runs=runs, bytes=ops * bpt, missed_bytes=ops * bpt, ms=ms,
                         units=int(sel.num_units.sum()), hit=hits / selected_late if selected_late else float("nan")))
    return "token", rows, cap


def make_caption_trace(frames: int, seed: int):
    """The real-model trace: SmolLM2-135M reading ``frames`` captions (~16 tokens each), then a question."""
    from mosaic_sglang.traces.caption_stream import caption_stream_trace

    return caption_stream_trace(frames, seed=seed).trace


def variant_indexes(trace, cfg: MosaicConfig, args) -> dict:
    """The indexes of the extra Mosaic rows, each streamed over ``trace`` (in this order; None: left out by the
    flags): ``coarse``, ``regrouped``, ``tail``, ``per_head``, ``per_layer``."""
    num_layers, _, heads, dim = trace.keys.shape

    def streamed(config: MosaicConfig, *, regroup_tail: bool = False) -> ClusterIndex:
        idx = ClusterIndex(config, num_layers=num_layers, num_kv_heads=heads, head_dim=dim)
        stream(trace, [idx])
        if regroup_tail:
            idx.regroup_tail()
        return idx

    out = dict.fromkeys(("coarse", "regrouped", "tail", "per_head", "per_layer"))
    if args.coarse_join:
        # Sensitivity: coarser clusters (split/join ratio 1.5 as in the defaults 0.3/0.2).
        out["coarse"] = streamed(cfg.replace(join_threshold=args.coarse_join, split_threshold=1.5 * args.coarse_join))
    if args.regroup_tokens:
        # Regrouping sealed frames into k-means clusters of ~regroup_tokens tokens (MosaicConfig.regroup_tokens).
        out["regrouped"] = streamed(cfg.replace(regroup_tokens=args.regroup_tokens))
    if args.regroup_tokens and args.regroup_tail:
        # ... and the frames still online regrouped when the question arrives (MosaicConfig.regroup_tail)
        out["tail"] = streamed(cfg.replace(regroup_tokens=args.regroup_tokens, regroup_tail=True), regroup_tail=True)
    if out["tail"] is not None and args.per_head:
        # ... with one cluster list per KV head (MosaicConfig.selection_heads='per_kv_head'); the same clusters
        out["per_head"] = streamed(out["tail"].config.replace(selection_heads="per_kv_head",
                                                              regroup_frames=args.per_head_frames), regroup_tail=True)
    if args.per_layer_tokens:
        # ... with one membership per layer, each regrouped into ~per_layer_tokens-token clusters
        out["per_layer"] = streamed(cfg.replace(regroup_tokens=args.per_layer_tokens, regroup_frames=args.per_head_frames,
                                                regroup_tail=True, membership="per_layer", selection_heads="per_kv_head"),
                                    regroup_tail=True)
    return out


def cluster_rows(index, v: dict, trace, cfg, args, queries, store: HostKVStore, always_mask) -> list:
    """The Mosaic rows: ``index`` (mosaic, mosaic-nopf) and the `variant_indexes` ``v``, each offloaded into the
    (empty) ``store`` and run through `run_units` (the served row: `offload_served.run_served`). Leaves the
    store empty."""
    num_layers, _, heads, _ = trace.keys.shape
    extents = offload_clusters(index, trace, store)
    store.check_integrity()

    def units_of(idx):
        def select(q):
            choice = idx.select_clusters(q)
            return [choice.cluster_ids[choice.indptr[l] : choice.indptr[l + 1]] for l in range(num_layers)]
        return select

    def union_of_heads(idx):
        """Per-head lists → per layer, the clusters any KV head chose (what a token-major host tier moves: a
        cluster extent holds every head's K/V; the server reads them the same way)."""
        def select(q):
            choice = idx.select_clusters(q)  # rows layer · H + head
            return [torch.unique(choice.cluster_ids[choice.indptr[l * heads] : choice.indptr[(l + 1) * heads]])
                    for l in range(num_layers)]
        return select

    coarse, regrouped, tail, per_head, per_layer = (v[k] for k in ("coarse", "regrouped", "tail", "per_head", "per_layer"))
    results = [run_units("mosaic", units_of(index), extents, store, cfg, queries, num_layers, prefetch=True),
               run_units("mosaic-nopf", units_of(index), extents, store, cfg, queries, num_layers, prefetch=False)]
    store.clear()
    if coarse is not None:
        coarse_extents = offload_clusters(coarse, trace, store)
        results.append(run_units(f"mosaic-join{args.coarse_join:g}", units_of(coarse), coarse_extents, store, cfg,
                                 queries, num_layers, prefetch=True))
        store.clear()
    if regrouped is not None:
        regrouped_extents = offload_clusters(regrouped, trace, store)
        results.append(run_units(f"mosaic-regroup{args.regroup_tokens}", units_of(regrouped), regrouped_extents, store,
                                 cfg, queries, num_layers, prefetch=False))  # MosaicConfig's default
        store.clear()
    if tail is not None:
        tail_extents = offload_clusters(tail, trace, store)
        results.append(run_units(f"mosaic-regroup{args.regroup_tokens}-tail", units_of(tail), tail_extents, store,
                                 cfg, queries, num_layers, prefetch=False))
        store.clear()
    if per_head is not None:
        per_head_extents = offload_clusters(per_head, trace, store)
        name = f"mosaic-regroup{args.regroup_tokens}per{args.per_head_frames}-tail-per-head"
        results.append(run_units(name, union_of_heads(per_head),
                                 per_head_extents, store, cfg, queries, num_layers, prefetch=False, lists=heads))
        store.clear()
    if per_layer is not None:
        per_layer_extents = offload_clusters(per_layer, trace, store)
        name = f"mosaic-perlayer-regroup{args.per_layer_tokens}per{args.per_head_frames}-tail-per-head"
        results.append(run_units(name, union_of_heads(per_layer), per_layer_extents, store, cfg, queries, num_layers,
                                 prefetch=False, lists=heads))
        store.clear()
        if args.served:  # the same selections through the server's host tier (group extents, per-layer orders)
            results.append(run_served(f"{name}-served", union_of_heads(per_layer), per_layer, trace, cfg, queries,
                                      always_mask, DTYPE, lists=heads))
    return results


def bench_history(length: int, args) -> dict:
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    trace = make_caption_trace(length, args.seed) if args.trace == "captions" else make_trace(length, args.seed)
    gen_s = time.perf_counter() - t0
    num_layers, n, heads, dim = trace.keys.shape
    budget = args.budget or max(64, int(0.1 * int((trace.frame_ids >= 0).sum())))
    # The rows' baseline, pinned (not the config's defaults, which may move): online clusters, one membership
    # and one list per layer; each row below turns on what its name says.
    cfg = MosaicConfig(budget=budget, residency_slack=args.slack, **ONLINE_BASELINE)
    index = ClusterIndex(cfg, num_layers=num_layers, num_kv_heads=heads, head_dim=dim)
    oracle = OracleTokenTopK(cfg, num_layers=num_layers, num_kv_heads=heads, head_dim=dim)
    frames = FrameBlockRetriever(cfg, num_layers=num_layers, num_kv_heads=heads, head_dim=dim)
    ingest_ms = stream(trace, [index, oracle, frames])
    v = variant_indexes(trace, cfg, args)

    q_all = trace.queries  # [L, Tq, Hq, D]: decode step t uses question token t (Tq = 1)
    steps = min(args.steps, q_all.shape[1])
    queries = [q_all[:, t : t + 1] for t in range(q_all.shape[1] - steps, q_all.shape[1])]
    always = always_attended_positions(trace.frame_ids.clone(), cfg)
    always_mask = torch.zeros(n, dtype=torch.bool)
    always_mask[always] = True

    # Per-layer membership: rows for one extent per cluster in every layer, each written in its layer's plane
    # only (unpinned: the pages of the other planes are never touched, so never committed).
    store_rows = n * num_layers if v["per_layer"] is not None else n
    store = HostKVStore(store_rows, num_layers=num_layers, num_kv_heads=heads, head_dim=dim, dtype=DTYPE, pin_memory=False)
    bpt = store.bytes_per_token
    results = cluster_rows(index, v, trace, cfg, args, queries, store, always_mask)
    frame_extents, fids = offload_frames(trace, store)

    def frame_units(q):
        sel = frames.select(q)
        out = []
        for l in range(num_layers):
            pos = sel.layer(l)
            f = fids[pos[~always_mask[pos]]]
            out.append(torch.unique(f[f >= 0]))
        return out

    results.append(run_units("frame", frame_units, [frame_extents] * num_layers, store, cfg, queries, num_layers,
                             prefetch=False))
    store.clear()
    store.check_integrity()
    results.append(run_tokens(oracle, trace, cfg, queries, num_layers, always_mask))

    out = dict(trace=args.trace, budget=budget, tokens=n, frames=int(trace.frame_ids.max()) + 1, clusters=index.num_clusters,
               coarse_clusters=v["coarse"].num_clusters if v["coarse"] is not None else None,
               mean_cluster=index.num_visual_tokens / max(1, index.num_clusters), ingest_ms_per_frame=ingest_ms,
               trace_gen_s=gen_s, dense_bytes=n * num_layers * bpt, always_tokens=int(always.numel()), methods={})
    for name, rows, cap in results:
        out["methods"][name] = dict(summary=summarize(rows, (int(always.numel()) + cap) * num_layers * bpt), steps=rows)
    return out


def summarize(rows: list[dict], device_bytes: int) -> dict:
    """Means over the warm steps (all but the first, cold one), the device KV, and the cold step's ops."""
    warm = rows[1:] if len(rows) > 1 else rows
    summary = {key: statistics.mean(r[key] for r in warm) for key in warm[0]}
    summary["device_bytes"] = device_bytes
    summary["cold_ops"] = rows[0]["ops"]
    return summary


def print_table(res: dict) -> None:
    mb = 1 / 2**20
    print(f"\n### {res['trace']}: {res['tokens']} tokens, budget {res['budget']} ({res['frames']} frames, {res['clusters']} clusters, mean size "
          f"{res['mean_cluster']:.1f}; dense {res['dense_bytes'] * mb:.1f} MB; ingest {res['ingest_ms_per_frame']:.1f} ms/frame)")
    print("| method | units/step | ops/step | runs/step | MB/step | moved/missed | dev_MB | hit | ms/step |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, m in res["methods"].items():
        s = m["summary"]
        ratio = s["bytes"] / s["missed_bytes"] if s["missed_bytes"] else float("nan")
        runs = f"{s['runs']:.0f}" if "runs" in s else "-"
        print(f"| {name} | {s['units']:.0f} | {s['ops']:.1f} | {runs} | {s['bytes'] * mb:.2f} | {ratio:.2f} | "
              f"{s['device_bytes'] * mb:.2f} | {s['hit']:.3f} | {s['ms']:.1f} |")
    mos, tok = res["methods"]["mosaic"]["summary"], res["methods"]["token"]["summary"]
    print(f"token ops / mosaic ops = {tok['ops'] / max(mos['ops'], 1e-9):.1f}x; "
          f"dense / mosaic device KV = {res['dense_bytes'] / mos['device_bytes']:.1f}x")
    for name, m in res["methods"].items():
        if name.startswith("mosaic-") and name != "mosaic-nopf":
            print(f"token ops / {name} ops = {tok['ops'] / max(m['summary']['ops'], 1e-9):.1f}x")
    for name, m in res["methods"].items():
        s = m["summary"]
        if "groups" in s:
            print(f"{name}: {s['groups']:.0f} host extents (groups), mean {s['mean_group_tokens']:.0f} tokens; pieces per "
                  f"selected (layer, cluster) {s['pieces_per_cluster']:.2f} (every offloaded one: "
                  f"{s['pieces_per_cluster_all']:.2f}); {s['kept_clustered']:.0f} clustered positions kept on device; "
                  f"{s['overflow']:.1f} overflow reads/step")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 4K and 8K tokens, 4 steps")
    p.add_argument("--trace", choices=("synthetic", "captions"), default="synthetic",
                   help="synthetic video-like KV, or real SmolLM2-135M KV over a caption stream")
    p.add_argument("--histories", type=int, nargs="*", default=None,
                   help="history lengths: tokens (synthetic) or captions (captions, ~16 tokens each)")
    p.add_argument("--budget", type=int, default=None,
                   help="tokens per layer beyond sinks/window/text (default: 2048 synthetic, 10%% of the frames' tokens captions)")
    p.add_argument("--slack", type=float, default=MosaicConfig().residency_slack)
    p.add_argument("--steps", type=int, default=12, help="decode steps per history (<= 16 question tokens)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--coarse-join", type=float, default=0.3,
                   help="also run Mosaic with this join_threshold (0 to skip): the cluster-size sensitivity")
    p.add_argument("--no-regroup-tail", dest="regroup_tail", action="store_false",
                   help="leave out the mosaic-regroup<T>-tail row (the regrouping row's index with its tail regrouped "
                        "at the question: MosaicConfig.regroup_tail)")
    p.add_argument("--no-per-head", dest="per_head", action="store_false",
                   help="leave out the mosaic-regroup<T>per<F>-tail-per-head row (regrouping every F sealed frames, "
                        "the tail at the question, one cluster list per KV head: MosaicConfig.selection_heads="
                        "'per_kv_head'; each layer's cache sized for every head's budget, the clusters any head chose "
                        "moved)")
    p.add_argument("--per-head-frames", type=int, default=32,
                   help="regroup_frames of the per-head row (32: the option set of benchmarks/README.md's "
                        "granularity section)")
    p.add_argument("--per-layer-tokens", type=int, default=24,
                   help="add the mosaic-perlayer-regroup<T>per<F>-tail-per-head row: one membership per layer "
                        "(MosaicConfig.membership='per_layer') regrouped into ~T-token clusters every F sealed frames, "
                        "the tail at the question, per-head lists; layer-major host extents (0: none)")
    p.add_argument("--no-served", dest="served", action="store_false",
                   help="leave out the mosaic-perlayer-...-served row (the per-layer row's selections read through "
                        "the server's host tier: one extent per planner.closed_groups group, per-layer row orders)")
    p.add_argument("--regroup-tokens", type=int, default=16,
                   help="add a mosaic row whose index regroups sealed frames (MosaicConfig.regroup_tokens; 0: none)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: tiny ops thrash with 2 on 2 shared cores)")
    p.add_argument("--out", default=None, help="write every number as JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.histories is None:
        if args.trace == "captions":
            args.histories = [64, 128] if args.quick else [256, 512, 1024]
        else:
            args.histories = [4096, 8192] if args.quick else [16384, 32768, 65536, 131072, 262144]
    if args.budget is None and args.trace == "synthetic":
        args.budget = 512 if args.quick else 2048
    if args.quick:
        args.steps = min(args.steps, 4)
    print(f"trace {args.trace}, budget {args.budget or '10%'} tokens/layer, slack {args.slack}, {args.steps} decode steps, seed {args.seed}, "
          f"dtype {DTYPE}, threads {args.threads}")
    all_results = []
    for tokens in args.histories:
        t0 = time.perf_counter()
        res = bench_history(tokens, args)
        print_table(res)
        print(f"({time.perf_counter() - t0:.0f} s)")
        all_results.append(res)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(args=vars(args), results=all_results), f, indent=1)


if __name__ == "__main__":
    main()
