"""`MediaRefused`: the one error a refused or undecodable media item raises.

It is a `ValueError`, so SGLang's HTTP layer answers it with a 400 whose body is the message. The
message names the rule (``[local-path]``, ``[address]``, ...), the item (``video_data[1]``) and what the
operator can change; it never carries a server path, a stack frame or decoder output, and it reads the
same whether or not a refused path exists (so clients cannot probe the server's files).
"""

from __future__ import annotations

__all__ = ["MediaRefused", "RULES"]

RULES = {
    "scheme": "only local paths, file://, http(s):// and data: URLs are media sources (lowercase schemes)",
    "item-type": "an item is a string, bytes, decoded frames, or SGLang's processor-output dict",
    "local-path": "local paths only under allowed_media_dirs",
    "not-found": "an allowed local path that is not a file",
    "address": "http(s) hosts that resolve to loopback, private, link-local or metadata addresses",
    "data-url": "data: URLs must be base64 video data",
    "container": "only video containers (mp4/mov, mkv/webm, avi, mpeg-ts, flv, ogg, mpeg-ps) are decoded",
    "decode": "the video could not be decoded",
    "no-frames": "a video without a decodable frame",
    "max-bytes": "media_max_bytes per item",
    "max-frames": "media_max_frames per video",
    "max-seconds": "media_max_seconds per video",
    "max-side": "media_max_side (width and height, pixels)",
    "placeholder": "one video placeholder in the prompt per video",
}
"""Every rule a refusal can name, with what it enforces (documented in the README)."""


class MediaRefused(ValueError):
    """A media item broke rule ``rule`` (a key of `RULES`).

    Example:
        >>> str(MediaRefused("scheme", "video_data[0]", "'ftp' is not a media source"))
        "media refused [scheme] video_data[0]: 'ftp' is not a media source"
    """

    def __init__(self, rule: str, item: str, detail: str) -> None:
        assert rule in RULES, f"{rule=}"
        self.rule = rule
        self.item = item
        super().__init__(f"media refused [{rule}] {item}: {detail}")
