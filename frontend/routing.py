"""Video affinity behind ``sglang-router``: one routing key per video, so every question about a video
(every turn of a conversation, every conversation about the same clip) reaches the replica — and, with
``--dp-aware``, the data-parallel rank — whose radix tree and host tier hold the video's KV.

SGLang's cache-aware routing matches request *text*, and a video prompt's text is the same placeholder
for every video, so it cannot see which video a request is about. The router's ``manual`` policy pins a
routing key to one worker instead; the key travels in the ``x-smg-routing-key`` header (the router's
default header). Deployment (documented in the README, tested in ``tests/test_router_affinity.py``)::

    python -m sglang_router.launch_router --worker-urls http://replica1:30000 http://replica2:30000 \\
        --policy manual --assignment-mode min_group [--dp-aware]

A key names the video, not the request: a local file by its resolved path, size and modification time
(the same clip at another path is another key, so it may be computed twice, never served stale); a URL,
or a path this client cannot see (one only the server has), by its text.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Dict, Union

__all__ = ["ROUTING_KEY_HEADER", "video_routing_key", "routing_headers"]

ROUTING_KEY_HEADER = "x-smg-routing-key"
"""The header ``sglang-router``'s ``manual`` policy reads the routing key from."""


def video_routing_key(video: Union[str, Path]) -> str:
    """The routing key of a video given as a local path, a ``file://`` / ``http(s)://`` URL or a data URL.

    Example:
        >>> video_routing_key("https://example.com/clip.mp4") == video_routing_key("https://example.com/clip.mp4")
        True
    """
    text = str(video)
    if text.startswith(("http://", "https://", "data:")):
        return "video-" + hashlib.sha256(text.encode()).hexdigest()[:24]
    path = Path(text[len("file://"):] if text.startswith("file://") else text)
    try:
        stat = os.stat(path)
        identity = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    except OSError:  # a path only the server sees: its text names the video
        identity = text
    return "video-" + hashlib.sha256(identity.encode()).hexdigest()[:24]


def routing_headers(video: Union[str, Path]) -> Dict[str, str]:
    """``{ROUTING_KEY_HEADER: video_routing_key(video)}``: pass as ``headers=`` (requests) or
    ``extra_headers=`` (the OpenAI client). A server without a router ignores it."""
    return {ROUTING_KEY_HEADER: video_routing_key(video)}
