"""Ask a question set of one server setting and keep, per question, what a report needs.

Two paths, chosen per item:

* **whole video** (no ``timestamp``): one streamed ``/v1/chat/completions`` request with a ``video_url``
  part and the multiple-choice prompt (`answers.build_prompt`); TTFT from the stream. ``send="clip"``
  (default) samples the file on the client (`ClipCache`: ``fps``, ``max_frames``, ``max_side``; each file
  decoded once for every setting) and sends that clip as a ``data:`` URL, so every setting sees exactly
  the same frames and the server needs no file access; ``send="url"`` passes ``item.video`` as given (a
  path the server may open under its ``allowed_media_dirs``, or an http(s) URL it may fetch).
* **streaming** (``timestamp`` set, as OVO-Bench / StreamingBench): one streaming session per video
  (`VideoStream`, the server runs with ``--enable-streaming-session``): frames are pushed in stream order
  at ``fps`` and each question is asked when the stream reaches its time, so the model has seen the
  video up to there and nothing after. Questions of one video share its session (earlier questions and
  answers stay in it, as in a live conversation). The latency of an ``ask`` (question prefill + answer)
  is reported as its TTFT: a session turn is not streamed token by token.

A failed request is a wrong answer with its ``error`` kept (and counted in the report), never a crash.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence

from .answers import build_prompt, extract_letter
from .chat_stream import chat_stream, video_message
from .qa_items import QAItem

__all__ = ["ItemResult", "SamplingOptions", "run_setting"]


@dataclass(frozen=True)
class SamplingOptions:
    """How the harness turns a video into frames (``send="clip"`` and streaming items).

    Attributes:
        fps: frames per second of video kept (streaming: at most ``VideoStream.MAX_FPS``).
        max_frames: at most this many frames per whole-video question (evenly spread).
        max_side: longer side of the frames sent, pixels (None: the file's size).
        send: ``"clip"`` or ``"url"`` (see the module docstring).
        chunk_frames: frames per streaming-session chunk.
        max_tokens: answer tokens per question.
    """

    fps: float = 1.0
    max_frames: int = 64
    max_side: Optional[int] = 448
    send: str = "clip"
    chunk_frames: int = 8
    max_tokens: int = 16

    def __post_init__(self) -> None:
        if self.send not in ("clip", "url"):
            raise ValueError(f"send: expected 'clip' or 'url', got {self.send!r}")


@dataclass
class ItemResult:
    """One question under one setting."""

    qid: str
    setting: str
    answer: str
    predicted: str
    correct: bool
    response: str
    ttft_s: float
    latency_s: float
    prompt_tokens: int
    cached_tokens: int
    attended_fraction: float
    device_kv_tokens: int
    category: Optional[str] = None
    error: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def _result(item: QAItem, setting: str, text: str, **fields) -> ItemResult:
    predicted = extract_letter(text, len(item.options)) if not fields.get("error") else ""
    return ItemResult(qid=item.qid, setting=setting, answer=item.answer, predicted=predicted,
                      correct=predicted == item.answer, response=text, category=item.category, **fields)


def _ask_whole(url: str, item: QAItem, setting: str, options: SamplingOptions, clips) -> ItemResult:
    if options.send == "clip":
        from mosaic_sglang.frontend.video_clip import ClipOptions

        try:
            video_url, _ = clips.get(item.video, ClipOptions(fps=options.fps, max_frames=options.max_frames,
                                                             max_side=options.max_side))
        except (ValueError, OSError) as error:  # VideoError is a ValueError
            return _result(item, setting, "", ttft_s=0.0, latency_s=0.0, prompt_tokens=0, cached_tokens=0,
                           attended_fraction=0.0, device_kv_tokens=0, error=f"video: {error}")
    else:
        video_url = item.video
    reply = chat_stream(url, [video_message(video_url, build_prompt(item))], max_tokens=options.max_tokens)
    return _result(item, setting, reply.text, ttft_s=reply.ttft, latency_s=reply.latency,
                   prompt_tokens=reply.prompt_tokens, cached_tokens=reply.cached_tokens,
                   attended_fraction=reply.attended_fraction if reply.success else 0.0,
                   device_kv_tokens=reply.device_kv_tokens if reply.success else 0, error=reply.error)


def _ask_streaming(url: str, items: Sequence[QAItem], setting: str, options: SamplingOptions) -> List[ItemResult]:
    """Items of one video, asked in time order over one streaming session."""
    from mosaic_sglang.frontend.video_clip import ClipOptions, sample_clip
    from mosaic_sglang.frontend.video_stream import MAX_FPS, StreamError, VideoStream

    fps = min(options.fps, MAX_FPS)
    ordered = sorted(items, key=lambda it: it.timestamp)
    failed = lambda it, why: _result(it, setting, "", ttft_s=0.0, latency_s=0.0, prompt_tokens=0, cached_tokens=0,
                                     attended_fraction=0.0, device_kv_tokens=0, error=why)
    try:
        clip = sample_clip(ordered[0].video, ClipOptions(fps=fps, max_frames=None, max_side=options.max_side,
                                                          end=max(ordered[-1].timestamp, 1.0 / fps) + 1e-6))
    except (ValueError, OSError) as error:
        return [failed(it, f"video: {error}") for it in ordered]
    out: List[ItemResult] = []
    try:
        with VideoStream(url, chunk_frames=options.chunk_frames, fps=fps) as stream:
            pushed = 0
            for item in ordered:
                upto = int((clip.timestamps <= item.timestamp + 1e-6).sum())
                if upto > pushed:
                    stream.push(clip.frames[pushed:upto])
                    pushed = upto
                if pushed == 0:  # asked before the first frame: there is nothing to answer about yet
                    stream.push(clip.frames[:1])
                    pushed = 1
                try:
                    answer = stream.ask(build_prompt(item), max_new_tokens=options.max_tokens)
                except StreamError as error:
                    out.append(failed(item, f"ask: {error}"))
                    continue
                stats = answer.mosaic or {}
                context = answer.prompt_tokens + max(0, answer.completion_tokens - 1)
                attended = stats["attended_tokens"] / stats["context_tokens"] if stats.get("context_tokens") else 1.0
                device = (int(stats.get("max_device_tokens", 0)) + int(stats.get("cluster_cache_tokens", 0))
                          if stats else context)
                out.append(_result(item, setting, answer.text, ttft_s=answer.seconds, latency_s=answer.seconds,
                                   prompt_tokens=answer.prompt_tokens, cached_tokens=answer.cached_tokens,
                                   attended_fraction=attended, device_kv_tokens=device))
    except StreamError as error:
        done = {r.qid for r in out}
        out += [failed(it, f"stream: {error}") for it in ordered if it.qid not in done]
    return out


def run_setting(url: str, items: Sequence[QAItem], setting: str, options: SamplingOptions = SamplingOptions(), *,
                clips=None, progress: Optional[Callable[[ItemResult], None]] = None) -> List[ItemResult]:
    """Ask every item of the server at ``url``; results in the order of ``items``.

    ``clips``: a `ClipCache` shared across settings (each file is decoded once for all of them).
    ``progress``: called with each result as it is ready.
    """
    if clips is None:
        from mosaic_sglang.frontend.clip_cache import ClipCache

        clips = ClipCache()
    results: Dict[str, ItemResult] = {}
    streams: Dict[str, List[QAItem]] = defaultdict(list)
    for item in items:
        if item.timestamp is None:
            results[item.qid] = _ask_whole(url, item, setting, options, clips)
            if progress:
                progress(results[item.qid])
        else:
            streams[item.video].append(item)
    for video_items in streams.values():
        for result in _ask_streaming(url, video_items, setting, options):
            results[result.qid] = result
            if progress:
                progress(result)
    return [results[item.qid] for item in items]
