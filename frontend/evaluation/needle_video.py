"""A synthetic needle-in-a-video set, written with PyAV: long clips with planted events at known times.

Each video is a dark, slowly drifting background with a small moving square, split in four equal
quarters. Three quarters each hold one planted event (the *needles*), the fourth none:

* a large white **digit** on a black panel in the centre (seven-segment glyph),
* a large **shape** (circle, square, triangle, cross or diamond) in the centre,
* a full-frame **colour** flash (one of eight saturated colours).

Distractors elsewhere: small grey digits and shape outlines in the corners at random times (never
during a needle). Four multiple-choice questions per video (4 options each, categories ``digit``,
``shape``, ``color``, ``when``); the correct letter cycles over A..D across videos so that every letter
is equally often right per category (a model answering one letter scores 25 %). Each question carries
a ``timestamp``: right after its needle (``when``: the end of the video), so the set also runs as a
streaming set. With a real model this is a quick sanity check that retrieval finds a short event in a
long context; on CPU with the tiny random model it is the smoke test of the whole harness.

``make_needle_set`` writes ``<name>.mp4`` files, ``needle_set.jsonl`` (the project's JSONL format,
video paths relative to the folder) and ``needles.json`` (per video: each event's kind, value, start
and end in seconds, and the distractors), and returns the questions.

    python -m mosaic_sglang.frontend.evaluation.needle_video --out needle --videos 8 --duration 600
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from fractions import Fraction
from pathlib import Path
from typing import List, Union

import numpy as np

from .qa_items import LETTERS, QAItem, write_jsonl

__all__ = ["make_needle_set", "digit_mask", "shape_mask", "COLORS", "SHAPES", "MANIFEST", "QUESTIONS_FILE"]

MANIFEST = "needles.json"
QUESTIONS_FILE = "needle_set.jsonl"

COLORS = {"red": (230, 30, 30), "green": (30, 200, 50), "blue": (40, 60, 235), "yellow": (240, 230, 30),
          "magenta": (220, 40, 220), "cyan": (40, 220, 230), "orange": (245, 140, 20), "white": (245, 245, 245)}
"""Colour-flash palette, name → RGB."""

SHAPES = ("circle", "square", "triangle", "cross", "diamond")

_SEGMENTS = {  # seven-segment encoding: a (top), b, c (right, top to bottom), d (bottom), e, f (left), g (middle)
    0: "abcdef", 1: "bc", 2: "abdeg", 3: "abcdg", 4: "bcfg", 5: "acdfg", 6: "acdefg", 7: "abc", 8: "abcdefg",
    9: "abcdfg"}


def digit_mask(digit: int, height: int, width: int) -> np.ndarray:
    """``[height, width] bool``: a seven-segment glyph of ``digit`` (0..9) filling the box."""
    mask = np.zeros((height, width), dtype=bool)
    t = max(1, min(height, width) // 6)  # stroke thickness
    mid = height // 2
    spans = {"a": (slice(0, t), slice(0, width)), "d": (slice(height - t, height), slice(0, width)),
             "g": (slice(mid - t // 2, mid - t // 2 + t), slice(0, width)),
             "f": (slice(0, mid), slice(0, t)), "b": (slice(0, mid), slice(width - t, width)),
             "e": (slice(mid, height), slice(0, t)), "c": (slice(mid, height), slice(width - t, width))}
    for segment in _SEGMENTS[digit]:
        mask[spans[segment]] = True
    return mask


def shape_mask(name: str, size: int) -> np.ndarray:
    """``[size, size] bool``: the filled shape ``name`` (one of `SHAPES`) inscribed in the box."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    u, v = 2 * x / size - 1, 2 * y / size - 1  # in [-1, 1], v grows downwards
    if name == "circle":
        return u * u + v * v <= 0.9 ** 2
    if name == "square":
        return (np.abs(u) <= 0.8) & (np.abs(v) <= 0.8)
    if name == "triangle":  # apex up, base at the bottom
        return (v <= 0.85) & (v >= -0.85) & (np.abs(u) <= (v + 0.85) / 1.7 * 0.9)
    if name == "cross":
        return ((np.abs(u) <= 0.25) | (np.abs(v) <= 0.25)) & (np.abs(u) <= 0.9) & (np.abs(v) <= 0.9)
    if name == "diamond":
        return np.abs(u) + np.abs(v) <= 0.9
    raise ValueError(f"shape: expected one of {SHAPES}, got {name!r}")


def _options(correct: str, pool, letter: int, rng) -> List[str]:
    """4 options with ``correct`` at index ``letter`` and 3 distinct wrong ones from ``pool``."""
    wrong = [p for p in pool if p != correct]
    chosen = [wrong[i] for i in rng.choice(len(wrong), size=3, replace=False)]
    return chosen[:letter] + [correct] + chosen[letter:]


def _plan_video(index: int, duration_s: float, event_s: float, rng) -> dict:
    quarter = duration_s / 4
    length = min(event_s, 0.6 * quarter)
    order = [index % 4] + [q for q in rng.permutation(4).tolist() if q != index % 4]  # digit, shape, colour, empty
    values = {"digit": int(rng.integers(10)), "shape": SHAPES[int(rng.integers(len(SHAPES)))],
              "color": list(COLORS)[int(rng.integers(len(COLORS)))]}
    events = []
    for kind, q in zip(("digit", "shape", "color"), order):
        start = q * quarter + float(rng.uniform(0.2 * quarter, max(0.2 * quarter, quarter - length)))
        events.append({"kind": kind, "value": values[kind], "quarter": q, "start_s": round(start, 3),
                       "end_s": round(min(start + length, duration_s), 3)})
    distractors = []
    for _ in range(max(2, int(duration_s // 10))):
        start = float(rng.uniform(0, max(0.0, duration_s - length)))
        if any(start < e["end_s"] + 0.5 and start + length > e["start_s"] - 0.5 for e in events):
            continue  # distractors never overlap a needle
        kind = "digit" if rng.random() < 0.5 else "shape"
        value = int(rng.integers(10)) if kind == "digit" else SHAPES[int(rng.integers(len(SHAPES)))]
        distractors.append({"kind": kind, "value": value, "corner": int(rng.integers(4)),
                            "start_s": round(start, 3), "end_s": round(start + length, 3)})
    return {"events": events, "distractors": distractors, "background": rng.integers(15, 70, size=3).tolist()}


def _render(plan: dict, t: float, size: int, duration_s: float) -> np.ndarray:
    """``[size, size, 3] uint8``: the frame at ``t`` seconds."""
    drift = 0.5 + 0.5 * math.sin(2 * math.pi * t / max(duration_s, 1e-6))
    base = np.asarray(plan["background"], dtype=np.float32)
    ramp = np.linspace(0.7, 1.3, size, dtype=np.float32)[None, :, None] * (0.8 + 0.4 * drift)
    frame = np.clip(base[None, None, :] * ramp, 0, 255).repeat(size, axis=0).astype(np.uint8)
    side = max(4, size // 10)
    x = int((size - side) * (0.5 + 0.4 * math.cos(2 * math.pi * t / 7)))
    y = int((size - side) * (0.5 + 0.4 * math.sin(2 * math.pi * t / 11)))
    frame[y:y + side, x:x + side] = (90, 90, 110)
    small = max(8, size // 6)
    for d in plan["distractors"]:
        if d["start_s"] <= t < d["end_s"]:
            oy = 2 if d["corner"] in (0, 1) else size - small - 2
            ox = 2 if d["corner"] in (0, 2) else size - small - 2
            mask = digit_mask(d["value"], small, small * 2 // 3) if d["kind"] == "digit" else shape_mask(d["value"], small)
            region = frame[oy:oy + mask.shape[0], ox:ox + mask.shape[1]]
            region[mask] = (150, 150, 150)
    for e in plan["events"]:
        if not e["start_s"] <= t < e["end_s"]:
            continue
        if e["kind"] == "color":
            frame[:] = COLORS[e["value"]]
            continue
        big = size * 5 // 8
        top = (size - big) // 2
        if e["kind"] == "digit":
            frame[top:top + big, top:top + big] = 0
            glyph = digit_mask(e["value"], big * 4 // 5, big // 2)
            gy, gx = top + (big - glyph.shape[0]) // 2, top + (big - glyph.shape[1]) // 2
            frame[gy:gy + glyph.shape[0], gx:gx + glyph.shape[1]][glyph] = 255
        else:
            frame[top:top + big, top:top + big][shape_mask(e["value"], big)] = (250, 250, 250)
    return frame


def _write_video(path: Path, plan: dict, *, duration_s: float, fps: float, size: int) -> None:
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(max(1, int(round(duration_s * fps)))):
            frame = av.VideoFrame.from_ndarray(_render(plan, i / fps, size, duration_s), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _questions(name: str, path: Path, index: int, plan: dict, duration_s: float, rng) -> List[QAItem]:
    events = {e["kind"]: e for e in plan["events"]}
    quarter = duration_s / 4
    ranges = [f"between {q * quarter:.0f} s and {(q + 1) * quarter:.0f} s" for q in range(4)]
    asked = {
        "digit": ("A large white digit appears on a black panel in the middle of the video for a moment. "
                  "Which digit is it?", str(events["digit"]["value"]), [str(d) for d in range(10)]),
        "shape": ("A large white shape appears in the middle of the video for a moment. What shape is it?",
                  events["shape"]["value"], list(SHAPES)),
        "color": ("For a moment the whole picture turns one bright colour. Which colour is it?",
                  events["color"]["value"], list(COLORS)),
    }
    items = []
    for j, (category, (question, correct, pool)) in enumerate(asked.items()):
        end = events[category]["end_s"]
        items.append(QAItem(qid=f"{name}/{category}", video=str(path), question=question,
                            options=tuple(_options(correct, pool, (index + j) % 4, rng)),
                            answer=LETTERS[(index + j) % 4], timestamp=round(min(duration_s, end + 0.5), 3),
                            category=category, duration=duration_s, source="needle"))
    q = events["digit"]["quarter"]  # == index % 4: the letter of a "when" answer cycles too
    items.append(QAItem(qid=f"{name}/when", video=str(path), question="When does the large white digit appear?",
                        options=tuple(ranges), answer=LETTERS[q], timestamp=duration_s, category="when",
                        duration=duration_s, source="needle"))
    return items


def make_needle_set(out_dir: Union[str, Path], *, num_videos: int = 4, duration_s: float = 60.0, fps: float = 2.0,
                    size: int = 224, event_s: float = 3.0, seed: int = 0) -> List[QAItem]:
    """Write ``num_videos`` needle clips and their questions into ``out_dir`` (see the module docstring).

    Args:
        num_videos: clips (>= 1); 4 questions each.
        duration_s: length of each clip in seconds (>= 4).
        fps: frame rate of the files (> 0). Sample at least 2 / ``event_s`` fps to see every needle.
        size: width and height in pixels (even, >= 32).
        event_s: how long a needle stays on screen (capped at 60 % of a quarter of the clip).
        seed: the whole set is a function of the arguments.
    """
    for name, value, ok, expected in (("num_videos", num_videos, num_videos >= 1, ">= 1"),
                                      ("duration_s", duration_s, duration_s >= 4, ">= 4"),
                                      ("fps", fps, fps > 0, "> 0"),
                                      ("size", size, size >= 32 and size % 2 == 0, "even, >= 32"),
                                      ("event_s", event_s, event_s > 0, "> 0")):
        if not ok:
            raise ValueError(f"make_needle_set: {name}: expected {expected}, got {value!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items, manifest = [], []
    for index in range(num_videos):
        name = f"needle_{index:03d}"
        plan = _plan_video(index, duration_s, event_s, rng)
        path = out / f"{name}.mp4"
        _write_video(path, plan, duration_s=duration_s, fps=fps, size=size)
        items += _questions(name, path.resolve(), index, plan, duration_s, rng)
        manifest.append({"video": path.name, "duration_s": duration_s, "fps": fps, "size": size, **plan})
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    write_jsonl([dataclasses.replace(it, video=Path(it.video).name) for it in items], out / QUESTIONS_FILE)
    return items


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write a synthetic needle-in-a-video question set.")
    parser.add_argument("--out", required=True, help="folder for the videos, needle_set.jsonl and needles.json")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per video")
    parser.add_argument("--fps", type=float, default=2.0)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--event", type=float, default=3.0, help="seconds a needle is on screen")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    items = make_needle_set(args.out, num_videos=args.videos, duration_s=args.duration, fps=args.fps, size=args.size,
                            event_s=args.event, seed=args.seed)
    print(f"{len(items)} questions on {args.videos} videos: {Path(args.out) / QUESTIONS_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
