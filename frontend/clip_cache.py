"""`ClipCache`: sampled-and-encoded clips keyed by the file's content and the sampling options.

A follow-up question on a video already in the conversation re-sends the same clip: without a cache
the frontend would decode and sample the whole file again on every turn. Keys are a BLAKE2b digest of
the file's bytes plus `ClipOptions` (so an edited file, or other options, is a new entry); values are
the encoded clip (what the request carries) and its frames' timestamps. Bounded in bytes (LRU on the
encoded size plus the frames kept). `decodes` counts the files actually decoded (tests and benchmarks
read it).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Union

from .video import VideoError
from .video_clip import Clip, ClipOptions, clip_data_url, sample_clip

__all__ = ["ClipCache"]

_DEFAULT_BYTES = 256 << 20
"""256 MiB: a few hundred sampled clips of a few hundred KB, far below a decoded video's frames."""


class ClipCache:
    """LRU of sampled clips (thread-safe: ``run_batch`` executes programs on several threads).

    Args:
        max_bytes: bound on the encoded clips plus their frames (>= 0; 0 disables caching).
    """

    def __init__(self, max_bytes: int = _DEFAULT_BYTES) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"ClipCache max_bytes: expected an integer >= 0, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self.decodes = 0
        self.hits = 0
        self._entries: OrderedDict = OrderedDict()  # key -> (url, clip, nbytes)
        self._bytes = 0
        self._lock = threading.Lock()
        self._decoding: dict = {}  # key -> lock held while that clip is being decoded

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, path: Union[str, Path], options: ClipOptions) -> tuple[str, Clip]:
        """``(data URL, clip)`` of ``path`` sampled with ``options``; decodes only on a miss.

        Raises:
            VideoError: missing or undecodable file (see `sample_clip`).
        """
        key = (_digest(path), tuple(options))
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[0], entry[1]
            key_lock = self._decoding.setdefault(key, threading.Lock())
        with key_lock:  # threads missing the same clip at once: one decodes, the others wait for it
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return entry[0], entry[1]
            try:
                clip = sample_clip(path, options)
                url = clip_data_url(clip)
                nbytes = len(url) + clip.frames.nbytes
                with self._lock:
                    self.decodes += 1
                    if nbytes <= self.max_bytes and key not in self._entries:
                        self._entries[key] = (url, clip, nbytes)
                        self._bytes += nbytes
                        while self._bytes > self.max_bytes:
                            _, (_, _, size) = self._entries.popitem(last=False)
                            self._bytes -= size
            finally:  # after the entry is in: a later thread either finds it or finds this lock
                with self._lock:
                    self._decoding.pop(key, None)
        return url, clip

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


def _digest(path: Union[str, Path]) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "blake2b").hexdigest()
    except OSError as e:
        raise VideoError(f"video {path}: cannot read ({e.strerror or e})") from e
