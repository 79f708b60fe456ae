"""Retrieval quality and cost: Mosaic clusters vs token / frame / page retrieval units.

One command (``python benchmarks/retrieval_quality.py``; ``--quick`` for a CI smoke run). Prints:

1. per trace family (synthetic video-like KV; real SmolLM2-135M caption stream) and budget (2, 5, 10,
   25 % of the context): attention-mass recall, top-10 recall, output error, extra tokens attended,
   mean tokens per selected unit, units moved per decode step, selection + maintenance time per decode
   step, ingest time per frame;
2. per-frame ingest time of `ClusterIndex` (the defaults) at 1K…256K tokens of history, and selection +
   maintenance per decode step of Mosaic vs the oracle token top-k at 128K.

Mosaic rows: ``mosaic`` is `MosaicConfig`'s defaults (Mosaic as shipped); ``mosaic-online`` the defaults
before issue 13 (`trace_families.ONLINE_BASELINE`: online clusters, one membership and one cluster list per
layer); ``mosaic-whole`` that baseline with ``fill='whole'`` (the exact-vs-whole comparison). An index whose
config regroups the tail (`MosaicConfig.regroups_tail`) regroups it once the prompt is read, before the
question selects, as the server does at a prompt's end. A per-KV-head selection (``selection_heads=
'per_kv_head'``) is scored per KV head on that head's attention and averaged (`per_head_selection.py`); its
tokens and units count per (layer, KV head) list.

Protocol: every retriever gets the trace frame by frame (`Trace.frame_chunks`: a frame with its
timestamp text; the question last); `ClusterIndex.maintain()` runs after every frame (bounded splits at
frame boundaries, as designed). Quality uses the question's queries (all its tokens, causal). A decode
step is ``maintain(); select(last question token's query)`` over ``--decode-steps`` steps: median select
time plus mean maintenance time (deferred work left after ingest is amortised). Every budget counts tokens beyond the always-attended set
(sinks, recent window, text); rows show how many each method actually used. The index of each method is
built once per trace; budgets only change ``config.budget`` before `select` (no method's ingest reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mosaic_sglang.retrieval.baselines import (ClusterKVRetriever, DenseRetriever, FrameBlockRetriever,  # noqa: E402
                                               InfLLMBlockRetriever, OracleTokenTopK, QuestPageRetriever)
from mosaic_sglang.config import MosaicConfig  # noqa: E402
from mosaic_sglang.retrieval import selection_quality  # noqa: E402
from mosaic_sglang.retrieval import Retriever, Selection, always_attended_positions  # noqa: E402
from mosaic_sglang.traces import SyntheticTraceSpec, Trace, synthetic_trace  # noqa: E402
from trace_families import ONLINE_BASELINE  # noqa: E402  (this folder is on the path when the script runs)

BUDGETS = (0.02, 0.05, 0.10, 0.25)
"""Budget as a share of the context (issue 3: 2–25 %)."""
INGEST_POINTS = (1024, 4096, 16384, 65536, 131072, 262144)
"""History lengths of the ingest table (issue 3: 1K…256K)."""
SELECT_AT = 131072
"""History length of the Mosaic-vs-oracle selection cost comparison (issue 3 acceptance: 128K)."""
FRAME_TOKENS = 64
"""Visual tokens per frame in the ingest table: the synthetic trace's 8×8 grid (Qwen2.5-VL-like)."""
BULK_FRAME_TOKENS = 256
"""History is built with frames this large (the cheapest per token of 64/256/1024/4096 on the 2-core
machine), then `active_frames` normal frames restore a realistic active set before frames are timed."""

Factory = Callable[[MosaicConfig, int, int, int], Retriever]


def _cluster_index_factory() -> Factory:
    try:
        from mosaic_sglang.clusters import ClusterIndex
    except ImportError as e:
        raise SystemExit(
            f"retrieval_quality: mosaic_sglang.clusters.ClusterIndex is not importable ({e}); "
            "the benchmark compares Mosaic against the baselines, so it needs it. "
            "Run with --baselines-only to measure the baselines alone."
        ) from e
    return lambda cfg, l, h, d: ClusterIndex(cfg, num_layers=l, num_kv_heads=h, head_dim=d)


def methods(baselines_only: bool) -> dict[str, Factory]:
    """Name → factory ``(config, num_layers, num_kv_heads, head_dim) -> Retriever``."""
    out: dict[str, Factory] = {}
    if not baselines_only:
        out["mosaic"] = _cluster_index_factory()  # MosaicConfig's defaults: Mosaic as shipped
        online = _cluster_index_factory()  # the defaults before issue 13, and its whole-cluster fill (exact vs whole)
        out["mosaic-online"] = lambda c, l, h, d: online(c.replace(fill="exact", **ONLINE_BASELINE), l, h, d)
        out["mosaic-whole"] = lambda c, l, h, d: online(c.replace(fill="whole", **ONLINE_BASELINE), l, h, d)
    out["oracle-token"] = lambda c, l, h, d: OracleTokenTopK(c, num_layers=l, num_kv_heads=h, head_dim=d)
    # The mass-optimal set (mean softmax weight): an upper bound on mass recall at a given budget.
    out["oracle-mass*"] = lambda c, l, h, d: OracleTokenTopK(
        c.replace(query_reduce="mean"), num_layers=l, num_kv_heads=h, head_dim=d, use_probabilities=True)
    out["frame-block"] = lambda c, l, h, d: FrameBlockRetriever(c, num_layers=l, num_kv_heads=h, head_dim=d)
    out["quest-page"] = lambda c, l, h, d: QuestPageRetriever(c, num_layers=l, num_kv_heads=h, head_dim=d)
    out["infllm-block"] = lambda c, l, h, d: InfLLMBlockRetriever(c, num_layers=l, num_kv_heads=h, head_dim=d)
    out["clusterkv"] = lambda c, l, h, d: ClusterKVRetriever(c, num_layers=l, num_kv_heads=h, head_dim=d)
    out["dense"] = lambda c, l, h, d: DenseRetriever(c, num_layers=l, num_kv_heads=h, head_dim=d)
    return out


@dataclass
class QualityRow:
    trace: str
    budget_pct: float
    budget_tokens: int
    method: str
    mass_recall: float
    top10_recall: float
    output_error: float
    extra_tokens: float
    tokens_per_unit: float
    units_per_step: float
    step_ms: float
    ingest_ms_per_frame: float


def _ingest(r: Retriever, trace: Trace) -> tuple[float, int]:
    """Stream the trace into ``r`` frame by frame; ``(ms per frame incl. maintenance, frames)``."""
    chunks = trace.frame_chunks()
    maintain = getattr(r, "maintain", None)
    t0 = time.perf_counter()
    for a, b in chunks:
        r.append(trace.keys[:, a:b], trace.frame_ids[a:b])
        if maintain is not None:
            maintain()
    return (time.perf_counter() - t0) * 1e3 / len(chunks), len(chunks)


def _decode_step_ms(r: Retriever, query: torch.Tensor, steps: int) -> tuple[float, float]:
    """Per decode step ``maintain(); select(query)``: ``(median select ms + mean maintain ms, mean units/layer)``.

    The median resists other jobs on a shared machine; maintenance is averaged (amortised), since deferred
    splits left after ingest land on the first steps only.
    """
    maintain = getattr(r, "maintain", None)
    r.select(query)  # warm-up (allocator, lazy packing); leaves any deferred maintenance to the timed steps
    units, select_s, maintain_s = [], [], 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        if maintain is not None:
            maintain()
        t1 = time.perf_counter()
        sel = r.select(query)
        select_s.append(time.perf_counter() - t1)
        maintain_s += t1 - t0
        units.append(sel.num_units.float().mean().item())
    return (statistics.median(select_s) + maintain_s / steps) * 1e3, statistics.fmean(units)


def _quality(trace: Trace, sel: Selection) -> tuple[float, float, float]:
    """``(mass recall, top-10 recall, output error)`` of ``sel``, averaged over layers; a per-KV-head selection
    (rows ``l · H + h``) per KV head on that head's attention, averaged over heads (`per_head_selection.py`)."""
    num_layers, n, hkv, _ = trace.keys.shape
    if sel.num_layers == num_layers:
        m = selection_quality(trace.queries, trace.keys, trace.values, sel, query_positions=trace.query_positions)
        m = m.mean()
        return m.mass_recall.item(), m.topk_recall.item(), m.output_error.item()
    from per_head_selection import head_masks, quality_per_head  # needs ClusterIndex, which made this selection

    heads = [Selection.from_mask(m, torch.zeros(num_layers)) for m in head_masks(sel, num_layers, hkv, n)]
    q = quality_per_head(trace, heads, hkv)
    return q["mass_recall"], q["top10_recall"], q["output_error"]


def quality_table(name: str, trace: Trace, factories: dict[str, Factory], budgets, steps: int) -> list[QualityRow]:
    """Rows for one trace: every method at every budget."""
    num_layers, n, hkv, d = trace.keys.shape
    budget_tokens = [max(1, int(round(f * n))) for f in budgets]
    rows = []
    base = MosaicConfig(budget=budget_tokens[0])
    always = always_attended_positions(trace.frame_ids.clone(), base).numel()  # the same for every method
    for method, make in tqdm(factories.items(), desc=f"{name}: methods", leave=False):
        r = make(base, num_layers, hkv, d)
        ingest_ms, _ = _ingest(r, trace)
        if getattr(r, "regroup_tail", None) is not None and r.config.regroups_tail:
            r.regroup_tail()  # the prompt (the question last) is read: as the server does at a prompt's end
        built = r.config
        for frac, b in zip(budgets, budget_tokens):
            r.config = built.replace(budget=b)  # selection-time knob only (see module docstring)
            sel = r.select(trace.queries)
            extra = sel.sizes().float() - always  # per layer, or per (layer, KV head) list
            per_unit = (extra.sum() / sel.num_units.sum().clamp(min=1)).item()
            step_ms, units = _decode_step_ms(r, trace.queries[:, -1:], steps)
            rows.append(QualityRow(name, 100 * frac, b, method, *_quality(trace, sel), extra.mean().item(), per_unit,
                                   units, step_ms, ingest_ms))
    return rows


@dataclass
class IngestRow:
    history_tokens: int
    clusters: int
    append_ms: float
    maintain_ms: float


def _history_keys(num_tokens: int, num_layers: int, hkv: int, d: int, g: torch.Generator) -> torch.Tensor:
    """Cheap keys ``[L, T, H, D]``: 8 random centres plus unit noise (cost, not quality, is measured here)."""
    centres = torch.randn(num_layers, 8, hkv, d, generator=g) * 2
    pick = torch.randint(8, (num_tokens,), generator=g)
    return centres[:, pick] + torch.randn(num_layers, num_tokens, hkv, d, generator=g)


def ingest_table(make_mosaic: Factory | None, points, select_at: int, repeats: int, dims, seed: int = 0,
                 regroup_tokens: int | None = None):
    """Ingest time per frame vs history; selection cost of Mosaic (the defaults) vs oracle at ``select_at``
    tokens (``regroup_tokens``: `MosaicConfig.regroup_tokens` of the Mosaic index; None: the default)."""
    num_layers, hkv, hq, d = dims
    g = torch.Generator().manual_seed(seed)
    cfg = MosaicConfig(budget=max(1, select_at // 10))
    if regroup_tokens is not None:
        cfg = cfg.replace(regroup_tokens=regroup_tokens)
    oracle = OracleTokenTopK(cfg, num_layers=num_layers, num_kv_heads=hkv, head_dim=d)
    mosaic = make_mosaic(cfg, num_layers, hkv, d) if make_mosaic is not None else None
    frame_id, n = 0, 0
    rows: list[IngestRow] = []
    select_cost: dict[str, float] = {}
    query = torch.randn(num_layers, 1, hq, d, generator=g)

    def feed(tokens: int, frame_tokens: int) -> tuple[float, float]:
        nonlocal frame_id, n
        keys = _history_keys(tokens, num_layers, hkv, d, g)
        fids = frame_id + torch.arange(tokens) // frame_tokens
        frame_id = int(fids[-1]) + 1
        t_app = t_mnt = 0.0
        if mosaic is not None:
            t0 = time.perf_counter()
            mosaic.append(keys, fids)
            t1 = time.perf_counter()
            mosaic.maintain()
            t_app, t_mnt = t1 - t0, time.perf_counter() - t1
        if n < select_at:
            oracle.append(keys, fids)  # same keys, so both select over the same history
        n += tokens
        return t_app * 1e3, t_mnt * 1e3

    if make_mosaic is not None:  # warm-up: first-call costs (allocator, op dispatch) must not land on the 1K point
        warm_index = make_mosaic(cfg, num_layers, hkv, d)
        warm_index.append(_history_keys(8 * FRAME_TOKENS, num_layers, hkv, d, g),
                          torch.arange(8 * FRAME_TOKENS) // FRAME_TOKENS)
        warm_index.maintain()
    bar = tqdm(points, desc="ingest vs history", leave=False)
    for point in bar:
        warm = cfg.active_frames * FRAME_TOKENS
        while n + warm < point:  # bulk history, then a few normal frames to restore the active set
            feed(min(BULK_FRAME_TOKENS, point - warm - n), BULK_FRAME_TOKENS)
        for _ in range(cfg.active_frames):
            feed(FRAME_TOKENS, FRAME_TOKENS)
        start = n  # the timed frames see histories start .. start + (repeats-1)·FRAME_TOKENS
        times = [feed(FRAME_TOKENS, FRAME_TOKENS) for _ in range(repeats)]
        rows.append(IngestRow(start, int(getattr(mosaic, "num_clusters", 0) or 0),
                              statistics.median(t for t, _ in times), statistics.median(m for _, m in times)))
        if n >= select_at and not select_cost:
            for name, r in (("mosaic", mosaic), ("oracle-token", oracle)):
                if r is not None:
                    select_cost[name], _ = _decode_step_ms(r, query, 10)
            select_cost["history_tokens"] = float(oracle.num_tokens)
            del oracle  # free its key copy before the largest histories
    if mosaic is not None and points:
        select_cost["interleaved_ratio"] = _interleaved_ingest_ratio(
            mosaic, frame_id, lambda: make_mosaic(cfg, num_layers, hkv, d), points[0], dims, g, repeats=max(9, 3 * repeats)
        )
    return rows, select_cost


def _interleaved_ingest_ratio(big, big_frame: int, make_small, small_history: int, dims, g, repeats: int) -> float:
    """Median single-frame append+maintain time on ``big`` (largest history) over a fresh index with
    ``small_history`` tokens, the two timed alternately so machine drift hits both equally."""
    num_layers, hkv, _, d = dims
    small, small_frame = make_small(), 0
    while small.num_tokens < small_history:
        small.append(_history_keys(FRAME_TOKENS, num_layers, hkv, d, g), torch.full((FRAME_TOKENS,), small_frame))
        small.maintain()
        small_frame += 1
    times: dict[int, list[float]] = {0: [], 1: []}
    for r in range(repeats):
        for which, (index, frame) in enumerate(((small, small_frame + r), (big, big_frame + r))):
            keys = _history_keys(FRAME_TOKENS, num_layers, hkv, d, g)
            t0 = time.perf_counter()
            index.append(keys, torch.full((FRAME_TOKENS,), frame))
            index.maintain()
            times[which].append(time.perf_counter() - t0)
    return statistics.median(times[1]) / statistics.median(times[0])


def _print_quality(rows: list[QualityRow]) -> None:
    cols = ("method", "mass_rec", "top10_rec", "out_err", "extra_tok", "tok/unit", "units/step", "step_ms",
            "ingest_ms/frame")
    for (trace, pct), group in _groupby(rows, lambda r: (r.trace, r.budget_pct)):
        print(f"\n[{trace}] budget {pct:g}% = {group[0].budget_tokens} tokens / layer")
        print("  ".join(f"{c:>15}" for c in cols))
        for r in group:
            vals = (r.method, f"{r.mass_recall:.3f}", f"{r.top10_recall:.3f}", f"{r.output_error:.3f}",
                    f"{r.extra_tokens:.0f}", f"{r.tokens_per_unit:.1f}", f"{r.units_per_step:.1f}", f"{r.step_ms:.2f}",
                    f"{r.ingest_ms_per_frame:.2f}")
            print("  ".join(f"{v:>15}" for v in vals))


def _groupby(items, key):
    out: dict = {}
    for it in items:
        out.setdefault(key(it), []).append(it)
    return out.items()


def machine() -> dict:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "torch": torch.__version__, "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a CI smoke run (~1 min)")
    p.add_argument("--out", type=Path, help="write every number as JSON here")
    p.add_argument("--baselines-only", action="store_true", help="skip Mosaic (when ClusterIndex is absent)")
    p.add_argument("--skip-real", action="store_true", help="skip the SmolLM2 caption-stream trace")
    p.add_argument("--synthetic-frames", type=int, default=128, help="frames of the synthetic trace (64 tokens each)")
    p.add_argument("--caption-frames", type=int, default=128, help="captions of the real-model trace (~20 tokens each)")
    p.add_argument("--ingest-max", type=int, default=INGEST_POINTS[-1], help="largest history of the ingest table")
    p.add_argument("--decode-steps", type=int, default=10, help="decode steps averaged per measurement")
    p.add_argument("--regroup-tokens", type=int, default=None,
                   help="MosaicConfig.regroup_tokens of the ingest table's Mosaic index (default: the config's, "
                        f"{MosaicConfig().regroup_tokens}; 0: no regrouping)")
    # 1 thread by default: on a shared 2-core box, intra-op threads of many tiny ops contend badly
    # (measured: ClusterIndex ingest 20 ms/frame with 1 thread vs 281 ms with 2 under load).
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: leave torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.synthetic_frames, args.caption_frames = 16, 12
        args.ingest_max = min(args.ingest_max, 4096)
        args.decode_steps = 2
    factories = methods(args.baselines_only)
    print(f"machine: {machine()}")

    t_start = time.perf_counter()
    rows: list[QualityRow] = []
    spec = SyntheticTraceSpec(num_frames=args.synthetic_frames, num_scenes=max(2, args.synthetic_frames // 16))
    rows += quality_table("synthetic", synthetic_trace(spec), factories, BUDGETS, args.decode_steps)
    check = None
    if not args.skip_real:
        from mosaic_sglang.traces.caption_stream import caption_stream_trace

        cs = caption_stream_trace(args.caption_frames)
        check = {"layer": cs.check_layer, "max_abs_error": cs.check_max_abs_error, "output_scale": cs.check_output_scale}
        print(f"caption stream: {cs.trace.num_tokens} tokens; captured-query check at layer {cs.check_layer}: "
              f"max |recomputed - model| = {cs.check_max_abs_error:.2e} (output scale {cs.check_output_scale:.2f})")
        rows += quality_table("smollm2-captions", cs.trace, factories, BUDGETS, args.decode_steps)
    _print_quality(rows)

    points = [p_ for p_ in INGEST_POINTS if p_ <= args.ingest_max]
    select_at = min(SELECT_AT, points[-1])
    dims = (4, 2, 8, 64)  # the synthetic trace's (L, Hkv, Hq, D)
    ingest_rows, select_cost = ingest_table(factories.get("mosaic"), points, select_at, 2 if args.quick else 9, dims,
                                            regroup_tokens=args.regroup_tokens)
    print(f"\n[ingest] one {FRAME_TOKENS}-token frame appended to a history of N tokens "
          f"(L={dims[0]}, Hkv={dims[1]}, D={dims[3]}), median of repeats")
    print(f"{'history':>10} {'clusters':>10} {'append_ms':>10} {'maintain_ms':>12}")
    for r in ingest_rows:
        print(f"{r.history_tokens:>10} {r.clusters:>10} {r.append_ms:>10.2f} {r.maintain_ms:>12.2f}")
    if ingest_rows and ingest_rows[0].append_ms > 0:
        print(f"ingest ratio largest/smallest history (table rows, measured in sequence): "
              f"{ingest_rows[-1].append_ms / ingest_rows[0].append_ms:.2f}")
    if "interleaved_ratio" in select_cost:
        print(f"ingest ratio largest/smallest history, interleaved (append+maintain, alternating): "
              f"{select_cost.pop('interleaved_ratio'):.2f}")
    print(f"\n[selection per decode step at {int(select_cost.get('history_tokens', 0))} tokens, budget 10%] " +
          ", ".join(f"{k}: {v:.2f} ms" for k, v in select_cost.items() if k != "history_tokens"))
    if "mosaic" in select_cost:
        print(f"mosaic / oracle-token: {select_cost['mosaic'] / select_cost['oracle-token']:.2f}")
    elapsed = time.perf_counter() - t_start
    print(f"\ntotal {elapsed:.0f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "elapsed_s": elapsed,
            "quality": [r.__dict__ for r in rows], "caption_check": check,
            "ingest": [r.__dict__ for r in ingest_rows], "selection": select_cost}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
