"""Streaming multi-turn video Q&A through a real SGLang HTTP server running Mosaic.

Starts ``python -m sglang.launch_server --enable-mosaic`` on the embedded tiny Qwen2.5-VL (random
weights: the answers are gibberish, the plumbing is real), writes a synthetic mp4 with PyAV, asks
several questions about it in one conversation, prints each answer with the turn's cached, context and
attended tokens, and shuts the server down.

    python examples/video_qa_demo.py                       # CPU, tiny model
    python examples/video_qa_demo.py --model-path Qwen/Qwen2.5-VL-7B-Instruct --device cuda   # GPU
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
from mosaic_sglang.frontend.video_chat import VideoConversation

QUESTIONS = [
    "What happens in this video?",
    "What color is the moving square at the start?",
    "Does the scene change? When?",
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", default=None, help="model folder or hub id (default: embedded tiny Qwen2.5-VL)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--video", default=None, help="video file (default: a synthetic mp4)")
    parser.add_argument("--mosaic-budget", type=int, default=256)
    parser.add_argument(
        "--mosaic-config",
        default='{"recent_window": 32, "sink_tokens": 4, "host_store_tokens": 65536}',
        help="Mosaic options as JSON; host_store_tokens > 0 offloads sealed clusters to host memory",
    )
    parser.add_argument("--max-new-tokens", type=int, default=12)
    parser.add_argument("--questions", nargs="*", default=QUESTIONS)
    parser.add_argument("--log", default=None, help="server log file")
    parser.add_argument("--chunked-prefill-size", type=int, default=None,
                        help="prefill the video in chunks of this many tokens (as a stream arrives)")
    args = parser.parse_args(argv)

    if args.model_path is None:
        from mosaic_sglang.testing.tiny_models import build_tiny_model

        args.model_path = str(build_tiny_model("qwen2_5_vl"))
    workdir = Path(tempfile.mkdtemp(prefix="mosaic-demo-"))
    video = Path(args.video) if args.video else make_synthetic_video(workdir / "clip.mp4", num_frames=32, size=112, num_scenes=2)
    info = probe_video(video)
    print(f"video file: {video} ({info.num_frames} frames, {info.width}x{info.height}, {info.duration_s:.1f} s)")

    options = json.loads(args.mosaic_config)
    # the server opens no local path unless its operator allows the folder: allow the clip's own
    options.setdefault("allowed_media_dirs", [str(video.resolve().parent)])
    server_args = ["--enable-mosaic", "--mosaic-budget", str(args.mosaic_budget), "--mosaic-config", json.dumps(options)]
    server_args += cpu_server_args() if args.device == "cpu" else []
    if args.chunked_prefill_size:
        server_args += ["--chunked-prefill-size", str(args.chunked_prefill_size)]
    started = time.time()
    with SGLangServer(args.model_path, server_args, log_path=args.log or workdir / "server.log") as server:
        print(f"server: {server.url} up in {time.time() - started:.0f} s (mosaic budget {args.mosaic_budget})")
        chat = VideoConversation(server.url, args.model_path, video)
        header = (
            f"{'turn':>4} {'prompt':>7} {'cached':>7} {'context':>8} {'attended':>9} {'visual':>7} {'clusters':>8}"
            f" {'on_device':>9} {'on_host':>8} {'cluster_cache':>13}"
        )
        rows = []
        for i, question in enumerate(args.questions, 1):
            turn = chat.ask(question, max_new_tokens=args.max_new_tokens)
            m = turn.mosaic
            if i == 1:
                groups, per_group = m.get("frames", 0), _temporal_patch_size(args.model_path)
                print(f"frames sent to the model: {groups * per_group} (SGLang's sampling of the file; "
                      f"{groups} temporal groups of {per_group}, {m.get('visual_tokens', 0)} video tokens)")
            print(f"\nQ{i}: {question}\nA{i}: {turn.answer!r}")
            rows.append(
                f"{i:>4} {turn.prompt_tokens:>7} {turn.cached_tokens:>7} {m.get('context_tokens', '-'):>8} "
                f"{m.get('attended_tokens', '-'):>9} {m.get('visual_tokens', '-'):>7} {m.get('clusters', '-'):>8}"
                f" {m.get('device_tokens', '-'):>9} {m.get('host_tokens', '-'):>8} {m.get('cluster_cache_tokens', '-'):>13}"
            )
        print("\nper-turn stats (tokens; attended = per layer, max over layers, last forward;"
              " on_device / on_host = the request's KV rows by tier when its last forward started):")
        print(header)
        print("\n".join(rows))
        print("\nmosaic stats of the last turn:", json.dumps(chat.turns[-1].mosaic, sort_keys=True))
    print("server shut down cleanly")
    return 0


def _temporal_patch_size(model_path: str) -> int:
    """Frames per temporal group of the model's vision tower (Qwen2.5-VL / Qwen3-VL: 2)."""
    from transformers import AutoConfig

    vision = getattr(AutoConfig.from_pretrained(model_path), "vision_config", None)
    return int(getattr(vision, "temporal_patch_size", 1) or 1)


if __name__ == "__main__":
    sys.exit(main())
