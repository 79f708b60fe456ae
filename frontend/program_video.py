"""`video(...)` for ``sgl.function`` programs: the real video, as ``video_data``, not frames as an image.

SGLang's own ``sgl.video(path, num_frames)`` turns a clip into one LLaVA-style image payload, sent as
``image_data`` with the image placeholder, and its HTTP backend sends at most one image per request, so a
Qwen2.5-VL / Qwen3-VL program never gives the model a video. Here:

* `video(path, fps=, max_frames=, start=, end=, max_side=)` is an ``SglVideo`` (so SGLang's interpreter
  routes it to ``StreamExecutor._execute_video``) that carries `ClipOptions`; bad options raise
  ``ValueError`` naming the argument when the program is written, not when it runs;
* `install_video_executor` wraps ``StreamExecutor._execute_video`` (the one SGLang symbol touched on
  the client side, listed in `VIDEO_EXECUTOR_TARGET`): for our videos it samples the file with PyAV
  through a `ClipCache` (a second question on the same video decodes nothing), records the encoded clip
  in the executor's media list, and appends the model's *video* placeholder; SGLang's own ``SglVideo`` is
  left to SGLang. Backends that cannot send videos are refused by name instead of receiving the clip as
  an image;
* `VideoRuntimeEndpoint` is SGLang's ``RuntimeEndpoint`` (HTTP) sending every image as ``image_data``
  and every video as ``video_data``, in prompt order — several of each per request.

Use::

    import sglang as sgl
    from mosaic_sglang.frontend import program_video as pv

    pv.install_video_executor()
    sgl.set_default_backend(pv.VideoRuntimeEndpoint("http://127.0.0.1:30000"))

    @sgl.function
    def describe(s, path):
        s += sgl.user(pv.video(path, fps=1, max_frames=32) + "What happens?")
        s += sgl.assistant(sgl.gen("answer", max_tokens=64))
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Optional, Union

from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint
from sglang.lang.ir import SglVideo

from .clip_cache import ClipCache
from .video_clip import ClipOptions

__all__ = [
    "ProgramVideo", "MosaicProgramVideo", "VideoPayload", "VideoRuntimeEndpoint", "video", "video_placeholder",
    "install_video_executor", "uninstall_video_executor", "is_installed", "make_executor_finalizer_safe", "VIDEO_EXECUTOR_TARGET", "default_clip_cache",
]

VIDEO_EXECUTOR_TARGET = "sglang.lang.interpreter.StreamExecutor._execute_video"

_IMAGE_PAD, _VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"

default_clip_cache = ClipCache()
"""The process's clip cache (bounded in bytes, see `ClipCache`)."""


class ProgramVideo:
    """Marker of Mosaic's video expressions (`MosaicProgramVideo`)."""


class VideoPayload(NamedTuple):
    """A video in an executor's media list (``StreamExecutor.images_`` entries are ``(path, payload)``).

    Attributes:
        url: what the request's ``video_data`` carries (an mp4 ``data:`` URL).
        num_frames: frames in it.
        span_s: seconds of video time from its first to its last frame.
    """

    url: str
    num_frames: int
    span_s: float


def video(
    path: Union[str, Path],
    *,
    fps: float = 1.0,
    max_frames: Optional[int] = 32,
    start: float = 0.0,
    end: Optional[float] = None,
    max_side: Optional[int] = None,
):
    """A video expression for ``sgl.function`` programs (see the module docstring; options as
    `ClipOptions`). Raises ``ValueError`` naming the argument for a bad option."""
    options = ClipOptions(fps=fps, max_frames=max_frames, start=start, end=end, max_side=max_side).check()
    return MosaicProgramVideo(str(path), options)


def video_placeholder(chat_template) -> str:
    """The model's video placeholder, from the program's chat template (Qwen-VL: the image placeholder
    with ``<|video_pad|>``). Raises ``TypeError`` for templates without one."""
    token = getattr(chat_template, "image_token", "") or ""
    if _IMAGE_PAD not in token:
        name = getattr(chat_template, "name", type(chat_template).__name__)
        raise TypeError(f"video(): chat template {name!r} has no video placeholder (Qwen-VL templates have one)")
    return token.replace(_IMAGE_PAD, _VIDEO_PAD)


def _end_executor(self) -> None:
    """``StreamExecutor.end`` without ``Thread.is_alive``. Both ``StreamExecutor.__del__`` and
    ``ProgramState.__del__`` call ``end``; executors and states sit in reference cycles, so the cyclic GC
    runs those finalizers at arbitrary points, including inside ``threading``'s own bookkeeping
    (``_maintain_shutdown_locks``, when any thread starts), where ``is_alive`` re-takes a lock that is
    already held and the process deadlocks (seen twice in CI: the run hung starting pytest-timeout's timer
    thread). Ending the worker needs no liveness check: a stop marker left in the queue of a worker that
    already exited is harmless."""
    if getattr(self, "use_thread", False):
        self.queue.put(None)
    backend = getattr(self, "backend", None)
    if backend is not None:
        backend.end_program(self)


def make_executor_finalizer_safe() -> None:
    """Install `_end_executor` as ``StreamExecutor.end`` (idempotent; kept for the process: the finalizers
    of every executor and program state call it, whichever code created them). Done on import."""
    from sglang.lang.interpreter import StreamExecutor

    StreamExecutor.end = _end_executor


def install_video_executor(cache: Optional[ClipCache] = None) -> None:
    """Route `video` expressions through Mosaic's sampler (idempotent; `uninstall_video_executor`
    restores SGLang's method). ``cache``: where clips are kept (default: `default_clip_cache`)."""
    from sglang.lang.interpreter import StreamExecutor

    current = StreamExecutor._execute_video
    original = getattr(current, "__wrapped_original__", current)
    clips = cache if cache is not None else default_clip_cache

    def _execute_video(self, expr):
        if not isinstance(expr, ProgramVideo):
            return original(self, expr)
        if not getattr(self.backend, "supports_video_data", False):
            raise TypeError(
                f"video(): the program's backend {type(self.backend).__name__} cannot send videos; use "
                "mosaic_sglang.frontend.program_video.VideoRuntimeEndpoint (HTTP) or "
                "mosaic_sglang.frontend.engine_backend.EngineBackend (in-process sgl.Engine)"
            )
        placeholder = video_placeholder(self.chat_template)
        clip_url, clip = clips.get(expr.path, expr.options)
        span = float(clip.timestamps[-1] - clip.timestamps[0])
        self.images_.append((expr.path, VideoPayload(clip_url, clip.num_frames, span)))
        self.text_ += placeholder

    _execute_video.__wrapped_original__ = original
    StreamExecutor._execute_video = _execute_video


def is_installed() -> bool:
    """Whether `install_video_executor` is in effect."""
    from sglang.lang.interpreter import StreamExecutor

    return hasattr(StreamExecutor._execute_video, "__wrapped_original__")


def uninstall_video_executor() -> None:
    """Put SGLang's ``StreamExecutor._execute_video`` back (no-op if not installed)."""
    from sglang.lang.interpreter import StreamExecutor

    original = getattr(StreamExecutor._execute_video, "__wrapped_original__", None)
    if original is not None:
        StreamExecutor._execute_video = original


class MosaicProgramVideo(ProgramVideo, SglVideo):
    """An ``SglVideo`` carrying `ClipOptions` (what `video` returns)."""

    def __init__(self, path: str, options: ClipOptions):
        super().__init__(path, options.max_frames or 0)
        self.options = options

    def __repr__(self) -> str:
        return f"video({self.path!r}, {self.options})"


class VideoRuntimeEndpoint(RuntimeEndpoint):
    """SGLang's HTTP ``RuntimeEndpoint``, sending the program's images as ``image_data`` and its `video`
    clips as ``video_data`` (lists, in prompt order; SGLang's own sends one image at most)."""

    supports_video_data = True

    def _add_images(self, s, data):
        images = [payload for _, payload in s.images_ if not isinstance(payload, VideoPayload)]
        videos = [payload.url for _, payload in s.images_ if isinstance(payload, VideoPayload)]
        if images:
            data["image_data"] = images if len(images) > 1 else images[0]
        if videos:
            data["video_data"] = videos


make_executor_finalizer_safe()
