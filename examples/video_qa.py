"""One question about a video, as an ``sgl.function`` program (`programs.video_qa`), with Mosaic's stats.

By default it runs on this machine's CPU: the embedded tiny Qwen2.5-VL (random weights: the answer is
gibberish, the plumbing is real) in an in-process ``sgl.Engine(enable_mosaic=True)``, on a synthetic
mp4. ``--model-path`` picks a real model, ``--url`` a running ``sglang.launch_server --enable-mosaic``.

    python examples/video_qa.py
    python examples/video_qa.py --video clip.mp4 --model-path Qwen/Qwen2.5-VL-7B-Instruct --device cuda
    python examples/video_qa.py --video clip.mp4 --url http://127.0.0.1:30000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from mosaic_sglang.frontend.programs import open_backend, video_qa
from mosaic_sglang.frontend.video import make_synthetic_video


def main(argv=None, backend=None) -> int:
    """``backend``: run on this one (not shut down) instead of opening one from the flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", default=None, help="model folder or hub id (default: embedded tiny Qwen2.5-VL)")
    parser.add_argument("--url", default=None, help="a running Mosaic server (instead of an in-process engine)")
    parser.add_argument("--device", default="cpu", help="engine device (cpu, cuda)")
    parser.add_argument("--video", default=None, help="video file (default: a synthetic 6 s mp4 with two scenes)")
    parser.add_argument("--question", default="What happens in this video?")
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--max-frames", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args(argv)

    video = Path(args.video) if args.video else make_synthetic_video(
        Path(tempfile.mkdtemp(prefix="mosaic-qa-")) / "clip.mp4", num_frames=24, fps=4, size=64, num_scenes=2)
    own = backend is None
    backend = backend or open_backend(url=args.url, model_path=args.model_path, device=args.device)
    try:
        answer = video_qa(video, args.question, backend=backend, fps=args.fps, max_frames=args.max_frames,
                          max_tokens=args.max_tokens)
    finally:
        if own:
            backend.shutdown()
    stats = answer.mosaic or {}
    print(f"video: {video}")
    print(f"Q: {answer.question}\nA: {answer.text!r}")
    print(f"prompt {answer.prompt_tokens} tokens (cached {answer.cached_tokens}), visual {stats.get('visual_tokens')}, "
          f"attended {stats.get('attended_tokens')} of {stats.get('context_tokens')} "
          f"in {stats.get('clusters')} clusters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
