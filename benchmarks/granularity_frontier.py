"""Recall vs cluster size: Mosaic's granularity knobs swept on both trace families (issue 13).

One command (``python benchmarks/granularity_frontier.py``; ``--quick`` for a CI smoke run). For each
``join_threshold`` (how far a cluster's spread may grow when a token joins, relative to the stream's key
variance; ``split_threshold`` kept at 1.5× it, the default ratio) and ``max_cluster_size``, one
`ClusterIndex` per trace is built frame by frame (`retrieval_quality.py`'s protocol) and the question
selects at a 10 % budget. Per point: attention-mass recall and top-10 recall against exact attention,
clusters in the index, mean tokens per *selected* cluster (selected tokens / clusters used, the unit a
transfer moves), and ingest time per frame. The issue's goal reads off the table: the largest selected
clusters whose mass recall stays within 1 point of the defaults' (≥ 16 tokens on the synthetic trace,
≥ 8 on the captions).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mosaic_sglang.clusters import ClusterIndex  # noqa: E402
from mosaic_sglang.config import MosaicConfig  # noqa: E402
from mosaic_sglang.retrieval import always_attended_positions, selection_quality  # noqa: E402
from mosaic_sglang.traces import SyntheticTraceSpec, Trace, synthetic_trace  # noqa: E402

JOIN_THRESHOLDS = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
MAX_CLUSTER_SIZES = (64, 256)
BUDGET = 0.10


def point(trace: Trace, join: float, max_size: int) -> dict:
    num_layers, n, hkv, d = trace.keys.shape
    config = MosaicConfig(budget=max(1, round(BUDGET * n)), join_threshold=join, split_threshold=1.5 * join,
                          max_cluster_size=max_size)
    index = ClusterIndex(config, num_layers=num_layers, num_kv_heads=hkv, head_dim=d)
    chunks = trace.frame_chunks()
    started = time.perf_counter()
    for a, b in chunks:
        index.append(trace.keys[:, a:b], trace.frame_ids[a:b])
        index.maintain()
    ingest_ms = 1e3 * (time.perf_counter() - started) / len(chunks)
    selection = index.select(trace.queries)
    quality = selection_quality(trace.queries, trace.keys, trace.values, selection,
                                query_positions=trace.query_positions).mean()
    selected = selection.sizes().float() - always_attended_positions(trace.frame_ids.clone(), config).numel()
    return {"join_threshold": join, "max_cluster_size": max_size, "mass_recall": quality.mass_recall.item(),
            "top10_recall": quality.topk_recall.item(), "clusters": index.num_clusters,
            "tokens_per_selected_cluster": (selected.sum() / selection.num_units.sum().clamp(min=1)).item(),
            "ingest_ms_per_frame": ingest_ms}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny traces and two points: a CI smoke run")
    parser.add_argument("--skip-real", action="store_true", help="skip the SmolLM2 caption-stream trace")
    parser.add_argument("--synthetic-frames", type=int, default=128)
    parser.add_argument("--caption-frames", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=None, help="write every number as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    joins, sizes = JOIN_THRESHOLDS, MAX_CLUSTER_SIZES
    if args.quick:
        args.synthetic_frames, args.caption_frames, joins, sizes = 16, 12, (0.2, 1.6), (64,)
    started = time.perf_counter()
    spec = SyntheticTraceSpec(num_frames=args.synthetic_frames, num_scenes=max(2, args.synthetic_frames // 16))
    traces = [("synthetic", synthetic_trace(spec))]
    if not args.skip_real:
        from mosaic_sglang.traces.caption_stream import caption_stream_trace

        traces.append(("smollm2-captions", caption_stream_trace(args.caption_frames).trace))
    rows = []
    for name, trace in traces:
        for max_size in sizes:
            for join in joins:
                rows.append({"trace": name, **point(trace, join, max_size)})
    print("| trace | max_cluster_size | join_threshold | mass recall | top-10 recall | clusters | "
          "tokens / selected cluster | ingest ms / frame |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['trace']} | {r['max_cluster_size']} | {r['join_threshold']:g} | {r['mass_recall']:.3f} | "
              f"{r['top10_recall']:.3f} | {r['clusters']} | {r['tokens_per_selected_cluster']:.1f} | "
              f"{r['ingest_ms_per_frame']:.2f} |")
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
