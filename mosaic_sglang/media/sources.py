"""Where a video item points, decided before anything is opened or fetched.

SGLang reads a ``video_data`` string as an http(s) URL, a ``data:`` URL, a ``file://`` URL, an existing
local path, or else raw base64 (so a missing path used to surface as "Non-base64 digit found"). Here the
same item is classified first, and refused by rule: unknown schemes, local paths outside the allowed
directories (same message whether the file exists or not), allowed paths that are not files ("not
found", not a base64 error), private or metadata hosts, malformed data URLs, items over the byte limit.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from typing import Any, NamedTuple, Optional
from urllib.parse import unquote, urlsplit

from .addresses import Resolver, resolve_host, url_refusal
from .policy import MediaPolicy
from .refusal import MediaRefused

__all__ = ["MediaSource", "classify_video_item"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_MIN_BASE64_CHARS = 88
"""Raw base64 shorter than 88 characters (64 bytes) cannot hold a video: such a string is a path."""
_PATH_HINT = ("this server opens no local path outside the directories its operator allows "
              "(--mosaic-config '{\"allowed_media_dirs\": [\"/dir\"]}')")


class MediaSource(NamedTuple):
    """A classified item: ``kind`` is "path", "url", "data" or "preprocessed"."""

    kind: str
    path: Optional[str] = None
    url: Optional[str] = None
    num_bytes: Optional[int] = None


def _is_preprocessed(item: Any) -> bool:
    return not isinstance(item, (str, bytes)) and not hasattr(item, "url")


def _check_size(num_bytes: int, label: str, policy: MediaPolicy) -> None:
    if num_bytes > policy.max_bytes:
        raise MediaRefused("max-bytes", label, f"{num_bytes} bytes, over media_max_bytes={policy.max_bytes}")


def _data_url(item: str, label: str, policy: MediaPolicy) -> MediaSource:
    header, sep, payload = item.partition(",")
    params = header[len("data:"):].split(";")
    media_type = params[0].strip().lower()
    if not sep or "base64" not in params[1:]:
        raise MediaRefused("data-url", label, "expected data:video/<type>;base64,<data>")
    if media_type and not (media_type.startswith("video/") or media_type == "application/octet-stream"):
        raise MediaRefused("data-url", label, f"media type {media_type!r} is not a video type")
    _check_size(len(payload) * 3 // 4, label, policy)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise MediaRefused("data-url", label, "the payload is not valid base64") from None
    if not data:
        raise MediaRefused("data-url", label, "the payload is empty")
    return MediaSource("data", num_bytes=len(data))


def _local_path(path: str, label: str, policy: MediaPolicy, spellings: tuple[str, ...]) -> MediaSource:
    if not all(policy.path_allowed(p) for p in spellings):
        raise MediaRefused("local-path", label, _PATH_HINT)
    if not os.path.isfile(path):
        raise MediaRefused("not-found", label, "file not found at the given path")
    _check_size(os.path.getsize(path), label, policy)
    return MediaSource("path", path=path)


def classify_video_item(item: Any, label: str, policy: MediaPolicy, *, resolve: Resolver = resolve_host) -> MediaSource:
    """Classify one ``video_data`` item, or raise `MediaRefused`.

    Args:
        item: a string (path / URL / base64), bytes, an object with ``.url`` (SGLang's ``VideoData``),
            or preprocessed data (dict, frames), which passes unchanged.
        label: how the item is named in messages, e.g. ``"video_data[0]"``.
        policy: the rules.
        resolve: host name → addresses, for the http(s) address rule.
    """
    if hasattr(item, "url") and not isinstance(item, (str, bytes)):
        item = item.url
    if isinstance(item, (bytes, bytearray)):
        _check_size(len(item), label, policy)
        return MediaSource("data", num_bytes=len(item))
    if _is_preprocessed(item):
        return MediaSource("preprocessed")
    if item.startswith("data:"):
        return _data_url(item, label, policy)
    match = _SCHEME.match(item)
    if match:
        scheme = match.group(1).lower()
        if scheme in ("http", "https"):
            reason = url_refusal(item, allowed_hosts=policy.allowed_hosts, resolve=resolve)
            if reason is not None:
                raise MediaRefused("address", label, f"{reason}; list the host in --allowed-media-domains to allow it")
            return MediaSource("url", url=item)
        if scheme == "file":
            parts = urlsplit(item)
            if parts.netloc not in ("", "localhost"):
                raise MediaRefused("scheme", label, "file:// URLs name no host")
            path = unquote(parts.path)
            return _local_path(path, label, policy, (path,))
        raise MediaRefused("scheme", label, f"scheme {scheme!r} is not a media source (use a path, file://, "
                                            "http(s):// or data:)")
    if len(item) >= _MIN_BASE64_CHARS and len(item) % 4 == 0 and _BASE64.fullmatch(item):
        _check_size(len(item) * 3 // 4, label, policy)
        return MediaSource("data", num_bytes=len(item) * 3 // 4)
    return _local_path(item, label, policy, (item, unquote(urlsplit(item).path)))
