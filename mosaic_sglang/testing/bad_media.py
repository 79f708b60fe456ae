"""A corpus of bad video inputs, written as real files, each with the refusal it must get.

    python -m mosaic_sglang.testing.bad_media OUT_DIR     # writes the files and prints the case table

Every case is one ``video_data`` item (a path inside OUT_DIR, a path outside it, a URL or a data URL) and
the rule of `mosaic_sglang.media.RULES` the server must name in its 4xx answer. Loopback URLs name
``{media_url}``, the test's counting server on 127.0.0.1; no case names any other address.
"""

from __future__ import annotations

import base64
import fractions
import io
import json
import os
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["BadMedia", "CASES", "write_corpus", "CORPUS_LIMITS"]

CORPUS_LIMITS = {"media_max_bytes": 4 << 20, "media_max_frames": 200}
"""Limits the corpus server runs with (so the byte and frame cases stay small files)."""


class BadMedia(NamedTuple):
    name: str
    item: str
    """The ``video_data`` item; ``{dir}`` is the corpus folder, ``{media_url}`` the loopback server; a
    ``json:`` prefix means the item is the JSON value that follows (lists, dicts)."""
    rule: str


def _clip(num_frames: int = 4, size: int = 64, *, pts=None, width=None, fmt: str = "mp4") -> bytes:
    import av

    out = io.BytesIO()
    with av.open(out, mode="w", format=fmt) as container:
        stream = container.add_stream("libx264", rate=1 if pts else 4)
        stream.width, stream.height = width or size, size
        stream.pix_fmt = "yuv420p"
        if pts:
            stream.codec_context.time_base = fractions.Fraction(1, 1)
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(np.full((size, width or size, 3), 40 * i % 256, np.uint8), format="rgb24")
            if pts:
                frame.pts, frame.time_base = pts[i], fractions.Fraction(1, 1)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def _audio_only() -> bytes:
    import av

    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return out.getvalue()


def _empty_track() -> bytes:
    import av

    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width = stream.height = 64
        container.start_encoding()
    return out.getvalue()


def _image(fmt: str) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(out, format=fmt)
    return out.getvalue()


def _files(media_url: str) -> dict[str, bytes]:
    good = _clip()
    text = b"This is a plain text file, not a video.\n" * 40
    return {
        "zero_length.mp4": b"",
        "truncated.mp4": good[: len(good) // 3],
        "corrupt_header.mp4": b"\x00\x00\x00\x18ftypmp42" + b"garbage!" * 200,
        "text.mp4": text,
        "text.txt": text,
        "png_renamed.mp4": _image("PNG"),
        "jpeg_renamed.mp4": _image("JPEG"),
        "playlist.m3u8": f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{media_url}/segment.ts\n#EXT-X-ENDLIST\n".encode(),
        "concat.txt": b"ffconcat version 1.0\nfile /etc/hostname\n",
        "audio_only.mp4": _audio_only(),
        "empty_track.mp4": _empty_track(),
        "too_wide.mp4": _clip(1, 16, width=4112),
        "five_hours.mp4": _clip(2, 64, pts=[0, 5 * 3600]),
        "too_many_frames.mp4": _clip(240, 16),
        "too_big.mp4": good + os.urandom(5 << 20),
        "ok.mp4": good,
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _cases() -> list[BadMedia]:
    text_b64 = _b64(b"plain text pretending to be a video, long enough to be read as base64 " * 3)
    return [
        BadMedia("zero-length", "{dir}/zero_length.mp4", "container"),
        BadMedia("truncated", "{dir}/truncated.mp4", "decode"),
        BadMedia("corrupt-header", "{dir}/corrupt_header.mp4", "decode"),
        BadMedia("text-as-mp4", "{dir}/text.mp4", "container"),
        BadMedia("text-file", "{dir}/text.txt", "container"),
        BadMedia("png-renamed", "{dir}/png_renamed.mp4", "container"),
        BadMedia("jpeg-renamed", "{dir}/jpeg_renamed.mp4", "container"),
        BadMedia("hls-playlist", "{dir}/playlist.m3u8", "container"),
        BadMedia("concat-script", "{dir}/concat.txt", "container"),
        BadMedia("audio-only", "{dir}/audio_only.mp4", "container"),
        BadMedia("zero-frames", "{dir}/empty_track.mp4", "container"),
        BadMedia("absurd-width", "{dir}/too_wide.mp4", "max-side"),
        BadMedia("absurd-duration", "{dir}/five_hours.mp4", "max-seconds"),
        BadMedia("too-many-frames", "{dir}/too_many_frames.mp4", "max-frames"),
        BadMedia("too-many-bytes", "{dir}/too_big.mp4", "max-bytes"),
        BadMedia("missing-file", "{dir}/no_such_clip.mp4", "not-found"),
        BadMedia("outside-existing", "/etc/hostname", "local-path"),
        BadMedia("outside-missing", "/etc/no-such-file.mp4", "local-path"),
        BadMedia("dotdot-escape", "{dir}/../../../etc/hostname", "local-path"),
        BadMedia("symlink-escape", "{dir}/link_to_etc.mp4", "local-path"),
        BadMedia("file-url-outside", "file:///etc/hostname", "local-path"),
        BadMedia("file-url-with-host", "file://fileserver/share/clip.mp4", "scheme"),
        BadMedia("relative-path", "clip.mp4", "local-path"),
        BadMedia("ftp-url", "ftp://127.0.0.1/clip.mp4", "scheme"),
        BadMedia("gopher-url", "gopher://127.0.0.1/", "scheme"),
        BadMedia("s3-url", "s3://bucket/clip.mp4", "scheme"),
        BadMedia("rtsp-url", "rtsp://127.0.0.1/stream", "scheme"),
        BadMedia("loopback-url", "{media_url}/ok.mp4", "address"),
        BadMedia("localhost-url", "{media_url_localhost}/ok.mp4", "address"),
        BadMedia("loopback-127-2", "http://127.0.0.2:9/ok.mp4", "address"),
        BadMedia("ipv6-loopback", "http://[::1]:9/ok.mp4", "address"),
        BadMedia("data-bad-base64", "data:video/mp4;base64,@@@not base64@@@", "data-url"),
        BadMedia("data-not-base64", "data:video/mp4,AAAA", "data-url"),
        BadMedia("data-image-type", "data:image/png;base64," + _b64(_image("PNG")), "data-url"),
        BadMedia("data-empty", "data:video/mp4;base64,", "data-url"),
        BadMedia("data-text-payload", "data:video/mp4;base64," + text_b64, "container"),
        BadMedia("raw-base64-text", text_b64, "container"),
        BadMedia("base64-spelled-path", "/" * 82 + "etc/passwd", "container"),
        BadMedia("uppercase-scheme", "HTTP://127.0.0.1:9/ok.mp4", "scheme"),
        BadMedia("nested-list-of-urls", 'json:["{media_url}/ok.mp4"]', "item-type"),
        BadMedia("nested-list-of-paths", 'json:["/etc/hostname"]', "item-type"),
        BadMedia("dict-item", 'json:{{"url": "/etc/hostname"}}', "item-type"),
    ]


CASES = _cases()


def write_corpus(out_dir, media_url: str = "http://127.0.0.1:9") -> Path:
    """Write the corpus files into ``out_dir`` (created) and return it; the HLS playlist points its
    segment at ``media_url`` (a loopback server whose hit count must stay 0)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in _files(media_url).items():
        (out / name).write_bytes(data)
    link = out / "link_to_etc.mp4"
    if not link.is_symlink():
        os.symlink("/etc/hostname", link)
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m mosaic_sglang.testing.bad_media OUT_DIR", file=sys.stderr)
        return 2
    out = write_corpus(argv[0])
    print(json.dumps({"dir": str(out), "limits": CORPUS_LIMITS,
                      "cases": [case._asdict() for case in CASES]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
