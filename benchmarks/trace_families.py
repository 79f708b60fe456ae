"""What the cluster-quality benchmarks share: their command-line knobs, the two trace families, the
frame-by-frame ingest of `retrieval_quality.py`'s protocol, the online baseline's options, and the JSON dump.

Imported by ``retrieval_quality.py``, ``mass_budget.py``, ``per_head_selection.py`` and
``granularity_frontier.py`` (scripts in this folder, which Python puts on the path when one of them runs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mosaic_sglang.config import ONLINE_SHARED  # noqa: E402
from mosaic_sglang.traces import SyntheticTraceSpec, Trace, synthetic_trace  # noqa: E402

__all__ = ["ONLINE_BASELINE", "add_trace_arguments", "load_traces", "ingest", "exact_head_probs", "exact_mean_probs",
           "write_json"]

ONLINE_BASELINE = ONLINE_SHARED
"""`MosaicConfig` options of the defaults before issue 13's granularity change (`config.ONLINE_SHARED`: online
clusters, one membership for all layers, one cluster list per layer). Rows named for that mode pass them, so
they measure it whatever the defaults are."""

QUICK_SYNTHETIC_FRAMES, QUICK_CAPTION_FRAMES = 16, 12
"""``--quick`` trace sizes (a CI smoke run)."""


def add_trace_arguments(parser: argparse.ArgumentParser) -> None:
    """``--quick``, ``--skip-real``, ``--synthetic-frames``, ``--caption-frames``, ``--threads``, ``--out``."""
    parser.add_argument("--quick", action="store_true", help="tiny traces: a CI smoke run")
    parser.add_argument("--skip-real", action="store_true", help="skip the SmolLM2 caption-stream trace")
    parser.add_argument("--synthetic-frames", type=int, default=128, help="frames of the synthetic trace")
    parser.add_argument("--caption-frames", type=int, default=128, help="captions of the real-model trace")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=None, help="write every number as JSON here")


def load_traces(args: argparse.Namespace) -> list[tuple[str, Trace]]:
    """``[(name, trace)]``: the synthetic trace, then (unless ``--skip-real``) the SmolLM2 caption stream;
    sets the torch threads and, with ``--quick``, the small sizes."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.synthetic_frames, args.caption_frames = QUICK_SYNTHETIC_FRAMES, QUICK_CAPTION_FRAMES
    spec = SyntheticTraceSpec(num_frames=args.synthetic_frames, num_scenes=max(2, args.synthetic_frames // 16))
    traces = [("synthetic", synthetic_trace(spec))]
    if not args.skip_real:
        from mosaic_sglang.traces.caption_stream import caption_stream_trace

        traces.append(("smollm2-captions", caption_stream_trace(args.caption_frames).trace))
    return traces


def ingest(index, trace: Trace) -> int:
    """Stream ``trace`` into ``index`` frame by frame, maintenance after each frame; returns the frames."""
    chunks = trace.frame_chunks()
    for a, b in chunks:
        index.append(trace.keys[:, a:b], trace.frame_ids[a:b])
        index.maintain()
    return len(chunks)


def exact_head_probs(trace: Trace) -> torch.Tensor:
    """``[L, Hkv, N] float32`` exact attention probabilities per KV head, averaged over the question's tokens
    and that head's GQA group of query heads (causal, as `selection_quality`): the mass recall of one KV
    head's attended positions is the sum of its row over them."""
    from mosaic_sglang.retrieval.gqa import group_queries

    num_layers, n, hkv, d = trace.keys.shape
    visible = torch.arange(n)[None, :] <= trace.query_positions[:, None]  # [Tq, N]
    out = []
    for layer in range(num_layers):
        q = group_queries(trace.queries[layer:layer + 1], hkv)[0]  # [Hkv, g, Tq, D]
        logits = q @ trace.keys[layer].float().permute(1, 2, 0)[:, None] / d ** 0.5  # [Hkv, g, Tq, N]
        out.append(torch.softmax(logits.masked_fill(~visible, float("-inf")), -1).mean((1, 2)))
    return torch.stack(out)


def exact_mean_probs(trace: Trace) -> torch.Tensor:
    """``[L, N] float32``: `exact_head_probs` averaged over KV heads (every group has as many query heads),
    i.e. over the question's tokens and all query heads: a layer's mass recall of a set of positions is the
    sum of this over them."""
    return exact_head_probs(trace).mean(1)


def write_json(path: Path | None, payload: dict) -> None:
    """Write ``payload`` to ``path`` (parents created); nothing when ``path`` is None."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=1))
