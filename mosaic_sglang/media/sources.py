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

__all__ = ["MediaSource", "classify_video_item", "check_side_item", "local_path_refused"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_MIN_BASE64_CHARS = 88
"""Raw base64 shorter than 88 characters (64 bytes) cannot hold a video: such a string is a path."""
_PATH_HINT = ("this server opens no local path outside the directories its operator allows "
              "(--mosaic-config '{\"allowed_media_dirs\": [\"/dir\"]}')")


class MediaSource(NamedTuple):
    """A classified item: ``kind`` is "path", "url", "data", "frames" or "preprocessed"; ``item`` is what
    SGLang should be given (raw base64 becomes a ``data:`` URL, so SGLang never asks the filesystem
    whether a base64-looking string is a file)."""

    kind: str
    path: Optional[str] = None
    url: Optional[str] = None
    num_bytes: Optional[int] = None
    item: Any = None


_PREPROCESSED_FORMATS = ("processor_output", "precomputed_embedding", "PROCESSOR_OUTPUT", "PRECOMPUTED_EMBEDDING")


def _non_string_kind(item: Any, label: str) -> str:
    """SGLang passes lists/arrays/tensors through as decoded frames and dicts with a known ``format`` as
    preprocessed data; anything else (a nested list of URLs or paths, which Hugging Face's processor would
    fetch or open itself) is refused."""
    fmt = item.get("format") if isinstance(item, dict) else None
    if isinstance(item, dict) and (fmt in _PREPROCESSED_FORMATS or getattr(fmt, "name", None) in _PREPROCESSED_FORMATS):
        return "preprocessed"
    if type(item).__module__.startswith(("numpy", "torch")) and hasattr(item, "shape"):
        return "frames"
    if isinstance(item, (list, tuple)) and item and all(
        type(f).__module__.startswith(("numpy", "torch", "PIL")) and not isinstance(f, (str, bytes)) for f in item
    ):
        return "frames"
    raise MediaRefused("item-type", label, f"expected a path, URL, data URL, bytes or decoded frames, got "
                                           f"{type(item).__name__}")


def _looks_base64(item: str) -> bool:
    return len(item) >= _MIN_BASE64_CHARS and len(item) % 4 == 0 and _BASE64.fullmatch(item) is not None


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


def local_path_refused(label: str) -> MediaRefused:
    """The one refusal of a path outside the allowed directories (same text wherever it is raised)."""
    return MediaRefused("local-path", label, _PATH_HINT)


def _local_path(path: str, label: str, policy: MediaPolicy, spellings: tuple[str, ...]) -> MediaSource:
    if not all(policy.path_allowed(p) for p in spellings):
        raise local_path_refused(label)
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
    original = item
    if hasattr(item, "url") and not isinstance(item, (str, bytes)):
        item = item.url  # SGLang's VideoData: its url is what gets loaded
    if isinstance(item, (bytes, bytearray)):
        _check_size(len(item), label, policy)
        return MediaSource("data", num_bytes=len(item), item=original)
    if not isinstance(item, str):
        return MediaSource(_non_string_kind(item, label), item=original)
    # SGLang's own order (case-sensitive prefixes), so what is checked here is what SGLang will do
    if item.startswith("data:"):
        return _data_url(item, label, policy)._replace(item=original)
    if item.startswith(("http://", "https://")):
        reason = url_refusal(item, allowed_hosts=policy.allowed_hosts, resolve=resolve)
        if reason is not None:
            raise MediaRefused("address", label, f"{reason}; list the host in --allowed-media-domains to allow it")
        return MediaSource("url", url=item, item=original)
    if item.startswith("file://"):
        parts = urlsplit(item)
        if parts.netloc not in ("", "localhost"):
            raise MediaRefused("scheme", label, "file:// URLs name no host")
        path = unquote(parts.path)
        return _local_path(path, label, policy, (path,))._replace(item=original)
    match = _SCHEME.match(item)
    if match:  # any other scheme, including HTTP:// in capitals (SGLang would take it for a path)
        raise MediaRefused("scheme", label, f"scheme {match.group(1)!r} is not a media source (use a path, "
                                            "file://, lowercase http(s):// or data:)")
    if _looks_base64(item):
        _check_size(len(item) * 3 // 4, label, policy)
        return MediaSource("data", num_bytes=len(item) * 3 // 4, item="data:video/mp4;base64," + item)
    return _local_path(item, label, policy, (item, unquote(urlsplit(item).path)))._replace(item=original)


def check_side_item(item: Any, label: str, policy: MediaPolicy, *, resolve: Resolver = resolve_host) -> None:
    """The path, scheme and address rules for an ``image_data`` / ``audio_data`` string item (their
    decoders are SGLang's own; no container rule). Non-strings and data: URLs pass (SGLang validates them);
    base64 passes unless it names an existing file (SGLang looks strings up as paths first)."""
    if hasattr(item, "url") and not isinstance(item, (str, bytes)):
        item = item.url
    if not isinstance(item, str) or item.startswith("data:"):
        return
    if _looks_base64(item):
        if os.path.isfile(item):
            _local_path(item, label, policy, (item,))
        return
    classify_video_item(item, label, policy, resolve=resolve)
