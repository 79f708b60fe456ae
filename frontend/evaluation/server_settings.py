"""The server settings a benchmark compares, and starting a server for each.

A `Setting` is a name and the ``sglang.launch_server`` flags that make it: ``dense`` is SGLang's own
attention backend (``torch_native`` on the CPU, SGLang's default on a GPU); ``mosaic-<budget>`` adds
``--enable-mosaic --mosaic-budget <budget>`` and the given ``--mosaic-config``. `serve` starts one
server per setting in turn (`SGLangServer`, loopback) or, for a setting given as ``NAME=URL``, uses a
server the user already runs.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

__all__ = ["Setting", "build_settings", "parse_running", "serve", "resolve_model", "warm_up_clip"]


@dataclass(frozen=True)
class Setting:
    """One server configuration: ``args`` are launch flags; ``url`` a running server (then ``args`` unused)."""

    name: str
    args: Tuple[str, ...] = ()
    url: Optional[str] = None
    mosaic: bool = field(default=False)


def build_settings(budgets: Sequence[int], *, device: str, mosaic_config: Optional[dict] = None,
                   extra_args: Sequence[str] = (), streaming: bool = False,
                   max_total_tokens: int = 16384) -> List[Setting]:
    """``dense`` then ``mosaic-<b>`` per budget, each with ``extra_args`` (and CPU flags on the CPU)."""
    for b in budgets:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ValueError(f"budgets: expected integers >= 1, got {b!r}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}")
    # cache reports on for every setting (Mosaic turns them on itself): cached prefix tokens are compared too
    common = list(extra_args) + ["--enable-cache-report"] + (["--enable-streaming-session"] if streaming else [])
    if device == "cpu":
        from mosaic_sglang.frontend.server import cpu_server_args

        common += cpu_server_args(max_total_tokens=max_total_tokens)
    dense = Setting("dense", tuple(common + (["--attention-backend", "torch_native"] if device == "cpu" else [])))
    config = json.dumps(mosaic_config or {})
    return [dense] + [Setting(f"mosaic-{b}", tuple(common + ["--enable-mosaic", "--mosaic-budget", str(b),
                                                             "--mosaic-config", config]), mosaic=True)
                      for b in budgets]


def parse_running(specs: Sequence[str]) -> List[Setting]:
    """``["dense=http://127.0.0.1:30000", ...]`` → settings served by running servers."""
    out = []
    for spec in specs:
        name, sep, url = spec.partition("=")
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise ValueError(f"--url: expected NAME=http://host:port, got {spec!r}")
        out.append(Setting(name, url=url.rstrip("/"), mosaic=name.startswith("mosaic")))
    return out


def resolve_model(model_path: Optional[str]) -> Tuple[str, bool]:
    """``(model path, is the embedded tiny model)``; default: the tiny Qwen2.5-VL (random weights)."""
    if model_path:
        return model_path, False
    from mosaic_sglang.testing.tiny_models import build_tiny_model

    return str(build_tiny_model("qwen2_5_vl")), True


def warm_up_clip(workdir: Path, clips, options) -> str:
    """A ``data:`` URL of a short synthetic clip that no measured request uses, sampled with ``options``
    (`ClipOptions`, as the measured clips are) through ``clips`` (a `ClipCache`)."""
    from mosaic_sglang.frontend.video import make_synthetic_video

    path = make_synthetic_video(Path(workdir) / "warm_up.mp4", num_frames=8, fps=2, size=112, seed=12345)
    return clips.get(path, options)[0]


@contextlib.contextmanager
def serve(setting: Setting, model_path: str, *, log_dir: Optional[Path] = None, startup_timeout_s: float = 600.0,
          warm_up_video: Optional[str] = None) -> Iterator[str]:
    """The base URL of a server running ``setting`` for the duration of the block.

    ``warm_up_video``: a video URL (`warm_up_clip`) sent in one unmeasured request before the block runs,
    as SGLang's ``bench_serving`` does: a server's first video request pays one-time set-up costs that
    would otherwise land in the first measured TTFT. A failed warm-up is reported, not fatal.
    """
    with contextlib.ExitStack() as stack:
        if setting.url is not None:
            url = setting.url
        else:
            from mosaic_sglang.frontend.server import SGLangServer

            log = Path(log_dir) / f"server-{setting.name}.log" if log_dir else None
            server = stack.enter_context(SGLangServer(model_path, list(setting.args), log_path=log,
                                                      startup_timeout_s=startup_timeout_s))
            url = server.url
        if warm_up_video is not None:
            from .chat_stream import warm_up

            reply = warm_up(url, warm_up_video)
            if not reply.success:
                print(f"{setting.name}: warm-up request failed ({reply.error}); measuring anyway")
        yield url
