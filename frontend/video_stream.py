"""A live video stream into an SGLang streaming session: frames arrive, questions come at any moment.

`VideoStream` opens a streaming session (``/open_session`` with ``streaming=True``; the server runs with
``--enable-streaming-session``) and buffers frames as they arrive — a file played at its own pace
(`play_file`), any iterator of ``[H, W, 3] uint8`` RGB frames such as a camera (`from_frames`), or `push` —
sending every ``chunk_frames`` frames as one session turn: the chunk as an mp4 at the stream's rate
(`video_clip.encode_clip`, so the server keeps every frame) behind the model's video placeholder, with
``max_new_tokens=0`` (prefill only: the chunk's KV joins the session and no generated token lands between
chunks). Each turn's `ChunkReport` carries its ingest latency. `ask` first sends the frames still buffered
(the answer sees every frame so far), then asks as a session turn; its `Answer` carries ``cached_tokens``
(the session KV it reused: every chunk and earlier answer) and Mosaic's statistics. A question before any
frame raises `EmptyStreamError`: an answer about a video with no frames would mislead.

What the model sees: a user message holding the chunks in order, each its own video to the server (its
own placeholder); the question closes that message, the answer follows, the next chunk opens a new user
message. Inside a chunk the frames sit at the right times (M-RoPE places its frame pairs at the chunk's
rate); a chunk follows, in position, everything before it, but the server gives no chunk its stream time:
each is a video starting at 0 s (Qwen3-VL's textual timestamps restart per chunk too). The stream's clock
lives on the client: `ChunkReport.start_s` / ``end_s`` continue from chunk to chunk. Qwen-VL merges frames
in temporal pairs, so ``chunk_frames`` is even and a partial chunk (sent by `ask`, or at the end of a
source) of odd length holds its last frame one more frame time.

Use (thread-safe: one lock serialises the session's turns, as a streaming session runs one request at a
time, so another thread may `ask` while a loop feeds frames)::

    with VideoStream("http://127.0.0.1:30000", chunk_frames=8, fps=1) as stream:
        for report in stream.play_file("match.mp4", speed=2.0):
            print(report.index, f"{report.seconds:.2f} s")
            if report.index == 3:
                print(stream.ask("What just happened?").text)
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator, List, NamedTuple, Optional, Union

import numpy as np
import requests

from .video import VideoError
from .video_clip import Clip, clip_data_url

__all__ = ["VideoStream", "ChunkReport", "Answer", "StreamError", "EmptyStreamError", "MAX_FPS", "VIDEO_PLACEHOLDER"]

VIDEO_PLACEHOLDER = "<|vision_start|><|video_pad|><|vision_end|>"
"""Qwen2.5-VL / Qwen3-VL video placeholder (what `tests/test_engine_streaming_session.py` sends)."""

_IM_START, _IM_END = "<|im_start|>", "<|im_end|>"

MAX_FPS = 2.0
"""SGLang's Qwen-VL sampler keeps ``frames / fps * 2`` frames of a video (``qwen_vl.FPS = 2``): up to 2 frames
per second of video every frame survives; above, the server would drop frames the client counted as seen."""

_CAPACITY = 1 << 30
"""``capacity_of_str_len`` of ``/open_session``: required by SGLang, unused by streaming sessions."""


class ChunkReport(NamedTuple):
    """One chunk appended to the session.

    Attributes:
        index: 0, 1, ... in stream order.
        frames: frames sent (a padded partial chunk counts its held frame).
        start_s: stream time of the chunk's first frame (continues from the previous chunk).
        end_s: stream time of its last frame.
        seconds: ingest latency: the ``/generate`` round trip (server decode, vision tower, prefill).
        encode_seconds: client-side mp4 encoding before it.
        prompt_tokens: the session's context after this chunk (SGLang counts the whole history).
        cached_tokens: of those, served from the session's KV (everything before this chunk).
        mosaic: Mosaic's statistics of the turn (``meta_info["mosaic"][0]``); ``{}`` on a dense server.
    """

    index: int
    frames: int
    start_s: float
    end_s: float
    seconds: float
    encode_seconds: float
    prompt_tokens: int
    cached_tokens: int
    mosaic: dict


class Answer(NamedTuple):
    """The answer to one question.

    Attributes:
        question: as asked.
        text: the model's answer.
        frames_seen: pushed frames the session held at the question (all pushed so far).
        seen_until_s: stream time of the last of them.
        seconds: the question turn's round trip.
        prompt_tokens: the session's context including the question.
        cached_tokens: of those, served from the session's KV (every chunk and earlier turn).
        completion_tokens: answer tokens generated.
        mosaic: Mosaic's statistics (context / attended / visual tokens, clusters, device / host tokens).
    """

    question: str
    text: str
    frames_seen: int
    seen_until_s: float
    seconds: float
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    mosaic: dict


class StreamError(RuntimeError):
    """The server refused a session call; ``status`` is its HTTP status, ``message`` its reason."""

    def __init__(self, what: str, status: int, message: str):
        super().__init__(f"{what}: server answered {status}: {message}")
        self.status, self.message = status, message


class EmptyStreamError(RuntimeError):
    """A question before any frame reached the stream."""


def _check_number(name: str, value, *, minimum: float, strict: bool, maximum: Optional[float] = None) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (value > minimum if strict else value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        bound = f"{'>' if strict else '>='} {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        raise ValueError(f"{name}: expected a finite number {bound}, got {value!r}")


class VideoStream:
    """A streaming session on the server at ``url`` fed with video frames (see the module docstring).

    Args:
        url: server base URL, e.g. ``http://127.0.0.1:30000``.
        chunk_frames: frames per session turn (an even integer >= 2: Qwen-VL's temporal pairs).
        fps: frames per second of video time: the rate frames of `push` / `from_frames` arrive at (their
            timestamps and pacing), the rate `play_file` samples a file at; ``0 < fps <= MAX_FPS``.
        max_side: resize frames so the longer side is at most this many pixels (>= 28); None: keep.
        system: optional system message, sent with the first chunk.
        idle_timeout_s: the server closes the session after this long without a turn (a safety net for a
            client that dies); None: never.
        request_timeout_s: HTTP timeout of each call.
        routed_dp_rank: on a server with ``--dp-size N``, the data-parallel rank every turn of the session
            goes to (SGLang's ``routed_dp_rank``): each rank keeps its own copy of a streaming session and
            SGLang's default round robin would hand the chunks to different ranks, each seeing only some of
            them. None: the server chooses per turn (right for ``--dp-size 1``).
    """

    def __init__(self, url: str, *, chunk_frames: int = 8, fps: float = 1.0, max_side: Optional[int] = None,
                 system: Optional[str] = None, idle_timeout_s: Optional[float] = None,
                 request_timeout_s: float = 600.0, routed_dp_rank: Optional[int] = None):
        if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 2 or chunk_frames % 2:
            raise ValueError(f"chunk_frames: expected an even integer >= 2 (Qwen-VL merges frame pairs), got {chunk_frames!r}")
        _check_number("fps", fps, minimum=0, strict=True, maximum=MAX_FPS)
        if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 28):
            raise ValueError(f"max_side: expected an integer >= 28 (one vision patch) or None, got {max_side!r}")
        if idle_timeout_s is not None:
            _check_number("idle_timeout_s", idle_timeout_s, minimum=0, strict=True)
        _check_number("request_timeout_s", request_timeout_s, minimum=0, strict=True)
        if routed_dp_rank is not None and (isinstance(routed_dp_rank, bool) or not isinstance(routed_dp_rank, int)
                                           or routed_dp_rank < 0):
            raise ValueError(f"routed_dp_rank: expected an integer >= 0 or None, got {routed_dp_rank!r}")
        self.routed_dp_rank = routed_dp_rank
        self.url = url.rstrip("/")
        self.chunk_frames, self.fps, self.max_side, self.system = chunk_frames, float(fps), max_side, system
        self.idle_timeout_s, self.request_timeout_s = idle_timeout_s, request_timeout_s
        self.reports: List[ChunkReport] = []
        self.answers: List[Answer] = []
        self.session_id: Optional[str] = None
        self.frames_seen = 0  # pushed frames the session holds (buffered ones and held copies not included)
        self._lock = threading.RLock()
        self._pending: List[np.ndarray] = []
        self._pending_times: List[float] = []
        self._frame_shape: Optional[tuple] = None
        self._next_time = 0.0  # stream time of the next pushed frame
        self._rid: Optional[str] = None
        self._turn_state = "start"  # "start" (nothing sent) | "user" (a user message is open) | "answered"
        self._answer_closed = False  # the last answer ended with <|im_end|> itself
        self._im_end_id: Optional[int] = None

    def open(self) -> "VideoStream":
        """Open the streaming session (`StreamError` if the server refuses, e.g. no
        ``--enable-streaming-session``)."""
        with self._lock:
            if self.session_id is not None:
                raise RuntimeError(f"VideoStream: session {self.session_id} is already open")
            body = {"capacity_of_str_len": _CAPACITY, "streaming": True}
            if self.idle_timeout_s is not None:
                body["timeout"] = float(self.idle_timeout_s)
            self.session_id = self._post("/open_session", body, "open_session")
            self._im_end_id = self._token_id(_IM_END)
            return self

    def close(self) -> None:
        """Close the session (idempotent); frames still buffered are dropped."""
        with self._lock:
            sid, self.session_id = self.session_id, None
            self._pending, self._pending_times = [], []
            if sid is not None:
                self._post("/close_session", {"session_id": sid}, "close_session", parse=False)

    def __enter__(self) -> "VideoStream":
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.close()
        except (requests.RequestException, StreamError):
            if exc_type is None:
                raise  # otherwise the original error is the one worth seeing

    def push(self, frames) -> List[ChunkReport]:
        """Buffer frames, ``1 / fps`` apart in stream time; send every full chunk. Returns the chunks sent.

        ``frames``: one ``[H, W, 3] uint8`` RGB frame, a ``[T, H, W, 3]`` array or a sequence of frames;
        every frame of the stream has the first frame's size (after ``max_side``). Frames after a chunk
        the server refused (`StreamError`) are not buffered.
        """
        return self._push(frames, None)

    def _push(self, frames, time_s: Optional[float]) -> List[ChunkReport]:
        with self._lock:
            self._require_open("push")
            batch, reports = self._as_frames(frames), []
            for k, frame in enumerate(batch):
                t = self._next_time if time_s is None or k else time_s
                self._pending.append(frame)
                self._pending_times.append(t)
                self._next_time = t + 1.0 / self.fps
                if len(self._pending) == self.chunk_frames:
                    reports.append(self._send_chunk())
            return reports

    def flush(self) -> Optional[ChunkReport]:
        """Send the buffered partial chunk now (None if nothing is buffered)."""
        with self._lock:
            self._require_open("flush")
            return self._send_chunk() if self._pending else None

    def from_frames(self, frames: Iterable, *, realtime: bool = False, speed: float = 1.0) -> Iterator[ChunkReport]:
        """Push frames from any iterable (a camera, a generator), ``1 / fps`` apart in stream time; yield each
        chunk as it is sent, then the final partial one. ``realtime``: pace them at ``fps * speed`` (a camera
        paces itself). Arguments are checked now, frames as they come."""
        _check_number("speed", speed, minimum=0, strict=True)
        return self._feed(((frame, None) for frame in frames), realtime, speed)

    def play_file(self, path: Union[str, Path], *, realtime: bool = True, speed: float = 1.0) -> Iterator[ChunkReport]:
        """Play a video file into the stream, sampled at ``fps``, paced by its timestamps (``realtime``,
        ``speed`` times faster); yield each chunk as it is sent, then the final partial one. The file's times
        continue the stream's clock. Raises `VideoError` for a missing (now) or undecodable (when read) file."""
        _check_number("speed", speed, minimum=0, strict=True)
        path = Path(path)
        if not path.is_file():
            raise VideoError(f"video {path}: no such file")
        return self._feed(self._decode(path), realtime, speed)

    def _feed(self, frames_with_times, realtime: bool, speed: float) -> Iterator[ChunkReport]:
        """Push ``(frame, stream seconds or None)`` pairs, sleeping to keep ``speed`` times real time."""
        wall0 = first = None
        for frame, t in frames_with_times:
            t = self._next_time if t is None else t
            if realtime:
                if wall0 is None:
                    wall0, first = time.monotonic(), t
                delay = wall0 + (t - first) / speed - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            yield from self._push(frame, t)
        report = self.flush()
        if report is not None:
            yield report

    def _decode(self, path: Path):
        """``(frame [H, W, 3] uint8, stream seconds)`` of the file at ``fps``: each target time ``k / fps``
        after its first frame takes the first frame at or after it; times continue the stream's clock."""
        import av

        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise VideoError(f"video {path}: no video stream")
                stream = container.streams.video[0]
                half = 0.5 / (float(stream.average_rate or 0) or 1.0)
                start = target = None
                for frame in container.decode(stream):
                    t = frame.time if frame.time is not None else 0.0
                    if start is None:
                        start, target, offset = t, t, self._next_time
                    if t + half < target:
                        continue
                    while target <= t + half:
                        target += 1.0 / self.fps
                    yield self._fit(frame.to_ndarray(format="rgb24")), offset + (t - start)
        except (av.error.FFmpegError, OSError) as e:
            raise VideoError(f"video {path}: cannot decode ({e})") from e

    def ask(self, question: str, *, max_new_tokens: int = 32, temperature: float = 0.0,
            sampling_params: Optional[dict] = None) -> Answer:
        """Ask about every frame so far (the buffered ones are sent first); the answer joins the session.
        ``sampling_params``: any other SGLang sampling parameters (``top_p``, ``stop``, ``logit_bias``, ...).

        Raises:
            ValueError: an empty question, ``max_new_tokens < 1``, a bad ``temperature``, or
                ``sampling_params`` repeating those two (named).
            EmptyStreamError: no frame was pushed yet.
            StreamError: the server refused the turn (its message; the session stays usable).
        """
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"question: expected a non-empty string, got {question!r}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: expected an integer >= 1, got {max_new_tokens!r}")
        _check_number("temperature", temperature, minimum=0, strict=False)
        if sampling_params is not None and (not isinstance(sampling_params, dict)
                                            or {"max_new_tokens", "temperature"} & set(sampling_params)):
            raise ValueError("sampling_params: expected a dict without max_new_tokens / temperature (they are "
                             f"arguments), got {sampling_params!r}")
        sampling = dict(sampling_params or {})
        sampling.update(max_new_tokens=max_new_tokens, temperature=temperature)
        with self._lock:
            self._require_open("ask")
            if self._pending:
                self._send_chunk()
            if self.frames_seen == 0:
                raise EmptyStreamError("ask(): the stream has no frame yet; push or play frames before asking")
            text = self._user_prefix() + question + f"{_IM_END}\n{_IM_START}assistant\n"
            t0 = time.perf_counter()
            body = self._turn(text, None, sampling, "ask")
            seconds = time.perf_counter() - t0
            meta = body["meta_info"]
            finish = meta.get("finish_reason") or {}
            self._turn_state = "answered"
            self._answer_closed = self._im_end_id is not None and finish.get("matched") == self._im_end_id
            answer = Answer(question, body.get("text", ""), self.frames_seen, self.reports[-1].end_s, seconds,
                            int(meta["prompt_tokens"]), int(meta.get("cached_tokens", 0)),
                            int(meta.get("completion_tokens", 0)), _mosaic(meta))
            self.answers.append(answer)
            return answer

    def _send_chunk(self) -> ChunkReport:
        frames, times = self._pending, self._pending_times
        start_s, end_s = times[0], times[-1]
        if len(frames) % 2:  # hold the last frame one frame time: Qwen-VL needs temporal pairs
            frames, times = frames + [frames[-1]], times + [times[-1] + 1.0 / self.fps]
        t0 = time.perf_counter()
        span = times[-1] - times[0] + 1.0 / self.fps
        url = clip_data_url(Clip(np.stack(frames), np.asarray(times, dtype=np.float64), span, self.fps))
        encode_s = time.perf_counter() - t0
        text = self._user_prefix() + VIDEO_PLACEHOLDER
        t0 = time.perf_counter()
        pushed = len(self._pending)
        try:
            body = self._turn(text, url, {"max_new_tokens": 0}, f"chunk {len(self.reports)}")
        finally:  # a refused chunk is dropped: resending the same frames would be refused again
            self._pending, self._pending_times = [], []
        seconds = time.perf_counter() - t0
        self._turn_state = "user"
        self.frames_seen += pushed
        meta = body["meta_info"]
        report = ChunkReport(len(self.reports), len(frames), start_s, end_s, seconds, encode_s,
                             int(meta["prompt_tokens"]), int(meta.get("cached_tokens", 0)), _mosaic(meta))
        self.reports.append(report)
        return report

    def _user_prefix(self) -> str:
        """Text that puts the next turn inside a user message."""
        if self._turn_state == "start":
            system = f"{_IM_START}system\n{self.system}{_IM_END}\n" if self.system else ""
            return f"{system}{_IM_START}user\n"
        if self._turn_state == "answered":
            return ("" if self._answer_closed else _IM_END) + f"\n{_IM_START}user\n"
        return ""

    def _turn(self, text: str, video_url: Optional[str], sampling: dict, what: str) -> dict:
        payload = {"text": text, "sampling_params": sampling, "session_params": {"id": self.session_id, "rid": self._rid}}
        if video_url is not None:
            payload["video_data"] = [video_url]
        if self.routed_dp_rank is not None:
            payload["routed_dp_rank"] = self.routed_dp_rank
        body = self._post("/generate", payload, what)
        finish = body["meta_info"].get("finish_reason") or {}
        if finish.get("type") == "abort":  # an abort without an HTTP status still comes back as 200
            raise StreamError(what, 200, str(finish.get("message", "aborted")))
        self._rid = body["meta_info"]["id"]
        return body

    def _post(self, route: str, payload: dict, what: str, *, parse: bool = True):
        response = requests.post(self.url + route, json=payload, timeout=self.request_timeout_s)
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:500]
            raise StreamError(what, response.status_code, message)
        return response.json() if parse else None

    def _token_id(self, token: str) -> Optional[int]:
        """The id of a single-token string from the server's ``/tokenize`` (None if it cannot say)."""
        try:
            ids = self._post("/tokenize", {"prompt": token, "add_special_tokens": False}, "tokenize").get("tokens")
        except (requests.RequestException, StreamError, AttributeError):
            return None
        return ids[0] if isinstance(ids, list) and len(ids) == 1 else None

    def _require_open(self, what: str) -> None:
        if self.session_id is None:
            raise RuntimeError(f"{what}(): the stream is not open; use `with VideoStream(...)` or call open()")

    def _as_frames(self, frames) -> List[np.ndarray]:
        if isinstance(frames, np.ndarray) and frames.ndim == 3:
            frames = [frames]
        batch = [self._fit(_checked_frame(f, i)) for i, f in enumerate(frames)]
        for i, frame in enumerate(batch):
            shape = self._frame_shape or frame.shape
            if frame.shape != shape:
                raise ValueError(f"frames[{i}]: expected {shape[1]}x{shape[0]} (the stream's frame size), "
                                 f"got {frame.shape[1]}x{frame.shape[0]}")
            self._frame_shape = shape
        return batch

    def _fit(self, frame: np.ndarray) -> np.ndarray:
        """The frame with even sides (H.264), the longer at most ``max_side``."""
        height, width = frame.shape[:2]
        if self.max_side is not None and max(height, width) > self.max_side:
            scale = self.max_side / max(height, width)
            height, width = max(2, round(height * scale)), max(2, round(width * scale))
        height, width = height // 2 * 2, width // 2 * 2
        if (height, width) == frame.shape[:2]:
            return frame
        import av

        image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        return image.to_ndarray(format="rgb24", width=width, height=height)


def _checked_frame(frame, index: int) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8 \
            or min(frame.shape[:2]) < 2:
        got = f"shape={getattr(frame, 'shape', None)}, dtype={getattr(frame, 'dtype', type(frame).__name__)}"
        raise ValueError(f"frames[{index}]: expected an [H, W, 3] uint8 RGB array (H, W >= 2), got {got}")
    return frame


def _mosaic(meta: dict) -> dict:
    stats = meta.get("mosaic") or [{}]
    return dict(stats[0]) if isinstance(stats, list) else dict(stats)
