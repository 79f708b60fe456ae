"""Per-KV-head selection vs one selection shared by a layer's heads: is the recall worth a list per head?

One command (``python benchmarks/per_head_selection.py``; ``--quick`` for a CI smoke run). On both trace
families of `retrieval_quality.py`, one `ClusterIndex` per trace (the online baseline, `ONLINE_BASELINE`:
online clusters, shared membership, so the clusters are the same for every head) and, at each budget, two
selections from the same summaries:

* ``shared`` (``selection_heads='shared'``, the default before issue 13): one cluster ranking per layer from
  all query heads (`ClusterIndex.select`);
* ``per-head``: per KV head its own ranking, from the query heads of its GQA group and that head's
  centroids and spreads only, filled to the same budget (``selection_heads='per_kv_head'``, what the
  server attends with that option).

Quality per KV head against exact attention on that head (`selection_quality` on the head's slice of
queries, keys and values), averaged over heads — the same weights `selection_quality` gives heads in the
shared case. Also: distinct positions per layer over all heads (what a token-major transfer moves: the
union; a head-major layout moves budget × heads head-slices in both cases) and the selection time.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mosaic_sglang.clusters import ClusterIndex  # noqa: E402
from mosaic_sglang.config import MosaicConfig  # noqa: E402
from mosaic_sglang.retrieval import Selection, always_attended_positions, selection_quality  # noqa: E402
from mosaic_sglang.traces import Trace  # noqa: E402
from trace_families import ONLINE_BASELINE, add_trace_arguments, ingest, load_traces, write_json  # noqa: E402

BUDGETS = (0.02, 0.05, 0.10, 0.25)


def per_head_select(index: ClusterIndex, queries: torch.Tensor) -> Selection:
    """The index's selection with ``selection_heads='per_kv_head'`` (its other knobs as configured): what
    Mosaic serves with that option, rows ``layer · H + head``."""
    configured = index.config
    index.config = replace(configured, selection_heads="per_kv_head")
    try:
        return index.select(queries)
    finally:
        index.config = configured


def head_masks(selection: Selection, num_layers: int, num_kv_heads: int, num_tokens: int) -> torch.Tensor:
    """``[Hkv, L, N] bool``: each KV head's attended positions from a per-head selection (rows l · H + h)."""
    rows = torch.repeat_interleave(torch.arange(selection.num_layers), selection.sizes())
    mask = torch.zeros(selection.num_layers, num_tokens, dtype=torch.bool)
    mask[rows, selection.indices] = True
    return mask.view(num_layers, num_kv_heads, num_tokens).transpose(0, 1)


def per_head_masks(index: ClusterIndex, queries: torch.Tensor) -> torch.Tensor:
    """``[Hkv, L, N] bool``: each KV head's attended positions, ranked by its own query group."""
    return head_masks(per_head_select(index, queries), index.num_layers, index.num_kv_heads, index.num_tokens)


def quality_per_head(trace: Trace, selections, hkv: int) -> dict:
    """Mean over KV heads of each head's quality; ``selections[h]`` serves head ``h`` (or one for all)."""
    group = trace.queries.shape[2] // hkv
    per = []
    for h in range(hkv):
        sel = selections[h] if isinstance(selections, list) else selections
        per.append(selection_quality(trace.queries[:, :, h * group:(h + 1) * group], trace.keys[:, :, h:h + 1],
                                     trace.values[:, :, h:h + 1], sel, query_positions=trace.query_positions).mean())
    return {"mass_recall": statistics.fmean(q.mass_recall.item() for q in per),
            "top10_recall": statistics.fmean(q.topk_recall.item() for q in per),
            "output_error": statistics.fmean(q.output_error.item() for q in per)}


def trace_rows(name: str, trace: Trace, repeats: int) -> list[dict]:
    num_layers, n, hkv, d = trace.keys.shape
    index = ClusterIndex(MosaicConfig(**ONLINE_BASELINE), num_layers=num_layers, num_kv_heads=hkv, head_dim=d)
    ingest(index, trace)
    always = always_attended_positions(trace.frame_ids.clone(), index.config).numel()
    rows = []
    for frac in BUDGETS:
        index.config = MosaicConfig(budget=max(1, round(frac * n)), **ONLINE_BASELINE)  # selection-time knob only
        timings = {"shared": [], "per-head": []}
        for _ in range(repeats):
            t0 = time.perf_counter()
            shared = index.select(trace.queries)
            t1 = time.perf_counter()
            masks = per_head_masks(index, trace.queries)
            heads = [Selection.from_mask(m, torch.zeros(num_layers)) for m in masks]  # as `select` builds its own
            timings["shared"].append(t1 - t0)
            timings["per-head"].append(time.perf_counter() - t1)
        union = masks.any(0).sum(1).float() - always  # [L]
        for mode, sel, moved in (("shared", shared, shared.sizes().float() - always), ("per-head", heads, union)):
            rows.append({"trace": name, "budget": f"{100 * frac:g} %", "mode": mode, **quality_per_head(trace, sel, hkv),
                         "union_tokens": moved.mean().item(), "budget_tokens": index.config.budget,
                         "select_ms": 1e3 * statistics.median(timings[mode])})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_trace_arguments(parser)
    parser.add_argument("--repeats", type=int, default=5, help="timed selections per point (median)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 1
    started = time.perf_counter()
    rows = [row for name, trace in load_traces(args) for row in trace_rows(name, trace, args.repeats)]
    print("| trace | budget | mode | mass recall | top-10 recall | output error | distinct tokens / layer "
          "(budget) | select ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['trace']} | {r['budget']} | {r['mode']} | {r['mass_recall']:.3f} | {r['top10_recall']:.3f} | "
              f"{r['output_error']:.3f} | {r['union_tokens']:.0f} ({r['budget_tokens']}) | {r['select_ms']:.1f} |")
    print()
    for shared, head in zip(rows[::2], rows[1::2]):
        print(f"[{shared['trace']} {shared['budget']}] per-head - shared: mass recall "
              f"{100 * (head['mass_recall'] - shared['mass_recall']):+.1f} pt, top-10 "
              f"{100 * (head['top10_recall'] - shared['top10_recall']):+.1f} pt; distinct tokens "
              f"{head['union_tokens'] / max(shared['union_tokens'], 1e-9):.2f}x; select time "
              f"{head['select_ms'] / max(shared['select_ms'], 1e-9):.2f}x")
    print(f"total {time.perf_counter() - started:.0f} s")
    write_json(args.out, {"rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
