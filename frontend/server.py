"""Start and stop a real SGLang HTTP server (``python -m sglang.launch_server``) for demos and tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

import requests

__all__ = ["SGLangServer", "cpu_server_args", "cpu_rank_binding", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_server_args(*, max_total_tokens: int = 16384) -> List[str]:
    """Flags that run SGLang's CPU path on a tiny fp32 model (see the project's CPU notes)."""
    return [
        "--device", "cpu",
        "--sampling-backend", "pytorch",
        "--grammar-backend", "none",
        "--skip-server-warmup",
        "--dtype", "float32",
        "--max-total-tokens", str(max_total_tokens),
    ]


def cpu_rank_binding(ranks: int) -> dict:
    """Environment for ``ranks`` scheduler processes on one CPU machine (``--dp-size`` / ``--tp-size`` > 1):
    SGLang's CPU path binds each rank to a core range (``SGLANG_CPU_OMP_THREADS_BIND``) and refuses more
    ranks than NUMA nodes without it. The machine's cores are split evenly, in order."""
    cores = os.cpu_count() or 1
    if not 1 <= ranks <= cores:
        raise ValueError(f"cpu_rank_binding: ranks: expected 1..{cores} (the cores here), got {ranks!r}")
    per = cores // ranks
    spans = [(i * per, (i + 1) * per - 1) for i in range(ranks)]
    return {"SGLANG_CPU_OMP_THREADS_BIND": "|".join(f"{a}-{b}" if b > a else str(a) for a, b in spans)}


class SGLangServer:
    """A ``sglang.launch_server`` subprocess on 127.0.0.1, as a context manager.

    Example:
        >>> with SGLangServer(model_path, ["--enable-mosaic"]) as server:   # doctest: +SKIP
        ...     requests.post(server.url + "/generate", json={...})
    """

    def __init__(
        self,
        model_path: str | Path,
        extra_args: Sequence[str] = (),
        *,
        port: Optional[int] = None,
        startup_timeout_s: float = 300.0,
        log_path: Optional[str | Path] = None,
        env: Optional[dict] = None,
    ) -> None:
        self.port = port or free_port()
        self.env = {**os.environ, **(env or {})}
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [
            sys.executable, "-m", "sglang.launch_server",
            "--model-path", str(model_path),
            "--host", "127.0.0.1", "--port", str(self.port),
            *extra_args,
        ]
        self.startup_timeout_s = startup_timeout_s
        self.log_path = Path(log_path) if log_path else None
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> "SGLangServer":
        """Launch the server and wait until ``/health`` answers 200 (`launch` then `wait_ready`)."""
        return self.launch().wait_ready()

    def launch(self) -> "SGLangServer":
        """Start the process without waiting (several servers can then start at once; `wait_ready` each)."""
        if self.alive():
            raise RuntimeError(f"sglang server on port {self.port} is already running")
        log = open(self.log_path, "w") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        return self

    def wait_ready(self) -> "SGLangServer":
        """Block until ``/health`` answers 200; raise (and stop the server) if it exits or times out."""
        assert self.process is not None, "launch() first"
        deadline = time.time() + self.startup_timeout_s
        while time.time() < deadline:
            if self.process.poll() is not None:
                self.stop()  # what it started may still run
                raise RuntimeError(
                    f"sglang server exited with code {self.process.returncode} during start-up"
                    + (f"; log: {self.log_path}" if self.log_path else "")
                )
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(1.0)
        self.stop()
        raise TimeoutError(f"sglang server did not become healthy in {self.startup_timeout_s:.0f} s")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Terminate the server and every process it started (also when the server itself already exited:
        its scheduler processes may not have)."""
        import signal

        if self.process is None:
            return
        if self.process.poll() is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)  # its own session: the group outlives the leader
            except (ProcessLookupError, PermissionError):
                pass
            return

        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=timeout_s)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=timeout_s)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> "SGLangServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m mosaic_sglang.frontend.server``: a Mosaic server on this machine's CPU, one command.

    Defaults: the embedded tiny Qwen2.5-VL (built offline on first use; random weights), 127.0.0.1:30000,
    ``--enable-mosaic`` with the host tier, a 16K-token KV pool (SGLang's CPU default reserves far more),
    and local videos allowed from the current directory (``--allowed-media-dir`` to change). Anything after
    ``--`` goes to ``sglang.launch_server`` unchanged.
    """
    import argparse
    import json

    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m mosaic_sglang.frontend.server", description=main.__doc__.split("\n")[0])
    parser.add_argument("--model-path", default=None, help="default: the embedded tiny Qwen2.5-VL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--mosaic-budget", type=int, default=256)
    parser.add_argument("--allowed-media-dir", action="append", default=None,
                        help="directory local videos may come from (repeatable; default: the current directory)")
    parser.add_argument("--max-total-tokens", type=int, default=16384, help="KV pool size in tokens")
    args = parser.parse_args(argv)
    model = args.model_path
    if model is None:
        from mosaic_sglang.testing.tiny_models import build_tiny_model

        model = str(build_tiny_model("qwen2_5_vl"))
    dirs = [str(Path(d).resolve()) for d in (args.allowed_media_dir or [os.getcwd()])]
    options = {"host_store_tokens": 65536, "allowed_media_dirs": dirs}
    command = [sys.executable, "-m", "sglang.launch_server", "--model-path", model, "--host", args.host,
               "--port", str(args.port), "--enable-mosaic", "--mosaic-budget", str(args.mosaic_budget),
               "--mosaic-config", json.dumps(options), *cpu_server_args(max_total_tokens=args.max_total_tokens), *extra]
    print("starting:", " ".join(command[1:]), flush=True)
    os.execv(sys.executable, command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
