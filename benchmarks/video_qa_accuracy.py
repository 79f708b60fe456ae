"""Video-QA accuracy, dense vs Mosaic at several budgets, on the user's own model and questions.

For each setting (SGLang's dense backend, then Mosaic at each ``--budgets`` value: `MosaicConfig`'s
defaults but for ``--mosaic-config``) a server is started
on loopback (or a running one is used: ``--url NAME=URL``), every question is asked (`qa_runner`: a
streamed OpenAI chat request with the video, or a streaming session for questions with a time), and the
answers are parsed to letters the way Video-MME's official script does (`answers.extract_letter`). The
report (`qa_report`) gives per setting: accuracy with a 95 % Wilson interval, the paired difference to
dense (bootstrap interval, McNemar's exact p), the attended fraction, TTFT and device KV per request.
Each server first answers one unmeasured warm-up request on a synthetic clip no question uses.

Questions: ``--questions FILE --format F`` (``jsonl``: the project's format, see
`mosaic_sglang.frontend.evaluation.qa_items`; or a benchmark's own annotation file: ``videomme``, ``mlvu``,
``longvideobench``, ``egoschema``, ``ovo_bench``, ``streaming_bench``, with ``--video-root`` the folder
holding its videos), or, by default, a synthetic needle-in-a-video set generated here with PyAV
(``--needle-videos``, ``--needle-duration``; `mosaic_sglang.frontend.evaluation.needle_video`).

    # CPU smoke run on the embedded tiny model (random weights: mechanics only, no accuracy claim)
    .venv/bin/python benchmarks/video_qa_accuracy.py --quick
    # a real checkpoint on a GPU, Video-MME's annotations, 448 px at 1 fps, 64 frames
    python benchmarks/video_qa_accuracy.py --model-path Qwen/Qwen2.5-VL-7B-Instruct --device cuda \\
        --questions videomme/test-00000-of-00001.parquet --format videomme --video-root videomme/data \\
        --budgets 1024 2048 4096 --out results/videomme
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from mosaic_sglang.frontend.evaluation.qa_report import format_table, summarize
from mosaic_sglang.frontend.evaluation.qa_runner import SamplingOptions, run_setting
from mosaic_sglang.frontend.evaluation.server_settings import (build_settings, parse_running, resolve_model, serve,
                                                                warm_up_clip)


def load_items(args, workdir: Path):
    if args.questions:
        from mosaic_sglang.frontend.evaluation.formats import load_questions

        items = load_questions(args.format, args.questions, video_root=args.video_root)
    else:
        from mosaic_sglang.frontend.evaluation.needle_video import make_needle_set

        items = make_needle_set(workdir / "needle", num_videos=args.needle_videos, duration_s=args.needle_duration,
                                fps=args.needle_fps, seed=args.seed)
        if args.streaming_needle:
            items = [it for it in items if it.timestamp is not None]
        else:
            items = [dataclasses.replace(it, timestamp=None) for it in items]
    return items[: args.limit] if args.limit else items


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", default=None, help="annotation file (default: a synthetic needle set)")
    parser.add_argument("--format", default="jsonl", help="format of --questions (jsonl, videomme, mlvu, ...)")
    parser.add_argument("--video-root", default=None, help="folder of the benchmark's videos")
    parser.add_argument("--limit", type=int, default=None, help="ask only the first N questions")
    parser.add_argument("--model-path", default=None, help="model (default: the embedded tiny Qwen2.5-VL)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--budgets", type=int, nargs="*", default=[2048], help="Mosaic budgets to compare")
    parser.add_argument("--mosaic-config", default="{}",
                        help="MosaicConfig JSON for every Mosaic setting (other keys: the defaults)")
    parser.add_argument("--server-arg", action="append", default=[], help="extra launch flag (repeatable)")
    parser.add_argument("--url", action="append", default=[],
                        help="NAME=URL: use a running server for setting NAME (e.g. dense=http://127.0.0.1:30000)")
    parser.add_argument("--baseline", default="dense", help="the setting the others are compared to")
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--max-frames", type=int, default=64)
    parser.add_argument("--max-side", type=int, default=448)
    parser.add_argument("--send", choices=["clip", "url"], default="clip",
                        help="clip: sample on the client and send a data: URL; url: send the path/URL as given")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--needle-videos", type=int, default=4)
    parser.add_argument("--needle-duration", type=float, default=60.0)
    parser.add_argument("--needle-fps", type=float, default=2.0)
    parser.add_argument("--streaming-needle", action="store_true",
                        help="ask the needle questions at their times through streaming sessions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder for report.json / report.md (default: a temp folder)")
    parser.add_argument("--quick", action="store_true", help="CI smoke size: 2 short needle videos, tiny frames")
    args = parser.parse_args(argv)
    if args.quick:
        args.needle_videos, args.needle_duration = min(args.needle_videos, 2), 8.0
        args.max_frames, args.max_side = 8, 112
        args.budgets = args.budgets if args.budgets != [2048] else [48]
        args.max_tokens = min(args.max_tokens, 4)

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="video_qa_"))
    out.mkdir(parents=True, exist_ok=True)
    model, tiny = resolve_model(args.model_path)
    items = load_items(args, out)
    streaming = any(it.timestamp is not None for it in items)
    settings = parse_running(args.url)
    given = {s.name for s in settings}
    settings += [s for s in build_settings(args.budgets, device=args.device, mosaic_config=json.loads(args.mosaic_config),
                                           extra_args=args.server_arg, streaming=streaming) if s.name not in given]
    if args.baseline not in {s.name for s in settings}:
        parser.error(f"--baseline: expected one of {[s.name for s in settings]}, got {args.baseline!r}")
    options = SamplingOptions(fps=args.fps, max_frames=args.max_frames, max_side=args.max_side, send=args.send,
                              max_tokens=args.max_tokens)
    print(f"{len(items)} questions ({'streaming' if streaming else 'whole video'}), model {model}"
          + (" — embedded tiny model with random weights: MECHANICS ONLY, the accuracies mean nothing" if tiny else ""))
    from mosaic_sglang.frontend.clip_cache import ClipCache

    clips, results, timing = ClipCache(), {}, {}
    from mosaic_sglang.frontend.video_clip import ClipOptions

    warm_url = warm_up_clip(out, clips, ClipOptions(fps=options.fps, max_frames=options.max_frames,
                                                    max_side=options.max_side))
    for setting in settings:
        started = time.perf_counter()
        with serve(setting, model, log_dir=out, warm_up_video=warm_url) as url:
            bar = tqdm(total=len(items), desc=setting.name, file=sys.stdout, disable=None)
            results[setting.name] = run_setting(url, items, setting.name, options, clips=clips,
                                                progress=lambda r: bar.update(1))
            bar.close()
        timing[setting.name] = time.perf_counter() - started
    rows = summarize(results, baseline=args.baseline)
    table = format_table(rows)
    report = {"model": model, "tiny_model": tiny, "device": args.device, "questions": len(items),
              "streaming": streaming, "options": options.__dict__, "settings": {s.name: list(s.args) for s in settings},
              "summary": rows, "seconds": timing,
              "results": {name: [r.to_json() for r in rs] for name, rs in results.items()}}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(table + "\n")
    print(table)
    print(f"report: {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
