"""A video agent that watches for scene changes (`programs.watch_for_events`) and reports them.

The model picks its tools with ``sgl.select`` (``scene_cuts``: a colour-change detector on decoded
frames; ``ask_about``: a focused question on a few seconds of the video; ``finish``), one thought per
step, until it finishes or hits the step limit. The event *times* in the report are the detector's
measurements; the *descriptions* are the model's words (noise with the default tiny random model).
Runs on the CPU with the embedded tiny model on a synthetic 3-scene clip by default; ``--model-path``
/ ``--url`` for a real model or server, ``--video`` for a file.

    python examples/video_agent.py
    python examples/video_agent.py --video match.mp4 --goal "tell me when the camera cuts" --url http://127.0.0.1:30000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from mosaic_sglang.frontend.programs import AgentReport, open_backend, watch_for_events
from mosaic_sglang.frontend.scene_cuts import DEFAULT_THRESHOLD
from mosaic_sglang.frontend.video import make_synthetic_video


def format_report(report: AgentReport) -> str:
    lines = [f"goal: {report.goal}", f"steps ({report.stopped_by}):"]
    for step in report.steps:
        lines.append(f"  {step.index}. [{step.chosen_by}] {step.tool:<10} thought={step.thought!r} "
                     f"-> {step.observation[:90]!r}")
    detection = report.detection
    lines.append(f"events ({len(report.events)}; detector: {detection.num_frames} frames, threshold "
                 f"{detection.threshold}, closest non-cut {detection.max_in_shot_score:.3f}):")
    for event in report.events:
        window = f"{event.window[0]:.1f}-{event.window[1]:.1f} s" if event.window else "not asked"
        lines.append(f"  {event.time_s:6.2f} s  score {event.score:.2f}  [{window}] {event.description!r}")
    return "\n".join(lines)


def main(argv=None, backend=None) -> int:
    """``backend``: run on this one (not shut down) instead of opening one from the flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", default=None, help="model folder or hub id (default: embedded tiny Qwen2.5-VL)")
    parser.add_argument("--url", default=None, help="a running Mosaic server (instead of an in-process engine)")
    parser.add_argument("--device", default="cpu", help="engine device (cpu, cuda)")
    parser.add_argument("--video", default=None, help="video file (default: a synthetic 6 s mp4 with three scenes)")
    parser.add_argument("--goal", default="tell me when the scene changes")
    parser.add_argument("--window-s", type=float, default=2.0, help="seconds each ask_about looks at")
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="detector threshold (0..1)")
    parser.add_argument("--max-tokens", type=int, default=12)
    args = parser.parse_args(argv)

    video = Path(args.video) if args.video else make_synthetic_video(
        Path(tempfile.mkdtemp(prefix="mosaic-agent-")) / "clip.mp4", num_frames=24, fps=4, size=64, num_scenes=3)
    own = backend is None
    backend = backend or open_backend(url=args.url, model_path=args.model_path, device=args.device)
    try:
        report = watch_for_events(video, backend=backend, goal=args.goal, window_s=args.window_s,
                                  max_steps=args.max_steps, threshold=args.threshold, max_tokens=args.max_tokens)
    finally:
        if own:
            backend.shutdown()
    print(f"video: {video}")
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
