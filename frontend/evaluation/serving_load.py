"""A bounded video serving load on one server: conversations about videos and live streams, Poisson arrivals.

Work items arrive as a Poisson process at ``rate`` per second (seeded), at most ``max_concurrency`` at a
time, and no new one starts after ``duration_s`` (those in flight finish, each request bounded by its
timeout):

* a **conversation** (``conversations`` of them, video ``i % len(videos)``): a first question with the
  video (``video_url`` part), then ``follow_ups`` questions, each sent with the whole history so far, so
  the server's prefix cache serves the video again — every turn is a streamed chat request, timed like
  SGLang's ``bench_serving`` (`chat_stream`);
* a **live stream** (``streams`` of them): a streaming session (`VideoStream`) fed ``stream_chunks``
  chunks of a video's frames; after every ``ask_every`` chunks a question is asked about everything so far.

`run_load` returns every turn's `ChatResult` and the streams' chunk and answer latencies. While it runs a
thread polls the server's ``/v1/loads`` every 50 ms for the KV pool slots in use (``num_used_tokens``:
slots neither free nor evictable from the prefix cache, so requests in flight and Mosaic's device cluster
caches) and keeps the peak; a request shorter than the poll interval can be missed.
`bench_result` turns the chat turns into the result dict SGLang's ``bench_serving`` writes (its own
``calculate_metrics`` computes the numbers), with the streams and the peak KV added.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np
import requests

from .chat_stream import ChatResult, chat_stream, video_message

__all__ = ["LoadSpec", "LoadRun", "run_load", "bench_result", "QUESTIONS"]

QUESTIONS = ("What happens in this video?", "What colour is the background at the end?",
             "Does anything change in the middle?", "Describe the last few seconds.")
"""Questions the load asks, in turn (their content does not matter to the server's cost)."""


@dataclass(frozen=True)
class LoadSpec:
    """What one run sends (every count >= 0; see the module docstring)."""

    videos: tuple
    conversations: int = 4
    follow_ups: int = 1
    streams: int = 1
    stream_chunks: int = 4
    ask_every: int = 2
    chunk_frames: int = 8
    fps: float = 1.0
    max_side: Optional[int] = 224
    max_frames: int = 32
    rate: float = 1.0
    max_concurrency: int = 4
    duration_s: float = 60.0
    max_tokens: int = 16
    timeout_s: float = 600.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.videos:
            raise ValueError("videos: expected at least one video file, got none")
        for name in ("conversations", "follow_ups", "streams", "stream_chunks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected an integer >= 0, got {value!r}")
        for name in ("ask_every", "max_concurrency", "max_tokens", "max_frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        for name in ("rate", "duration_s", "fps", "timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name}: expected a number > 0, got {value!r}")


@dataclass
class LoadRun:
    """What a run measured.

    Attributes:
        turns: every chat turn, in completion order (``kind`` ``"first"`` or ``"follow-up"`` in ``kinds``).
        kinds: per turn, ``"first"`` or ``"follow-up"``.
        chunk_seconds: every streaming-session chunk's ingest latency.
        ask_seconds: every streaming-session question's latency (prefill + answer, not streamed).
        stream_errors: streaming turns the server refused (messages).
        started: conversations + streams started before the duration bound.
        duration_s: wall time from the first arrival to the last completion.
        peak_used_tokens: peak ``num_used_tokens`` of the server's KV pool seen by the poller.
        polls: successful ``/v1/loads`` polls.
    """

    turns: List[ChatResult] = field(default_factory=list)
    kinds: List[str] = field(default_factory=list)
    chunk_seconds: List[float] = field(default_factory=list)
    ask_seconds: List[float] = field(default_factory=list)
    stream_errors: List[str] = field(default_factory=list)
    started: int = 0
    duration_s: float = 0.0
    peak_used_tokens: int = 0
    polls: int = 0


def _clip_url(path: str, spec: LoadSpec, clips) -> str:
    from mosaic_sglang.frontend.video_clip import ClipOptions

    return clips.get(path, ClipOptions(fps=spec.fps, max_frames=spec.max_frames, max_side=spec.max_side))[0]


def _conversation(url: str, index: int, spec: LoadSpec, clips, run: LoadRun, lock: threading.Lock) -> None:
    video = _clip_url(spec.videos[index % len(spec.videos)], spec, clips)
    messages = []
    for turn in range(1 + spec.follow_ups):
        question = QUESTIONS[(index + turn) % len(QUESTIONS)]
        messages.append(video_message(video, question) if turn == 0 else {"role": "user", "content": question})
        reply = chat_stream(url, messages, max_tokens=spec.max_tokens, timeout_s=spec.timeout_s)
        with lock:
            run.turns.append(reply)
            run.kinds.append("first" if turn == 0 else "follow-up")
        if not reply.success:
            return
        messages.append({"role": "assistant", "content": reply.text})


def _stream(url: str, index: int, spec: LoadSpec, run: LoadRun, lock: threading.Lock) -> None:
    from mosaic_sglang.frontend.video_clip import ClipOptions, sample_clip
    from mosaic_sglang.frontend.video_stream import MAX_FPS, StreamError, VideoStream

    fps = min(spec.fps, MAX_FPS)
    clip = sample_clip(spec.videos[index % len(spec.videos)], ClipOptions(fps=fps, max_frames=None,
                                                                         max_side=spec.max_side))
    try:
        with VideoStream(url, chunk_frames=spec.chunk_frames, fps=fps, request_timeout_s=spec.timeout_s) as stream:
            for chunk in range(spec.stream_chunks):
                start = (chunk * spec.chunk_frames) % max(1, clip.num_frames - spec.chunk_frames + 1)
                for report in stream.push(clip.frames[start : start + spec.chunk_frames]):
                    with lock:
                        run.chunk_seconds.append(report.seconds)
                if (chunk + 1) % spec.ask_every == 0:
                    answer = stream.ask(QUESTIONS[(index + chunk) % len(QUESTIONS)], max_new_tokens=spec.max_tokens)
                    with lock:
                        run.ask_seconds.append(answer.seconds)
    except StreamError as error:
        with lock:
            run.stream_errors.append(str(error)[:300])


def _poll_used_tokens(url: str, run: LoadRun, stop: threading.Event, every_s: float = 0.05) -> None:
    with requests.Session() as http:
        while not stop.is_set():
            try:
                loads = http.get(url + "/v1/loads", params={"include": "core"}, timeout=5).json()["loads"]
                run.peak_used_tokens = max(run.peak_used_tokens, sum(int(x["num_used_tokens"]) for x in loads))
                run.polls += 1
            except (requests.RequestException, ValueError, KeyError):
                pass
            stop.wait(every_s)


def run_load(url: str, spec: LoadSpec, *, clips=None) -> LoadRun:
    """Run ``spec`` against the server at ``url`` (see the module docstring)."""
    if clips is None:
        from mosaic_sglang.frontend.clip_cache import ClipCache

        clips = ClipCache()
    url = url.rstrip("/")
    for path in spec.videos:  # decode every clip before the clock starts: client work is not server latency
        _clip_url(path, spec, clips)
    rng = np.random.default_rng(spec.seed)
    work = ["conversation"] * spec.conversations + ["stream"] * spec.streams
    work = [work[i] for i in rng.permutation(len(work))]
    run, lock, slots = LoadRun(), threading.Lock(), threading.BoundedSemaphore(spec.max_concurrency)
    stop = threading.Event()
    poller = threading.Thread(target=_poll_used_tokens, args=(url, run, stop), daemon=True)
    poller.start()
    threads, counters = [], {"conversation": 0, "stream": 0}
    t0 = time.perf_counter()
    for kind in work:
        if time.perf_counter() - t0 > spec.duration_s:
            break
        slots.acquire()
        index = counters[kind]
        counters[kind] += 1

        def job(kind=kind, index=index):
            try:
                if kind == "conversation":
                    _conversation(url, index, spec, clips, run, lock)
                else:
                    _stream(url, index, spec, run, lock)
            finally:
                slots.release()

        thread = threading.Thread(target=job, daemon=True)
        thread.start()
        threads.append(thread)
        run.started += 1
        time.sleep(rng.exponential(1.0 / spec.rate))
    for thread in threads:
        thread.join()
    run.duration_s = time.perf_counter() - t0
    stop.set()
    poller.join(timeout=10)
    return run


def _ms_stats(values: Sequence[float]) -> dict:
    if not values:
        return {"count": 0}
    x = np.asarray(values) * 1000
    return {"count": int(x.size), "mean_ms": float(x.mean()), "median_ms": float(np.median(x)),
            "p99_ms": float(np.percentile(x, 99))}


def bench_result(run: LoadRun, spec: LoadSpec, *, setting: str, tokenizer) -> dict:
    """The run in the shape of SGLang ``bench_serving``'s result (computed by its ``calculate_metrics``
    over the chat turns), plus ``setting``, ``peak_device_kv_tokens``, ``streams`` and ``turn_errors``."""
    from sglang.benchmark.datasets.common import DatasetRow
    from sglang.benchmark.serving import RequestFuncOutput, calculate_metrics

    outputs, rows = [], []
    for turn in run.turns:
        outputs.append(RequestFuncOutput(generated_text=turn.text, success=turn.success, latency=turn.latency,
                                         ttft=turn.ttft, itl=list(turn.itl), prompt_len=turn.prompt_tokens,
                                         error=turn.error, output_len=turn.completion_tokens,
                                         start_time=turn.start_time, cached_tokens=turn.cached_tokens))
        rows.append(DatasetRow(prompt="", prompt_len=turn.prompt_tokens, output_len=spec.max_tokens))
    metrics, _ = calculate_metrics(rows, outputs, run.duration_s, tokenizer, "sglang-oai-chat")
    result = {"tag": setting, "backend": "sglang-oai-chat", "dataset_name": "mosaic-video-load",
              "request_rate": spec.rate, "max_concurrency": spec.max_concurrency, "duration": run.duration_s,
              "completed": metrics.completed}
    result.update(total_input_tokens=metrics.total_input, total_output_tokens=metrics.total_output)
    for name in ("request_throughput", "input_throughput", "output_throughput", "total_throughput",
                 "mean_e2e_latency_ms", "median_e2e_latency_ms", "p99_e2e_latency_ms",
                 "mean_ttft_ms", "median_ttft_ms", "std_ttft_ms", "p99_ttft_ms",
                 "mean_tpot_ms", "median_tpot_ms", "p99_tpot_ms",
                 "mean_itl_ms", "median_itl_ms", "std_itl_ms", "p95_itl_ms", "p99_itl_ms", "max_itl_ms",
                 "concurrency", "max_output_tokens_per_s", "max_concurrent_requests"):
        result[name] = float(getattr(metrics, name))
    ok = [t for t in run.turns if t.success]
    result.update(
        setting=setting,
        peak_device_kv_tokens=run.peak_used_tokens,
        kv_polls=run.polls,
        turns={"first": run.kinds.count("first"), "follow-up": run.kinds.count("follow-up")},
        turn_errors=[t.error for t in run.turns if not t.success],
        cached_tokens=sum(t.cached_tokens for t in run.turns),
        attended_fraction=float(np.mean([t.attended_fraction for t in ok])) if ok else None,
        mean_request_device_kv_tokens=float(np.mean([t.device_kv_tokens for t in ok])) if ok else None,
        streams={"chunks": _ms_stats(run.chunk_seconds), "asks": _ms_stats(run.ask_seconds),
                 "errors": run.stream_errors},
        started=run.started,
    )
    return result
