"""Start and stop ``sglang-router`` (``python -m sglang_router.launch_router``) in front of SGLang servers.

The router is SGLang's own (the ``sglang-router`` package); this only launches it on 127.0.0.1 and waits
until it sees every worker healthy — with ``dp_aware`` one worker per data-parallel rank of each server
(``url@rank``). For Mosaic, route with ``policy="manual"`` and the video's routing key header
(`routing.py`): cache-aware routing matches prompt text, which does not name the video.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import requests

from .server import free_port

__all__ = ["SGLangRouter"]


class SGLangRouter:
    """A ``sglang_router.launch_router`` subprocess, as a context manager.

    Args:
        worker_urls: the servers behind it.
        policy: the router's ``--policy`` (``manual``: pin each routing key to a worker).
        dp_aware: route to data-parallel ranks of each worker (``--dp-aware``).
        assignment_mode: where ``manual`` places a new key (``min_group``: the worker with fewest keys).
        workers_expected: healthy workers to wait for (default: one per URL, times ``dp_size`` when
            ``dp_aware``).
        extra_args: more router flags.
    """

    def __init__(self, worker_urls: Sequence[str], *, policy: str = "manual", dp_aware: bool = False,
                 assignment_mode: Optional[str] = "min_group", dp_size: int = 1, extra_args: Sequence[str] = (),
                 port: Optional[int] = None, startup_timeout_s: float = 120.0, log_path: Optional[str | Path] = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [sys.executable, "-m", "sglang_router.launch_router", "--host", "127.0.0.1", "--port", str(self.port),
                     "--worker-urls", *worker_urls, "--policy", policy, "--log-level", "warn", *extra_args]
        if dp_aware:
            self.argv.append("--dp-aware")
        if policy == "manual" and assignment_mode:
            self.argv += ["--assignment-mode", assignment_mode]
        self.workers_expected = len(worker_urls) * (dp_size if dp_aware else 1)
        self.startup_timeout_s = startup_timeout_s
        self.log_path = Path(log_path) if log_path else None
        self.process: Optional[subprocess.Popen] = None

    def workers(self) -> list:
        """The router's view of its workers (``GET /workers``)."""
        return requests.get(self.url + "/workers", timeout=5).json()["workers"]

    def start(self) -> "SGLangRouter":
        log = open(self.log_path, "w") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + self.startup_timeout_s
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sglang-router exited with code {self.process.returncode} during start-up"
                                   + (f"; log: {self.log_path}" if self.log_path else ""))
            try:
                healthy = [w for w in self.workers() if w.get("is_healthy")]
                if len(healthy) >= self.workers_expected:
                    return self
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"sglang-router did not see {self.workers_expected} healthy workers in {self.startup_timeout_s:.0f} s")

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout_s)

    def __enter__(self) -> "SGLangRouter":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
