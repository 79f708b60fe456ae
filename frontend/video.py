"""Video files for Mosaic: synthetic test clips and frame sampling, both with PyAV.

`make_synthetic_video` writes a short H.264 mp4 with scenes (background colour changes) and a moving
object, so that frames within a scene are visually coherent and scenes differ: the structure the
cluster cache exploits. `probe_video` and `sample_frames` read real files for the frontend; they raise
`VideoError` on a corrupt, empty or oversized file, before anything reaches the server.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple, Optional, Union

import numpy as np

__all__ = ["VideoError", "VideoInfo", "make_synthetic_video", "probe_video", "sample_frames"]

PathLike = Union[str, Path]


class VideoError(ValueError):
    """A video could not be used: corrupt, empty, unsupported or too large."""


class VideoInfo(NamedTuple):
    num_frames: int
    fps: float
    width: int
    height: int
    duration_s: float


def make_synthetic_video(
    path: PathLike,
    *,
    num_frames: int = 16,
    fps: int = 4,
    size: int = 112,
    num_scenes: int = 2,
    seed: int = 0,
) -> Path:
    """Write a synthetic mp4: ``num_scenes`` scenes of a coloured background with a moving square.

    Args:
        path: output file (``.mp4``).
        num_frames: frames in the clip (>= 1).
        fps: frame rate written in the container.
        size: width and height in pixels (even, >= 16; H.264 needs even sizes).
        num_scenes: the clip is split in this many equal scenes with different colours.
        seed: colour/trajectory seed.

    Returns:
        The path written.
    """
    import av

    if num_frames < 1 or size < 16 or size % 2 or num_scenes < 1:
        raise ValueError(
            f"make_synthetic_video: expected num_frames >= 1, even size >= 16, num_scenes >= 1; "
            f"got num_frames={num_frames}, size={size}, num_scenes={num_scenes}"
        )
    rng = np.random.default_rng(seed)
    backgrounds = rng.integers(0, 256, size=(num_scenes, 3), dtype=np.uint8)
    objects = rng.integers(0, 256, size=(num_scenes, 3), dtype=np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    side = max(4, size // 4)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(num_frames):
            scene = min(num_scenes - 1, i * num_scenes // num_frames)
            frame = np.empty((size, size, 3), dtype=np.uint8)
            frame[:] = backgrounds[scene]
            phase = 2 * math.pi * i / max(1, num_frames)
            x = int((size - side) * (0.5 + 0.4 * math.cos(phase)))
            y = int((size - side) * (0.5 + 0.4 * math.sin(phase)))
            frame[y : y + side, x : x + side] = objects[scene]
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def probe_video(path: PathLike, *, max_frames: int = 100_000, max_pixels: int = 4096 * 4096) -> VideoInfo:
    """Open a video and check it can be decoded.

    Raises:
        VideoError: missing, corrupt, without a video stream, empty, more than ``max_frames`` frames or
            frames over ``max_pixels``.
    """
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"video {path}: no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if width * height > max_pixels:
                raise VideoError(f"video {path}: frame {width}x{height} exceeds max_pixels={max_pixels}")
            count = 0
            for _ in container.decode(stream):
                count += 1
                if count > max_frames:
                    raise VideoError(f"video {path}: more than max_frames={max_frames} frames")
            fps = float(stream.average_rate or stream.guessed_rate or 0) or 1.0
    except VideoError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise VideoError(f"video {path}: cannot decode ({e})") from e
    if count == 0:
        raise VideoError(f"video {path}: no decodable frame")
    return VideoInfo(count, fps, width, height, count / fps)


def sample_frames(path: PathLike, *, fps: float = 2.0, max_frames: Optional[int] = 64) -> np.ndarray:
    """Decode frames sampled at ``fps`` (at most ``max_frames``, evenly spread).

    Returns:
        ``[T, H, W, 3] uint8`` RGB frames.

    Raises:
        VideoError: as `probe_video`.
    """
    import av

    info = probe_video(path)
    step = max(1.0, info.fps / fps)
    wanted = [int(i * step) for i in range(int(info.num_frames / step + 1e-9) or 1)]
    if max_frames is not None and len(wanted) > max_frames:
        idx = np.linspace(0, len(wanted) - 1, max_frames).round().astype(int)
        wanted = [wanted[i] for i in idx]
    wanted_set = set(wanted)
    frames = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(container.streams.video[0])):
            if i in wanted_set:
                frames.append(frame.to_ndarray(format="rgb24"))
    return np.stack(frames)
