"""`scene_cuts`: where a video's shot changes, measured on decoded frames (PyAV), not guessed by a model.

The video agent (`programs.watch_for_events`) needs event times it can trust; a language model's
words about "when" are not a measurement, least of all the tiny random test model's. This detector
decodes the file with PyAV (every frame, or ``fps`` of them), shrinks each frame to ``analysis_side``
pixels and compares consecutive frames by their colour distributions: per RGB channel, the 1-D
earth-mover's (Wasserstein-1) distance between the two frames' ``_BINS``-bin histograms, in units of
the full 0-255 range, averaged over the channels. A cut is a frame whose distance to the frame before
is over ``threshold``; its time is that frame's timestamp (the first frame of the new shot).

Why this distance: it is 0 for the same colours wherever they are (an object moving inside a shot
costs nothing), grows with how far colours move (a background going from grey 100 to grey 200 over
the whole frame scores 0.39), and unlike a plain bin-by-bin histogram difference it does not jump when
compression noise pushes a flat colour across a bin edge. Its floor is the mean-colour difference, so
a shot change that keeps every colour (a cut between two views of one room) can be missed: this is a
colour-change detector, the classical cheap baseline, not a semantic one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple, Optional, Union

import numpy as np

from .video import VideoError

__all__ = ["SceneCut", "SceneCuts", "scene_cuts", "frame_distance", "DEFAULT_THRESHOLD"]

DEFAULT_THRESHOLD = 0.03
"""About 8 grey levels of mean colour shift over the whole frame. Measured on 128 clips of
`video.make_synthetic_video` (seeds 0-31, 1-4 scenes, 24 frames of 64 px): in-shot distances stay
under 0.008 (H.264 noise, the moving square), cuts score 0.058-0.74, and 0.03 finds every cut with no
false one. Real footage (fades, flashes, camera motion) sits in between more often, hence a parameter."""

_BINS = 64
"""Histogram bins per channel (4 grey levels each): coarse enough to be cheap, fine enough that the
earth-mover's distance tracks the colour shift to about 1% of the range."""


class SceneCut(NamedTuple):
    """One detected cut.

    Attributes:
        time_s: timestamp of the first frame of the new shot (seconds from the start of the file).
        frame_index: that frame's index among the analysed frames.
        score: its distance to the analysed frame before (> the threshold; 0..1).
    """

    time_s: float
    frame_index: int
    score: float


class SceneCuts(NamedTuple):
    """What `scene_cuts` measured.

    Attributes:
        cuts: the cuts, in time order.
        num_frames: frames analysed.
        duration_s: the file's duration (container metadata, else the last analysed timestamp).
        threshold: the threshold used.
        max_in_shot_score: the largest distance that was *not* a cut (how close the call was; 0 with
            fewer than two frames).
    """

    cuts: tuple
    num_frames: int
    duration_s: float
    threshold: float
    max_in_shot_score: float

    @property
    def times(self) -> tuple:
        return tuple(cut.time_s for cut in self.cuts)


def frame_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Colour distance of two ``[H, W, 3] uint8`` frames (see the module docstring), in ``[0, 1]``."""
    return float(_emd(_histograms(a), _histograms(b)))


def scene_cuts(
    path: Union[str, Path],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    fps: Optional[float] = None,
    analysis_side: int = 64,
    min_gap_s: float = 0.0,
) -> SceneCuts:
    """Detect shot changes in ``path`` (see the module docstring).

    Args:
        path: a video file PyAV can decode.
        threshold: distance (0..1) over which consecutive analysed frames are a cut.
        fps: analyse this many frames per second of video time (the first frame at or after each
            ``k / fps``); None: every frame. A cut is then found within one analysed frame of the true one.
        analysis_side: frames are resized to this many pixels a side before comparing (>= 8).
        min_gap_s: a cut closer than this to the previous cut is dropped (flashes); 0: keep all.

    Returns:
        `SceneCuts`.

    Raises:
        ValueError: a bad argument (names it).
        VideoError: missing, undecodable or empty file.
    """
    import av

    _check(threshold=threshold, fps=fps, analysis_side=analysis_side, min_gap_s=min_gap_s)
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"scene_cuts path: expected an existing video file, got {str(path)!r} (no such file)")
    cuts, stamps, in_shot = [], [], 0.0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"scene_cuts path: {path} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            duration = _duration_s(container, stream)
            previous, next_time = None, 0.0
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else len(stamps) / _rate(stream)
                if fps is not None and t + 1e-6 < next_time:
                    continue
                if fps is not None:
                    next_time = (math.floor(t * fps + 1e-6) + 1) / fps
                hist = _histograms(frame.to_ndarray(format="rgb24", width=analysis_side, height=analysis_side))
                if previous is not None:
                    score = float(_emd(previous, hist))
                    far_enough = not cuts or t - cuts[-1].time_s >= min_gap_s
                    if score > threshold and far_enough:
                        cuts.append(SceneCut(t, len(stamps), score))
                    else:
                        in_shot = max(in_shot, score)
                previous = hist
                stamps.append(t)
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise VideoError(f"scene_cuts path: cannot decode {path} ({e})") from e
    if not stamps:
        raise VideoError(f"scene_cuts path: {path} has no decodable frame")
    return SceneCuts(tuple(cuts), len(stamps), float(duration if duration is not None else stamps[-1]),
                     float(threshold), in_shot)


def _check(*, threshold, fps, analysis_side, min_gap_s) -> None:
    def number(value):
        return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)

    if not (number(threshold) and 0 < threshold < 1):
        raise ValueError(f"scene_cuts threshold: expected a number in (0, 1), got {threshold!r}")
    if fps is not None and not (number(fps) and fps > 0):
        raise ValueError(f"scene_cuts fps: expected a number > 0 or None, got {fps!r}")
    if isinstance(analysis_side, bool) or not isinstance(analysis_side, int) or analysis_side < 8:
        raise ValueError(f"scene_cuts analysis_side: expected an integer >= 8, got {analysis_side!r}")
    if not (number(min_gap_s) and min_gap_s >= 0):
        raise ValueError(f"scene_cuts min_gap_s: expected a number of seconds >= 0, got {min_gap_s!r}")


def _histograms(frame: np.ndarray) -> np.ndarray:
    """``[3, _BINS] float64``: each channel's normalized histogram."""
    pixels = frame.reshape(-1, 3)
    bins = (pixels.astype(np.int64) * _BINS) >> 8  # 0..255 -> 0.._BINS-1
    counts = np.stack([np.bincount(bins[:, c], minlength=_BINS) for c in range(3)]).astype(np.float64)
    return counts / pixels.shape[0]


def _emd(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over channels of the 1-D earth-mover's distance (L1 of the CDFs), in units of the range."""
    return float(np.abs(np.cumsum(a - b, axis=1)).sum(axis=1).mean() / _BINS)


def _rate(stream) -> float:
    return float(stream.average_rate or stream.guessed_rate or 0) or 1.0


def _duration_s(container, stream) -> Optional[float]:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # av.time_base: microseconds
    return None
