"""Does regrouping keep ingest flat? Per-frame append + maintain at a 1K vs a 256K history, regrouping on.

One command (``python benchmarks/regroup_ingest.py``; ``--quick`` for a CI smoke run). Two `ClusterIndex`es
with ``regroup_tokens`` (default 16), ``regroup_frames`` (16) and ``membership`` (shared): a small one (1K
tokens of 64-token frames) and a large one (``--history`` tokens: bulk 256-token frames, then 40 ordinary frames so every timed span
holds ordinary frames only). Then ``--repeats`` 64-token frames (random keys; L=4, Hkv=2, D=64, the
synthetic trace's shape) are appended to each **alternately** (machine drift hits both alike), each followed
by `maintain`. Printed: median per-frame time of the frames that did not regroup, mean of those that did
(one in ``regroup_frames``), and the amortised mean per frame, with the large/small ratios. The issue's
goal: 256K vs 1K ≤ 1.2× amortised.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mosaic_sglang import MosaicConfig  # noqa: E402
from mosaic_sglang.clusters import ClusterIndex  # noqa: E402

LAYERS, KV_HEADS, HEAD_DIM, FRAME_TOKENS, BULK_FRAME_TOKENS = 4, 2, 64, 64, 256


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--history", type=int, default=262144, help="tokens of the large index")
    p.add_argument("--repeats", type=int, default=64, help="timed frames per index")
    p.add_argument("--regroup-tokens", type=int, default=16)
    p.add_argument("--regroup-frames", type=int, default=16)
    p.add_argument("--membership", choices=("shared", "per_layer"), default="shared",
                   help="MosaicConfig.membership: one membership for all layers, or one per layer")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="8K history, 20 frames")
    args = p.parse_args(argv)
    if args.quick:
        args.history, args.repeats = 8192, 20
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    cfg = MosaicConfig(budget=1000, regroup_tokens=args.regroup_tokens, regroup_frames=args.regroup_frames,
                       membership=args.membership)

    def keys(n: int) -> torch.Tensor:
        return torch.randn(LAYERS, n, KV_HEADS, HEAD_DIM, generator=gen)

    def build(tokens: int, frame_tokens: int) -> tuple[ClusterIndex, int]:
        index, frame = ClusterIndex(cfg, num_layers=LAYERS, num_kv_heads=KV_HEADS, head_dim=HEAD_DIM), 0
        while index.num_tokens < tokens:
            index.append(keys(frame_tokens), torch.full((frame_tokens,), frame))
            index.maintain()
            frame += 1
        return index, frame

    started = time.perf_counter()
    small, small_frame = build(1024, FRAME_TOKENS)
    large, large_frame = build(args.history, BULK_FRAME_TOKENS)
    for _ in range(40):
        large.append(keys(FRAME_TOKENS), torch.full((FRAME_TOKENS,), large_frame))
        large.maintain()
        large_frame += 1
    history = (small.num_tokens, large.num_tokens)  # at the first timed frame
    plain: dict[int, list[float]] = {0: [], 1: []}
    regrouping: dict[int, list[float]] = {0: [], 1: []}
    for r in range(args.repeats):
        for which, (index, frame) in enumerate(((small, small_frame + r), (large, large_frame + r))):
            before = index.num_regroups
            t0 = time.perf_counter()
            index.append(keys(FRAME_TOKENS), torch.full((FRAME_TOKENS,), frame))
            index.maintain()
            ms = 1e3 * (time.perf_counter() - t0)
            (plain if index.num_regroups == before else regrouping)[which].append(ms)
    print(f"regroup_tokens={args.regroup_tokens} regroup_frames={args.regroup_frames} membership={args.membership}; "
          f"{args.repeats} frames each, "
          f"alternating; large index: {large.num_tokens} tokens, {large.num_clusters} clusters")
    print("| history (tokens) | frames | median ms (no regroup) | regrouping frames | mean ms (regrouping) | amortised ms / frame |")
    print("|---|---|---|---|---|---|")
    amortised = []
    for which in (0, 1):
        every = plain[which] + regrouping[which]
        amortised.append(statistics.mean(every))
        mean_regroup = statistics.mean(regrouping[which]) if regrouping[which] else float("nan")
        print(f"| {history[which]} | {len(every)} | {statistics.median(plain[which]):.2f} | {len(regrouping[which])} | "
              f"{mean_regroup:.2f} | {amortised[-1]:.2f} |")
    ratio_plain = statistics.median(plain[1]) / statistics.median(plain[0])
    print(f"large / small: median {ratio_plain:.2f}x, amortised {amortised[1] / amortised[0]:.2f}x "
          f"(total {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
