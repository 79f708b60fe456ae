"""Sampling a video the way a user asks for it, and sending exactly that to the server.

`sample_clip` decodes a file once with PyAV and keeps the frames at ``fps`` inside ``[start, end]``
(at most ``max_frames``, evenly spread, resized so the longer side is at most ``max_side``), with each
frame's timestamp. `encode_clip` writes those frames as a small H.264 mp4 whose frame rate is the
sampled rate, so the server's own sampler keeps every frame (nothing is sampled twice) and the clip's
duration on the server is the real time span: a 6-minute video sampled to 32 frames is 6 minutes of
video there, not 16 seconds. `clip_data_url` is what a request's ``video_data`` carries.

Qwen2.5-VL / Qwen3-VL merge frames in temporal pairs and SGLang keeps an even number of frames, so the
frame count is rounded down to a multiple of ``frame_multiple`` (default 2; a single frame is sent
twice).
"""

from __future__ import annotations

import base64
import io
import math
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple, Optional, Union

import numpy as np

from mosaic_sglang.media.probe import sniff_container

from .video import VideoError

__all__ = ["ClipOptions", "Clip", "sample_clip", "encode_clip", "clip_data_url"]

PathLike = Union[str, Path]

_CRF = "12"
"""x264 quality of the re-encoded clip: visually lossless for the model's 28-px patches, ~10× smaller
than raw frames."""


class ClipOptions(NamedTuple):
    """How to sample a video (validated by `check`; every error names the argument).

    Attributes:
        fps: frames per second of video time to keep (> 0).
        max_frames: at most this many frames (>= 1), evenly spread over the time range; None: no cap.
        start: first second of the range (>= 0).
        end: last second of the range (> start); None: the end of the video.
        max_side: resize so the longer side is at most this many pixels (>= 28); None: keep the size.
        frame_multiple: the frame count is a multiple of this (2 for Qwen-VL's temporal pairs).
    """

    fps: float = 1.0
    max_frames: Optional[int] = 32
    start: float = 0.0
    end: Optional[float] = None
    max_side: Optional[int] = None
    frame_multiple: int = 2

    def check(self) -> "ClipOptions":
        def bad(name, expected):
            raise ValueError(f"video {name}: expected {expected}, got {getattr(self, name)!r}")

        if isinstance(self.fps, bool) or not isinstance(self.fps, (int, float)) or not self.fps > 0 or not math.isfinite(self.fps):
            bad("fps", "a finite number > 0")
        if self.max_frames is not None and (isinstance(self.max_frames, bool) or not isinstance(self.max_frames, int) or self.max_frames < 1):
            bad("max_frames", "an integer >= 1 or None")
        if isinstance(self.start, bool) or not isinstance(self.start, (int, float)) or not self.start >= 0:
            bad("start", "a number of seconds >= 0")
        if self.end is not None and (isinstance(self.end, bool) or not isinstance(self.end, (int, float)) or not self.end > self.start):
            raise ValueError(f"video start/end: expected start < end, got start={self.start!r}, end={self.end!r}")
        if self.max_side is not None and (isinstance(self.max_side, bool) or not isinstance(self.max_side, int) or self.max_side < 28):
            bad("max_side", "an integer >= 28 (one vision patch) or None")
        if not isinstance(self.frame_multiple, int) or self.frame_multiple < 1:
            bad("frame_multiple", "an integer >= 1")
        if self.max_frames is not None and self.max_frames < self.frame_multiple:
            bad("max_frames", f"an integer >= frame_multiple={self.frame_multiple}")
        return self


class Clip(NamedTuple):
    """Frames sampled from a video.

    Attributes:
        frames: ``[T, H, W, 3] uint8`` RGB.
        timestamps: ``[T] float64`` seconds from the start of the file.
        source_duration_s: length of the whole file.
        source_fps: the file's frame rate.
    """

    frames: np.ndarray
    timestamps: np.ndarray
    source_duration_s: float
    source_fps: float

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def sampled_fps(self) -> float:
        """Frames per second of video time the clip represents (the rate `encode_clip` writes)."""
        if self.num_frames < 2:
            return self.source_fps
        span = float(self.timestamps[-1] - self.timestamps[0])
        return (self.num_frames - 1) / span if span > 0 else self.source_fps


def sample_clip(path: PathLike, options: ClipOptions = ClipOptions()) -> Clip:
    """Decode ``path`` once and keep the frames ``options`` asks for.

    Target times are ``start + k / fps`` inside ``[start, end]``; if there are more than ``max_frames``
    of them, ``max_frames`` are spread evenly over them (first and last kept). Each target takes the first
    decoded frame at or after it. The count is rounded down to a multiple of ``frame_multiple``.

    The container is recognised from its leading bytes and opened with that demuxer only (as the
    server's media guard does), so a text file, an image or a playlist is never read as video.

    Raises:
        ValueError: a bad option (names it).
        VideoError: missing file, not a video container, not decodable, no video stream, no frame,
            ``start`` past the end.
    """
    import av

    options = ClipOptions(*options).check()
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video {path}: no such file")
    with open(path, "rb") as f:
        demuxer = sniff_container(f.read(256))
    if demuxer is None:  # text (FFmpeg's tty demuxer), images, playlists that open further files or URLs
        raise VideoError(f"video {path}: not a recognised video container (mp4/mov, mkv/webm, avi, mpeg-ts, "
                         "flv, ogg, mpeg-ps, asf)")
    try:
        with av.open(str(path), format=demuxer) as container:  # that demuxer only, never FFmpeg's probe
            if not container.streams.video:
                raise VideoError(f"video {path}: no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0) or 1.0
            duration = _duration_s(container, stream)
            if duration is not None and options.start >= duration:
                raise VideoError(f"video {path}: start={options.start} is at or past the end ({duration:.3f} s)")
            end = duration if options.end is None else (options.end if duration is None else min(options.end, duration))
            targets = _targets(options._replace(fps=min(options.fps, fps)), end, fps)  # never above the file's rate
            frames, stamps = _decode_at(container, stream, targets, options)
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise VideoError(f"video {path}: cannot decode ({e})") from e
    if not frames:
        raise VideoError(f"video {path}: no decodable frame in [{options.start}, {end}] s")
    keep = max(options.frame_multiple, len(frames) // options.frame_multiple * options.frame_multiple)
    while len(frames) < keep:  # a single frame is repeated up to one temporal group
        frames.append(frames[-1])
        stamps.append(stamps[-1])
    frames, stamps = frames[:keep], stamps[:keep]
    source_duration = duration if duration is not None else stamps[-1] + 1.0 / fps
    return Clip(np.stack(frames), np.asarray(stamps, dtype=np.float64), float(source_duration), fps)


def encode_clip(clip: Clip) -> bytes:
    """The clip as an mp4 (H.264, ``yuv420p``) at ``clip.sampled_fps`` frames per second.

    The server then reads ``T`` frames lasting ``T / sampled_fps`` seconds, keeps them all (its sampler
    never drops frames of a clip this sparse) and reports the clip's real time span to the model.
    """
    import av

    rate = Fraction(clip.sampled_fps).limit_denominator(1 << 16)
    height, width = clip.frames.shape[1:3]
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": _CRF}
        for frame in clip.frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def clip_data_url(clip: Clip) -> str:
    """``data:video/mp4;base64,...`` of `encode_clip` (what ``video_data`` carries over HTTP)."""
    return "data:video/mp4;base64," + base64.b64encode(encode_clip(clip)).decode("ascii")


def _duration_s(container, stream) -> Optional[float]:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # av.time_base: microseconds
    return None


def _targets(options: ClipOptions, end: Optional[float], fps: float) -> np.ndarray:
    """``[n] float64`` wanted times; an unknown end is bounded later by the decoded frames."""
    if end is None:  # unknown duration: sample up to a generous bound, trimmed by what decodes
        end = options.start + (options.max_frames or 100_000) / options.fps * 64
    count = max(1, int(math.floor((end - options.start) * options.fps + 1e-9)))
    times = options.start + np.arange(count) / options.fps
    times = times[times <= end + 1e-9]
    if options.max_frames is not None and times.size > options.max_frames:
        times = times[np.linspace(0, times.size - 1, options.max_frames).round().astype(int)]
    return times


def _decode_at(container, stream, targets: np.ndarray, options: ClipOptions):
    """Decode forward from ``start``; each target takes the first frame at or after it."""
    if options.start > 0 and stream.time_base is not None:
        container.seek(int(options.start / stream.time_base), stream=stream, backward=True, any_frame=False)
    half_frame = 0.5 / (float(stream.average_rate or 0) or 1.0)
    frames, stamps, i = [], [], 0
    for frame in container.decode(stream):
        if i == len(targets):
            break
        t = frame.time if frame.time is not None else 0.0
        if options.end is not None and t > options.end + half_frame:
            break
        if t + half_frame < targets[i]:
            continue
        image = _resized(frame, options.max_side)
        while i < len(targets) and t + half_frame >= targets[i]:  # sparse files: one frame, several targets
            frames.append(image)
            stamps.append(t)
            i += 1
    return frames, stamps


def _resized(frame, max_side: Optional[int]) -> np.ndarray:
    """``[H, W, 3] uint8`` RGB, the longer side at most ``max_side`` (even sizes, as H.264 needs)."""
    width, height = frame.width, frame.height
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        width, height = max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)
    else:
        width, height = width // 2 * 2, height // 2 * 2
    return frame.to_ndarray(format="rgb24", width=width, height=height)
