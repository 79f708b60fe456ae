"""The main job: a live video stream into an SGLang server running Mosaic, with questions between chunks.

Starts ``python -m sglang.launch_server --enable-mosaic --enable-streaming-session`` on the embedded tiny
Qwen2.5-VL (random weights: the answers are noise, the serving path is real), writes a synthetic mp4
with PyAV (scenes that change), and plays it into one streaming session in chunks at ``--speed`` times
real time (`frontend.video_stream.VideoStream`). Per chunk it prints the ingest time and the cache hit;
at the chosen chunks it asks a question, which sees every frame so far, and prints the answer with the
turn's cached / context / attended tokens, clusters and where the KV lives (device rows, host rows,
device cluster cache). A streaming session owns its KV outside the radix tree, so that KV stays on the
device; the host tier serves radix-cached conversations (see ``examples/video_qa_demo.py``).

    python examples/stream_demo.py                          # CPU, tiny model
    python examples/stream_demo.py --model-path Qwen/Qwen2.5-VL-7B-Instruct --device cuda   # GPU
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from mosaic_sglang.frontend.server import SGLangServer, cpu_server_args
from mosaic_sglang.frontend.video import make_synthetic_video, probe_video
from mosaic_sglang.frontend.video_stream import VideoStream

QUESTIONS = {  # asked right after this many chunks
    3: "What happens in the video so far?",
    5: "Did the scene change? When?",
    6: "What was on screen at the very start?",
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", default=None, help="model folder or hub id (default: embedded tiny Qwen2.5-VL)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--video", default=None, help="video file (default: a synthetic 48 s mp4 at 1 fps)")
    parser.add_argument("--chunk-frames", type=int, default=8, help="frames per chunk appended to the session")
    parser.add_argument("--speed", type=float, default=8.0, help="play the file this many times faster than real time")
    parser.add_argument("--mosaic-budget", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=12)
    parser.add_argument("--log", default=None, help="server log file")
    args = parser.parse_args(argv)

    if args.model_path is None:
        from mosaic_sglang.testing.tiny_models import build_tiny_model

        args.model_path = str(build_tiny_model("qwen2_5_vl"))
    workdir = Path(tempfile.mkdtemp(prefix="mosaic-stream-demo-"))
    video = Path(args.video) if args.video else make_synthetic_video(
        workdir / "stream.mp4", num_frames=48, fps=1, size=112, num_scenes=3)
    info = probe_video(video)
    print(f"video: {video} ({info.num_frames} frames, {info.width}x{info.height}, {info.duration_s:.0f} s), "
          f"played at {args.speed:g}x in chunks of {args.chunk_frames} frames")
    server_args = ["--enable-mosaic", "--mosaic-budget", str(args.mosaic_budget), "--enable-streaming-session",
                   "--mosaic-config", json.dumps({"recent_window": 32, "sink_tokens": 4})]
    server_args += cpu_server_args() if args.device == "cpu" else []
    started = time.time()
    with SGLangServer(args.model_path, server_args, log_path=args.log or workdir / "server.log") as server:
        print(f"server: {server.url} up in {time.time() - started:.0f} s (mosaic budget {args.mosaic_budget})\n")
        answers = []
        with VideoStream(server.url, chunk_frames=args.chunk_frames, fps=1.0) as stream:
            for chunk in stream.play_file(video, realtime=True, speed=args.speed):
                m = chunk.mosaic
                print(f"chunk {chunk.index + 1:>2}: video {chunk.start_s:>4.0f}-{chunk.end_s:>3.0f} s, "
                      f"ingest {chunk.seconds * 1e3:6.0f} ms, cached {chunk.cached_tokens:>5} of "
                      f"{chunk.prompt_tokens:>5} tokens, clusters {m.get('clusters', '-')}")
                question = QUESTIONS.get(chunk.index + 1)
                if question is None:
                    continue
                answer = stream.ask(question, max_new_tokens=args.max_new_tokens)
                answers.append(answer)
                print(f"\n  Q (after {answer.seen_until_s:.0f} s of video): {question}\n  A: {answer.text!r}")
                print("  " + _stats(answer) + "\n")
    print("per-question stats (tokens; attended = per layer, last forward; device / host / cluster_cache = "
          "where the request's KV lived):")
    for a in answers:
        print(f"  after {a.seen_until_s:>3.0f} s: {_stats(a)}")
    print("server shut down cleanly")
    return 0


def _stats(answer) -> str:
    m = answer.mosaic
    return (f"cached {answer.cached_tokens} / context {m.get('context_tokens', '-')} / attended "
            f"{m.get('attended_tokens', '-')} (visual {m.get('visual_tokens', '-')}, clusters {m.get('clusters', '-')}); "
            f"KV: device {m.get('device_tokens', '-')}, host {m.get('host_tokens', '-')}, cluster cache "
            f"{m.get('cluster_cache_tokens', '-')}; {answer.seconds * 1e3:.0f} ms")


if __name__ == "__main__":
    sys.exit(main())
