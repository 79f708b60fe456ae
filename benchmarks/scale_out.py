"""Scale-out on SGLang's own engines: throughput of 1 vs 2 Mosaic replicas behind ``sglang-router``
(``--policy manual``, one routing key per video), and the per-forward cost of the tensor-parallel
consistency step (all-gathering heads so every rank clusters the whole model), in one run.

Replicas: each is a ``sglang.launch_server --enable-mosaic`` (budget 64, the host tier on, `MosaicConfig`'s
defaults otherwise) on the embedded tiny Qwen2.5-VL (CPU); the
machine's cores are split evenly between the replicas of a setting (``OMP_NUM_THREADS``), so 1 and 2
replicas use the same cores. Load: ``--videos`` conversations, each ``--turns`` questions about its own
video, one client thread per conversation, all through the router. Reported per setting: wall seconds,
requests/s, the ratio to one replica, and the share of follow-up turns whose ``cached_tokens`` covered
their previous turn (video affinity held).

TP consistency: two gloo processes (``torch.distributed``, CPU) time the all-gathers Mosaic adds per
forward at a model's shapes: the query heads of each selecting layer (a question's prefill chunk, or one
decode token when re-selecting) and the keys of the new tokens at ingest (all layers). Kept decode steps
gather nothing. On a GPU the same gathers run over NCCL: not measured here.

    .venv/bin/python benchmarks/scale_out.py            # 8 conversations x 3 turns; ~4 min on 2 cores
    .venv/bin/python benchmarks/scale_out.py --quick    # smoke size
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests


def _args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=8, help="conversations (one video each)")
    p.add_argument("--turns", type=int, default=3)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    p.add_argument("--skip-serving", action="store_true", help="only the TP consistency timings")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.videos, args.turns, args.frames, args.max_new_tokens = 2, 2, 8, 2
    return args


# -- replicas behind the router ------------------------------------------------------------------------

def _serve_setting(args, model: str, videos: list, replicas: int, workdir: Path) -> dict:
    from mosaic_sglang.frontend.router import SGLangRouter
    from mosaic_sglang.frontend.server import SGLangServer, cpu_server_args
    from mosaic_sglang.frontend.video_chat import VideoConversation

    threads = max(1, (os.cpu_count() or 1) // replicas)
    options = {"host_store_tokens": 16384, "allowed_media_dirs": [str(workdir)]}
    argv = ["--enable-mosaic", "--mosaic-budget", "64", "--mosaic-config", json.dumps(options), *cpu_server_args()]
    servers = [SGLangServer(model, argv, log_path=workdir / f"r{replicas}-{i}.log",
                            env={"OMP_NUM_THREADS": str(threads)}) for i in range(replicas)]
    try:
        for server in servers:  # all at once: start-up is mostly one-core imports
            server.launch()
        for server in servers:
            server.wait_ready()
        with SGLangRouter([s.url for s in servers], policy="manual", log_path=workdir / f"router{replicas}.log") as router:
            for server in servers:  # unmeasured: each replica's one-time first-request set-up
                VideoConversation(server.url, model, videos[0]).ask("warm up", max_new_tokens=1)
                requests.post(server.url + "/flush_cache", timeout=60)
            results, errors = [None] * len(videos), []

            def converse(i: int) -> None:
                try:
                    chat = VideoConversation(router.url, model, videos[i])
                    results[i] = [chat.ask(f"question {t}: what happens?", max_new_tokens=args.max_new_tokens)
                                  for t in range(args.turns)]
                except Exception as e:  # reported below: a failed setting is not a number
                    errors.append(repr(e))

            start = time.perf_counter()
            workers = [threading.Thread(target=converse, args=(i,)) for i in range(len(videos))]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            wall = time.perf_counter() - start
        if errors:
            raise RuntimeError(f"{replicas} replica(s): {errors[0]}")
    finally:
        for server in servers:
            server.stop()
    follow_ups = [(before, after) for turns in results for before, after in zip(turns, turns[1:])]
    held = sum(after.cached_tokens >= before.prompt_tokens for before, after in follow_ups)
    asked = sum(len(t) for t in results)
    return {"replicas": replicas, "threads_per_replica": threads, "wall_s": wall, "requests": asked,
            "requests_per_s": asked / wall, "affinity_held": held / max(1, len(follow_ups))}


# -- TP consistency step -------------------------------------------------------------------------------

SHAPES = {
    # name: (layers, query heads, kv heads, head dim): the tiny test model and Qwen2.5-VL-7B's language model
    "tiny": (2, 4, 2, 64),
    "qwen2.5-vl-7b": (28, 28, 4, 128),
}


def _gather_worker(rank: int, port: int, cases, out_path: str) -> None:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    rows = []
    for name, what, shape, dim, reps in cases:
        x = torch.randn(shape, dtype=torch.bfloat16)
        out = [torch.empty_like(x) for _ in range(2)]
        dist.all_gather(out, x)  # warm-up
        dist.barrier()
        start = time.perf_counter()
        for _ in range(reps):
            dist.all_gather(out, x)
            torch.cat(out, dim=dim)
        ms = (time.perf_counter() - start) * 1e3 / reps
        rows.append({"model": name, "gather": what, "shape": list(shape), "ms": ms,
                     "bytes": x.numel() * x.element_size() * 2})
    if rank == 0:
        Path(out_path).write_text(json.dumps(rows))
    dist.destroy_process_group()


def tp_consistency(args) -> list[dict]:
    import torch.multiprocessing as mp

    from mosaic_sglang.frontend.server import free_port

    reps = 5 if args.quick else 30
    cases = []
    for name, (layers, hq, hkv, d) in SHAPES.items():
        chunk, frame = (256, 64) if args.quick else (2048, 256)
        cases += [
            (name, "query, re-select decode step (1 token, per selecting layer)", (1, hq // 2, d), 1, reps),
            (name, f"query, prefill chunk ({chunk} tokens, per selecting layer)", (chunk, hq // 2, d), 1, reps),
            (name, f"keys at ingest ({frame} new tokens, all layers, once per forward)", (layers, frame, hkv // 2, d), 2, reps),
        ]
    out = Path(tempfile.mkdtemp(prefix="tp_gather_")) / "rows.json"
    mp.spawn(_gather_worker, args=(free_port(), cases, str(out)), nprocs=2, join=True)
    rows = json.loads(out.read_text())
    for row in rows:
        layers = SHAPES[row["model"]][0]
        row["per_forward_ms"] = row["ms"] * (layers if row["gather"].startswith("query") else 1)
    return rows


def main(argv=None) -> dict:
    from mosaic_sglang.frontend.video import make_synthetic_video
    from mosaic_sglang.testing.tiny_models import build_tiny_model

    args = _args(argv)
    report = {"serving": [], "tp_consistency": tp_consistency(args)}
    if not args.skip_serving:
        model = str(build_tiny_model("qwen2_5_vl"))
        workdir = Path(tempfile.mkdtemp(prefix="scale_out_"))
        videos = [str(make_synthetic_video(workdir / f"v{i}.mp4", num_frames=args.frames, size=112, num_scenes=2, seed=i))
                  for i in range(args.videos)]
        for replicas in args.replicas:
            report["serving"].append(_serve_setting(args, model, videos, replicas, workdir))
        base = report["serving"][0]["requests_per_s"]
        for row in report["serving"]:
            row["throughput_ratio"] = row["requests_per_s"] / base
        print(f"\n{args.videos} conversations x {args.turns} turns, {args.frames}-frame clips, "
              f"{args.max_new_tokens} new tokens, {os.cpu_count()} cores split between the replicas")
        print("| replicas | threads each | wall s | requests/s | ratio to 1 | follow-ups with the video cached |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in report["serving"]:
            print(f"| {r['replicas']} | {r['threads_per_replica']} | {r['wall_s']:.1f} | {r['requests_per_s']:.2f} | "
                  f"{r['throughput_ratio']:.2f}x | {100 * r['affinity_held']:.0f} % |")
    print("\nTP=2 consistency step (gloo all-gather, 2 CPU processes, bf16): per call and per forward")
    print("| model | gather | shape per rank | ms per call | ms per forward |")
    print("| --- | --- | --- | --- | --- |")
    for r in report["tp_consistency"]:
        print(f"| {r['model']} | {r['gather']} | {r['shape']} | {r['ms']:.3f} | {r['per_forward_ms']:.2f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
