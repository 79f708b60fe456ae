"""Per-chunk ingest latency of a live stream: does appending chunk 10 cost what chunk 1 did?

A synthetic video (PyAV, ``--chunks * --chunk-frames`` frames at 1 fps) is played through
`frontend.video_stream.VideoStream` into a streaming session of a real ``sglang.launch_server``
(``--enable-streaming-session``; the embedded tiny Qwen2.5-VL, random weights, CPU) as fast as it ingests
(``realtime=False``: the capacity, not the file's pace), in ``--repeats`` fresh sessions per backend. Each
chunk is one session turn (prefill only). Per chunk: ``ingest s``, its ``/generate`` round trip (the
server decodes the mp4, runs the vision tower, prefills the chunk against the session's KV); ``forward
s``, the scheduler's model forward of that chunk alone (vision tower + prefill; Mosaic's forward log,
``MOSAIC_FORWARD_LOG_DIR``); ``encode s``, the client's mp4 encoding; each the fastest of the sessions
(other processes' load only adds time, and this box is shared). Backends, one server at a time:
``mosaic`` (``--enable-mosaic --mosaic-budget 64``: `MosaicConfig`'s defaults otherwise) and ``dense``
(SGLang's ``torch_native`` attention).
A warm-up session (the whole video and a question, closed) runs first on each server: the first forwards
of each shape are slow on CPU (up to 2 s, measured), and chunk 1 would carry them.

Printed: the table, then per backend ``chunk N / chunk 1`` and the ratio of the medians of the last and
first three chunks, of ingest and of forward, and a closing question (``cached_tokens`` covers every
chunk). Exit 1 if Mosaic's ingest grows more than 1.5× (`GOAL`; dense is the reference). CPU, tiny
model: plumbing and attention growth, not a speed claim.

    .venv/bin/python benchmarks/stream_ingest.py                       # 10 chunks, mosaic and dense (~2-3 min)
    .venv/bin/python benchmarks/stream_ingest.py --backends mosaic --chunks 6
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mosaic_sglang.frontend.server import SGLangServer, cpu_server_args  # noqa: E402
from mosaic_sglang.frontend.video import make_synthetic_video  # noqa: E402
from mosaic_sglang.frontend.video_stream import VideoStream  # noqa: E402
from mosaic_sglang.integration.forward_timer import read_forward_log  # noqa: E402

GOAL = 1.5
"""The issue's bound: per-chunk ingest from chunk 1 to chunk 10 grows at most 1.5×."""


def server_args(backend: str, budget: int) -> list:
    attention = ["--enable-mosaic", "--mosaic-budget", str(budget)] if backend == "mosaic" else ["--attention-backend", "torch_native"]
    return [*attention, "--enable-streaming-session", *cpu_server_args()]


def play(server: SGLangServer, video: Path, args, question: str = "what happened so far?"):
    with VideoStream(server.url, chunk_frames=args.chunk_frames, fps=1.0) as stream:
        reports = list(stream.play_file(video, realtime=False))
        return reports, stream.ask(question, max_new_tokens=8)


def run_backend(model: str, backend: str, video: Path, args, log_dir: Path) -> dict:
    """One server at a time: an idle SGLang CPU scheduler busy-polls a whole core (19.8 s of CPU in 20 s
    idle, measured), so a second server up would slow the first on 2 cores."""
    log, forwards = log_dir / f"{backend}.log", log_dir / f"{backend}-forwards"
    os.environ["MOSAIC_FORWARD_LOG_DIR"] = str(forwards)  # the server's environment is a copy of ours
    try:
        server = SGLangServer(model, server_args(backend, args.budget), log_path=log).start()
    except (RuntimeError, TimeoutError):
        print(f"{backend} server failed to start; its log ends:\n" + log.read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        del os.environ["MOSAIC_FORWARD_LOG_DIR"]
    try:
        play(server, video, args, "warm up")  # every shape once
        played = [play(server, video, args) for _ in range(args.repeats)]
    finally:
        server.stop()
    chunks = len(played[0][0])
    # a chunk's prefill is one extend forward of its placeholder's tokens; questions are a few tokens
    extends = [r["seconds"] for r in read_forward_log(forwards) if r["mode"] == "extend" and r["tokens"] > 64]
    forward = extends[chunks:] if len(extends) == (1 + args.repeats) * chunks else []  # after the warm-up
    return {
        "reports": played[0][0], "answer": played[0][1],
        "ingest": [min(reports[i].seconds for reports, _ in played) for i in range(chunks)],
        "encode": [min(reports[i].encode_seconds for reports, _ in played) for i in range(chunks)],
        "forward": [min(forward[i::chunks]) for i in range(chunks)] if forward else None,
    }


def ratios(seconds: list) -> str:
    last, medians = seconds[-1] / seconds[0], statistics.median(seconds[-3:]) / statistics.median(seconds[:3])
    return f"chunk {len(seconds)} / chunk 1 = {last:.2f}x, median last 3 / first 3 = {medians:.2f}x"


def print_table(runs: dict, backends: list, args) -> None:
    print(f"\nstream ingest: {args.chunks} chunks x {args.chunk_frames} frames ({args.size} px, 1 fps: "
          f"{args.chunk_frames} s of video per chunk), tiny Qwen2.5-VL, CPU, best of {args.repeats} sessions\n")
    columns = [f"{b} {what} s" for b in backends for what in ("ingest", "forward")]
    head = ["chunk", "video s", "context tokens", *columns] + (["mosaic attended"] if "mosaic" in runs else []) + ["encode s"]
    print("| " + " | ".join(head) + " |\n|" + " ---: |" * len(head))
    first = runs[backends[0]]
    for i, report in enumerate(first["reports"]):
        cells = [str(i + 1), f"{report.start_s:.0f}-{report.end_s:.0f}", str(report.prompt_tokens)]
        for b in backends:
            forward = runs[b]["forward"]
            cells += [f"{runs[b]['ingest'][i]:.3f}", f"{forward[i]:.3f}" if forward else "-"]
        if "mosaic" in runs:
            cells.append(str(runs["mosaic"]["reports"][i].mosaic.get("attended_tokens", "")))
        print("| " + " | ".join(cells + [f"{first['encode'][i]:.3f}"]) + " |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--chunks", type=int, default=10)
    p.add_argument("--chunk-frames", type=int, default=8)
    p.add_argument("--size", type=int, default=112, help="frame side in pixels")
    p.add_argument("--budget", type=int, default=64, help="--mosaic-budget")
    p.add_argument("--repeats", type=int, default=3, help="measured sessions per backend (best of)")
    p.add_argument("--backends", default="mosaic,dense")
    p.add_argument("--model-path", default=None, help="default: the embedded tiny Qwen2.5-VL")
    args = p.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    if not backends or not set(backends) <= {"mosaic", "dense"} or args.chunks < 3 or args.repeats < 1:
        p.error(f"expected --backends of mosaic/dense, --chunks >= 3, --repeats >= 1; got {args.backends!r}, "
                f"{args.chunks}, {args.repeats}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still stops its server
    model = args.model_path
    if model is None:
        from mosaic_sglang.testing.tiny_models import build_tiny_model

        model = str(build_tiny_model("qwen2_5_vl"))
    total = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        video = make_synthetic_video(Path(tmp) / "stream.mp4", num_frames=args.chunks * args.chunk_frames, fps=1,
                                     size=args.size, num_scenes=args.chunks, seed=0)
        runs = {b: run_backend(model, b, video, args, Path(tmp)) for b in backends}
    print_table(runs, backends, args)
    print()
    verdicts, video_s = [], args.chunks * args.chunk_frames
    for b in backends:
        ingest, forward, answer = runs[b]["ingest"], runs[b]["forward"], runs[b]["answer"]
        ok = ingest[-1] / ingest[0] <= GOAL
        if b == "mosaic":
            verdicts.append(ok)
        print(f"{b} ingest: {ratios(ingest)} ({'within' if ok else 'over'} {GOAL}x); "
              f"{video_s} s of video in {sum(ingest):.1f} s ({video_s / sum(ingest):.0f}x real time)")
        print(f"{b} forward: {ratios(forward) if forward else 'no forward log'}; question: cached "
              f"{answer.cached_tokens} of {answer.prompt_tokens} prompt tokens, {answer.seconds:.2f} s")
    print(f"\ntotal {time.perf_counter() - total:.0f} s")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
