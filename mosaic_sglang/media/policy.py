"""`MediaPolicy`: what a Mosaic server may open, fetch and decode for one request.

Built from `MosaicConfig` (``allowed_media_dirs``, ``media_max_*``) and SGLang's own
``--allowed-media-domains`` (the operator's list of hosts), once per process.

Local paths: ``allowed_media_dirs`` unset means "decided by how Mosaic was launched" — the HTTP server
(``sglang.launch_server`` / ``sglang serve``) allows **no** local path, because its clients are remote;
``sgl.Engine`` allows any, because its caller already runs code in the process. A list allows files under
those directories only (compared after resolving symlinks and ``..``); ``[]`` allows none anywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

__all__ = ["MediaPolicy"]


@dataclass(frozen=True)
class MediaPolicy:
    """Rules of the media guard (see `mosaic_sglang.media.guard`).

    Example:
        >>> MediaPolicy(allowed_dirs=("/data",)).path_allowed("/data/../etc/passwd")
        False
    """

    allowed_dirs: Optional[tuple[str, ...]] = ()
    """Directories local files may come from (resolved); None: any local path."""
    allowed_hosts: tuple[str, ...] = ()
    """Hosts listed by the operator (SGLang's ``--allowed-media-domains``): allowed even if private."""
    max_bytes: int = 2 << 30
    max_frames: int = 1_000_000
    max_seconds: float = 4 * 3600.0
    max_side: int = 4096

    @classmethod
    def from_config(cls, config, *, allowed_hosts=()) -> "MediaPolicy":
        """From a `MosaicConfig` (whose ``allowed_media_dirs`` the launch path has resolved)."""
        dirs = config.allowed_media_dirs
        return cls(
            allowed_dirs=None if dirs is None else tuple(os.path.realpath(d) for d in dirs),
            allowed_hosts=tuple(allowed_hosts or ()),
            max_bytes=config.media_max_bytes,
            max_frames=config.media_max_frames,
            max_seconds=float(config.media_max_seconds),
            max_side=config.media_max_side,
        )

    def path_allowed(self, path: str) -> bool:
        """Whether the local file ``path`` (any spelling) lies under an allowed directory."""
        if self.allowed_dirs is None:
            return True
        real = os.path.realpath(path)
        return any(real == d or real.startswith(d.rstrip(os.sep) + os.sep) for d in self.allowed_dirs)
