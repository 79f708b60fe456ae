"""A video serving load test: dense vs Mosaic in one run, on loopback, bounded in requests and time.

For each setting (SGLang's dense backend, then Mosaic at each ``--budgets`` value: `MosaicConfig`'s
defaults but for ``--mosaic-config``) a server is started
(or ``--url NAME=URL`` used) and the same seeded load runs against it (`serving_load.run_load`):
``--conversations`` conversations about different videos (a first question with the video, then
``--follow-ups`` questions over the cached prefix) and ``--streams`` live streams (streaming sessions fed
``--stream-chunks`` chunks, a question every ``--ask-every`` chunks), arriving as a Poisson process at
``--rate`` per second, at most ``--max-concurrency`` at once, none started after ``--duration`` seconds.

Per setting: TTFT, inter-token latency p50/p99, output throughput (SGLang's own ``calculate_metrics``
over the chat turns), the streams' chunk-ingest and answer latencies, and the peak KV pool slots in use
(``/v1/loads``). Every setting's result is appended to ``--output-file`` as one JSON line in the shape
SGLang's ``bench_serving`` writes (with ``setting``, ``peak_device_kv_tokens`` and ``streams`` added), and
the table is printed. Each server first answers one unmeasured warm-up request (a synthetic clip the load
does not use), as ``bench_serving`` does.

    .venv/bin/python benchmarks/video_serving.py --quick          # CPU smoke run, tiny model (mechanics only)
    python benchmarks/video_serving.py --model-path Qwen/Qwen2.5-VL-7B-Instruct --device cuda \\
        --videos clips/*.mp4 --conversations 64 --streams 8 --rate 2 --max-concurrency 16 --duration 600 \\
        --budgets 2048 --output-file results/video_serving.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from mosaic_sglang.frontend.evaluation.serving_load import LoadSpec, bench_result, run_load
from mosaic_sglang.frontend.evaluation.server_settings import (build_settings, parse_running, resolve_model, serve,
                                                                warm_up_clip)


def synthetic_videos(folder: Path, count: int, seconds: int, fps: int, size: int) -> list:
    from mosaic_sglang.frontend.video import make_synthetic_video

    return [str(make_synthetic_video(folder / f"load_{i}.mp4", num_frames=seconds * fps, fps=fps, size=size,
                                     num_scenes=3, seed=i)) for i in range(count)]


def format_table(results) -> str:
    head = ("| setting | done | TTFT ms (mean / p50 / p99) | ITL ms (p50 / p99) | out tok/s | chunk ingest ms (p50) "
            "| stream ask ms (p50) | peak KV slots | attended | errors |")
    lines = [head, "|" + "---|" * 10]
    for r in results:
        s = r["streams"]
        chunk = f"{s['chunks']['median_ms']:.0f}" if s["chunks"]["count"] else "—"
        ask = f"{s['asks']['median_ms']:.0f}" if s["asks"]["count"] else "—"
        att = "—" if r["attended_fraction"] is None else f"{100 * r['attended_fraction']:.1f} %"
        lines.append(f"| {r['setting']} | {r['completed']} | {r['mean_ttft_ms']:.0f} / {r['median_ttft_ms']:.0f} / "
                     f"{r['p99_ttft_ms']:.0f} | {r['median_itl_ms']:.1f} / {r['p99_itl_ms']:.1f} | "
                     f"{r['output_throughput']:.2f} | {chunk} | {ask} | {r['peak_device_kv_tokens']} | {att} | "
                     f"{len(r['turn_errors']) + len(s['errors'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", default=None, help="model (default: the embedded tiny Qwen2.5-VL)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--videos", nargs="*", default=None, help="video files (default: synthetic clips)")
    parser.add_argument("--video-seconds", type=int, default=16, help="length of each synthetic clip")
    parser.add_argument("--budgets", type=int, nargs="*", default=[2048])
    parser.add_argument("--mosaic-config", default='{"recent_window": 64, "sink_tokens": 4}')
    parser.add_argument("--server-arg", action="append", default=[], help="extra launch flag (repeatable)")
    parser.add_argument("--url", action="append", default=[], help="NAME=URL: a running server for setting NAME")
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--follow-ups", type=int, default=1)
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--stream-chunks", type=int, default=4)
    parser.add_argument("--ask-every", type=int, default=2)
    parser.add_argument("--chunk-frames", type=int, default=8)
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--max-side", type=int, default=224)
    parser.add_argument("--max-frames", type=int, default=32)
    parser.add_argument("--rate", type=float, default=1.0, help="arrivals per second (Poisson)")
    parser.add_argument("--max-concurrency", type=int, default=4)
    parser.add_argument("--duration", type=float, default=60.0, help="no new arrival after this many seconds")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-file", default=None, help="JSONL to append results to (default: a temp file)")
    parser.add_argument("--quick", action="store_true", help="CPU smoke size: 3 conversations, 1 stream, 20 s bound")
    args = parser.parse_args(argv)
    if args.quick:
        args.conversations, args.follow_ups, args.streams, args.stream_chunks, args.video_seconds = 4, 2, 1, 4, 8
        args.max_side, args.max_frames, args.max_tokens, args.duration, args.rate = 112, 8, 6, 20.0, 2.0
        args.max_concurrency, args.chunk_frames = 3, 4
        args.budgets = args.budgets if args.budgets != [2048] else [48]
        args.mosaic_config = '{"recent_window": 16, "sink_tokens": 4}'

    workdir = Path(tempfile.mkdtemp(prefix="video_serving_"))
    model, tiny = resolve_model(args.model_path)
    videos = args.videos or synthetic_videos(workdir, max(1, args.conversations + args.streams), args.video_seconds,
                                             2, 112 if args.quick else 224)
    spec = LoadSpec(videos=tuple(videos), conversations=args.conversations, follow_ups=args.follow_ups,
                    streams=args.streams, stream_chunks=args.stream_chunks, ask_every=args.ask_every,
                    chunk_frames=args.chunk_frames, fps=args.fps, max_side=args.max_side, max_frames=args.max_frames,
                    rate=args.rate, max_concurrency=args.max_concurrency, duration_s=args.duration,
                    max_tokens=args.max_tokens, seed=args.seed)
    settings = parse_running(args.url)
    given = {s.name for s in settings}
    settings += [s for s in build_settings(args.budgets, device=args.device, mosaic_config=json.loads(args.mosaic_config),
                                           extra_args=args.server_arg, streaming=args.streams > 0)
                 if s.name not in given]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    output = Path(args.output_file) if args.output_file else workdir / "video_serving.jsonl"
    output.parent.mkdir(parents=True, exist_ok=True)
    print(f"model {model}" + (" — embedded tiny model, random weights, CPU: MECHANICS ONLY, not a speed claim"
                              if tiny else "") + f"; {len(videos)} videos; load {spec}")
    from mosaic_sglang.frontend.clip_cache import ClipCache

    from mosaic_sglang.frontend.video_clip import ClipOptions

    clips, results = ClipCache(), []
    warm_url = warm_up_clip(workdir, clips, ClipOptions(fps=args.fps, max_frames=args.max_frames, max_side=args.max_side))
    for setting in settings:
        with serve(setting, model, log_dir=workdir, warm_up_video=warm_url) as url:
            run = run_load(url, spec, clips=clips)
        result = bench_result(run, spec, setting=setting.name, tokenizer=tokenizer)
        result["server_args"] = list(setting.args)
        results.append(result)
        with open(output, "a") as f:
            f.write(json.dumps(result) + "\n")
        print(f"{setting.name}: {result['completed']} turns in {result['duration']:.1f} s")
    print(format_table(results))
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
