"""Container check before SGLang's decoder sees the bytes: is it a real video, and within the limits?

FFmpeg picks a demuxer by probing, so "a video" can be a text file (the ``tty`` demuxer renders text as
frames), an image, or a playlist that makes FFmpeg open further files and URLs (``hls``, ``concat``). So
the container is recognised here from its leading bytes, and PyAV opens it with that demuxer forced —
never by FFmpeg's probe. Then the limits (side, duration, frames) are read from the header and one frame
is decoded, so a zero-frame or broken stream is refused with a rule rather than failing later.
"""

from __future__ import annotations

import io
from typing import NamedTuple, Optional, Union

from .policy import MediaPolicy
from .refusal import MediaRefused

__all__ = ["ContainerInfo", "sniff_container", "probe_container"]

_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")
_ASF_GUID = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")


class ContainerInfo(NamedTuple):
    demuxer: str
    width: int
    height: int
    seconds: float
    frames: int


def sniff_container(head: bytes) -> Optional[str]:
    """The demuxer for a video container starting with ``head`` (≥ 200 bytes where available), or None.

    Example:
        >>> sniff_container(b"\\x00\\x00\\x00\\x18ftypmp42"), sniff_container(b"hello world")
        ('mov', None)
    """
    if head[4:8] in _MP4_BOXES:
        return "mov"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "mpegts"
    if head[:3] == b"FLV":
        return "flv"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"\x00\x00\x01\xba":
        return "mpeg"
    if head[:16] == _ASF_GUID:
        return "asf"
    return None


def _read_head(source: Union[str, bytes]) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source[:256])
    with open(source, "rb") as f:
        return f.read(256)


def _stream_numbers(container, stream) -> tuple[int, int, float, int]:
    width, height = stream.codec_context.width, stream.codec_context.height
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / 1_000_000
    else:
        seconds = 0.0
    rate = float(stream.average_rate or stream.guessed_rate or 0)
    frames = stream.frames or int(round(seconds * rate))
    return width, height, seconds, frames


def _check_limits(width: int, height: int, seconds: float, frames: int, label: str, policy: MediaPolicy) -> None:
    if max(width, height) > policy.max_side:
        raise MediaRefused("max-side", label, f"{width}x{height} frames, over media_max_side={policy.max_side}")
    if seconds > policy.max_seconds:
        raise MediaRefused("max-seconds", label, f"{seconds:.0f} s long, over media_max_seconds={policy.max_seconds:g}")
    if frames > policy.max_frames:
        raise MediaRefused("max-frames", label, f"{frames} frames, over media_max_frames={policy.max_frames}")


def probe_container(source: Union[str, bytes], label: str, policy: MediaPolicy) -> ContainerInfo:
    """Check the container at ``source`` (a path the guard allowed, or the bytes), or raise `MediaRefused`.

    Rules: ``container`` (not a video container, or no video stream), ``max-side``, ``max-seconds``,
    ``max-frames``, ``no-frames`` (nothing decodes), ``decode`` (FFmpeg failed: same message for every
    failure, FFmpeg's text is not passed on).
    """
    import av

    if isinstance(source, (bytes, bytearray)) and len(source) > policy.max_bytes:  # downloads land here
        raise MediaRefused("max-bytes", label, f"{len(source)} bytes, over media_max_bytes={policy.max_bytes}")
    try:
        head = _read_head(source)
    except OSError:
        raise MediaRefused("decode", label, "the video could not be read") from None
    demuxer = sniff_container(head)
    if demuxer is None:
        raise MediaRefused("container", label, "not a video container")
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with av.open(handle, mode="r", format=demuxer) as container:
            if not container.streams.video:
                raise MediaRefused("container", label, "the container holds no video stream")
            stream = container.streams.video[0]
            numbers = _stream_numbers(container, stream)
            _check_limits(*numbers, label, policy)
            first = next(iter(container.decode(stream)), None)
    except MediaRefused:
        raise
    except Exception:  # FFmpeg/PyAV errors of any kind: one message, nothing of the server's
        raise MediaRefused("decode", label, "the video could not be decoded") from None
    if first is None:
        raise MediaRefused("no-frames", label, "the video has no decodable frame")
    width, height, seconds, frames = numbers
    return ContainerInfo(demuxer, width, height, seconds, max(frames, 1))
