"""A multi-turn chat about a video in one ``sgl.function`` program (`programs.video_chat`).

Every turn sees the video and the earlier turns; the table shows how much of each turn's prompt the
engine's prefix cache already held (from the second turn on: the video and the conversation so far)
and what Mosaic attended. Runs on the CPU with the embedded tiny model by default (random weights);
``--model-path`` / ``--url`` for a real model or server, ``--video`` for a file.

    python examples/video_chat.py
    python examples/video_chat.py --video clip.mp4 --url http://127.0.0.1:30000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from mosaic_sglang.frontend.programs import open_backend, video_chat
from mosaic_sglang.frontend.video import make_synthetic_video

QUESTIONS = ["What happens in this video?", "What colour is the moving square?", "Does the scene change?"]


def main(argv=None, backend=None) -> int:
    """``backend``: run on this one (not shut down) instead of opening one from the flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", default=None, help="model folder or hub id (default: embedded tiny Qwen2.5-VL)")
    parser.add_argument("--url", default=None, help="a running Mosaic server (instead of an in-process engine)")
    parser.add_argument("--device", default="cpu", help="engine device (cpu, cuda)")
    parser.add_argument("--video", default=None, help="video file (default: a synthetic 6 s mp4 with two scenes)")
    parser.add_argument("--questions", nargs="+", default=QUESTIONS)
    parser.add_argument("--max-frames", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=12)
    args = parser.parse_args(argv)

    video = Path(args.video) if args.video else make_synthetic_video(
        Path(tempfile.mkdtemp(prefix="mosaic-chat-")) / "clip.mp4", num_frames=24, fps=4, size=64, num_scenes=2)
    own = backend is None
    backend = backend or open_backend(url=args.url, model_path=args.model_path, device=args.device)
    try:
        turns = video_chat(video, args.questions, backend=backend, max_frames=args.max_frames,
                           max_tokens=args.max_tokens)
    finally:
        if own:
            backend.shutdown()
    print(f"video: {video}")
    print(f"{'turn':>4} {'prompt':>7} {'cached':>7} {'attended':>9} {'context':>8}  question -> answer")
    for i, turn in enumerate(turns, 1):
        stats = turn.mosaic or {}
        print(f"{i:>4} {turn.prompt_tokens:>7} {str(turn.cached_tokens):>7} {str(stats.get('attended_tokens')):>9} "
              f"{str(stats.get('context_tokens')):>8}  {turn.question} -> {turn.text!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
