"""Many independent questions about one video with ``run_batch`` (`programs.batch_questions`).

The clip is sampled and encoded once (the frontend's clip cache) and the engine batches the programs'
requests; answers come back one per question, in order, each with its Mosaic stats. Runs on the CPU
with the embedded tiny model by default (random weights); ``--model-path`` / ``--url`` for a real
model or server, ``--video`` for a file.

    python examples/batch_questions.py --questions "Who is there?" "What colour is the background?"
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from mosaic_sglang.frontend.programs import batch_questions, open_backend
from mosaic_sglang.frontend.video import make_synthetic_video

QUESTIONS = ["What is in the video?", "What colour is the background?", "How many scenes are there?",
             "Where does the square move?"]


def main(argv=None, backend=None) -> int:
    """``backend``: run on this one (not shut down) instead of opening one from the flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", default=None, help="model folder or hub id (default: embedded tiny Qwen2.5-VL)")
    parser.add_argument("--url", default=None, help="a running Mosaic server (instead of an in-process engine)")
    parser.add_argument("--device", default="cpu", help="engine device (cpu, cuda)")
    parser.add_argument("--video", default=None, help="video file (default: a synthetic 6 s mp4 with two scenes)")
    parser.add_argument("--questions", nargs="+", default=QUESTIONS)
    parser.add_argument("--max-frames", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--num-threads", type=int, default=4, help="programs run at once")
    args = parser.parse_args(argv)

    video = Path(args.video) if args.video else make_synthetic_video(
        Path(tempfile.mkdtemp(prefix="mosaic-batch-")) / "clip.mp4", num_frames=24, fps=4, size=64, num_scenes=2)
    own = backend is None
    backend = backend or open_backend(url=args.url, model_path=args.model_path, device=args.device)
    try:
        started = time.perf_counter()
        answers = batch_questions(video, args.questions, backend=backend, max_frames=args.max_frames,
                                  max_tokens=args.max_tokens, num_threads=args.num_threads)
        elapsed = time.perf_counter() - started
    finally:
        if own:
            backend.shutdown()
    print(f"video: {video}; {len(answers)} questions in {elapsed:.1f} s ({args.num_threads} at a time)")
    for answer in answers:
        stats = answer.mosaic or {}
        print(f"- {answer.question} -> {answer.text!r} (attended {stats.get('attended_tokens')} of "
              f"{stats.get('context_tokens')}, cached {answer.cached_tokens})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
