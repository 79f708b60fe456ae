"""`VideoStream` against a real ``sglang.launch_server --enable-mosaic --enable-streaming-session``: chunks
join one session turn by turn, a question at any moment reuses the whole session's KV (``cached_tokens``)
and sees every frame so far (a partial chunk is sent first), files play at their pace with questions in
between, refusals carry the server's message, and the session is closed on exit even after an error.
Timing (per-chunk ingest staying flat) is measured by ``benchmarks/stream_ingest.py``, not asserted here."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import requests

from engine_support import strict_checks
from mosaic_sglang.frontend.server import SGLangServer, cpu_server_args
from mosaic_sglang.frontend.video_stream import EmptyStreamError, StreamError, VideoStream

pytestmark = [pytest.mark.engine, pytest.mark.timeout(480)]

SIZE = 112  # px: SGLang upsizes to its minimum pixels, 144 visual tokens per frame pair on the tiny model


@pytest.fixture(scope="module")
def server(tiny_vl_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("stream_server") / "server.log"
    args = ["--enable-mosaic", "--mosaic-budget", "64", "--enable-streaming-session", *cpu_server_args()]
    with strict_checks(), SGLangServer(tiny_vl_model, args, log_path=log) as srv:  # a leaked KV slot kills it
        yield srv
        # after every stream of the module closed, the server still generates
        assert requests.get(srv.url + "/health_generate", timeout=120).status_code == 200


def frames(count: int, *, seed: int = 0) -> np.ndarray:
    """``[count, SIZE, SIZE, 3] uint8``: a coloured background per 4 frames with a moving square."""
    rng = np.random.default_rng(seed)
    out = np.empty((count, SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(count):
        if i % 4 == 0:
            background = rng.integers(0, 256, 3, dtype=np.uint8)
        out[i] = background
        x = (7 * i) % (SIZE - 24)
        out[i, 30:54, x:x + 24] = 255 - background
    return out


def test_questions_reuse_every_earlier_chunk(server):
    """The issue's acceptance: 3 chunks, a question, 2 more chunks, a second question."""
    with VideoStream(server.url, chunk_frames=4, fps=2) as stream:
        video = frames(20)
        assert stream.push(video[:2]) == []  # half a chunk stays buffered
        first = stream.push(video[2:12])
        assert [r.index for r in first] == [0, 1, 2] and stream.frames_seen == 12
        q1 = stream.ask("what happens?", max_new_tokens=4)
        later = stream.push(video[12:20])
        q2 = stream.ask("and now?", max_new_tokens=4)
    reports = first + later
    assert [r.frames for r in reports] == [4] * 5
    assert [r.start_s for r in reports] == [0.0, 2.0, 4.0, 6.0, 8.0] and reports[-1].end_s == 9.5
    # each chunk reuses the whole session before it; after an answer, all but its last token (never fed back)
    assert reports[0].cached_tokens == 0
    for prev, chunk in zip(reports, reports[1:]):
        expected = prev.prompt_tokens if chunk.index != 3 else q1.prompt_tokens + q1.completion_tokens - 1
        assert chunk.cached_tokens == expected, (chunk, prev, q1)
    # each question: every chunk came from the cache, only the question was computed
    assert q1.cached_tokens == reports[2].prompt_tokens and q2.cached_tokens == reports[4].prompt_tokens
    assert q1.prompt_tokens - q1.cached_tokens < 20 and q2.prompt_tokens - q2.cached_tokens < 20
    assert (q1.frames_seen, q1.seen_until_s, q2.frames_seen, q2.seen_until_s) == (12, 5.5, 20, 9.5)
    assert q1.completion_tokens == q2.completion_tokens == 4 and isinstance(q1.text, str)
    # one cluster index grew over the chunks, and the questions attended a sparse set of it
    per_chunk = reports[0].mosaic["visual_tokens"]
    # a chunk adds exactly its placeholder's tokens (no generated token between chunks: max_new_tokens=0)
    assert reports[1].prompt_tokens - reports[0].prompt_tokens == per_chunk + 2  # + <|vision_start|>, <|vision_end|>
    assert per_chunk > 100 and q1.mosaic["visual_tokens"] == 3 * per_chunk and q2.mosaic["visual_tokens"] == 5 * per_chunk
    assert reports[0].mosaic["clusters"] < q1.mosaic["clusters"] < q2.mosaic["clusters"]
    assert q2.mosaic["attended_tokens"] < q2.mosaic["context_tokens"] // 3
    assert stream.session_id is None and stream.answers == [q1, q2]


def test_question_sees_the_partial_chunk(server):
    with VideoStream(server.url, chunk_frames=4, fps=2) as stream:
        (full,) = stream.push(frames(5, seed=1))
        answer = stream.ask("what is on screen?", max_new_tokens=2)
        partial = stream.reports[-1]
    # the fifth frame went as a chunk of its own, held one frame time (Qwen-VL's frame pairs)
    assert (partial.index, partial.frames, partial.start_s, partial.end_s) == (1, 2, 2.0, 2.0)
    assert answer.frames_seen == 5 and answer.seen_until_s == 2.0
    assert answer.cached_tokens == partial.prompt_tokens
    assert answer.mosaic["visual_tokens"] == full.mosaic["visual_tokens"] * 3 // 2


def test_file_plays_at_its_pace_with_a_question_between_chunks(server, tmp_path):
    from mosaic_sglang.frontend.video import make_synthetic_video

    path = make_synthetic_video(tmp_path / "live.mp4", num_frames=16, fps=8, size=SIZE, num_scenes=2, seed=3)
    answers = []
    with VideoStream(server.url, chunk_frames=2, fps=2) as stream:
        t0 = time.monotonic()
        for report in stream.play_file(path, speed=2.0):  # frames at 0, 0.5, 1.0, 1.5 s of the file
            if report.index == 0:
                answers.append(stream.ask("what is it?", max_new_tokens=2))
        elapsed = time.monotonic() - t0
        tail = list(stream.from_frames(frames(3, seed=4)))  # a camera-like source after the file
    reports = stream.reports
    assert elapsed >= 1.5 / 2.0  # the last sampled frame is due 1.5 s into the file, at twice real time
    assert [(r.frames, r.start_s, r.end_s) for r in reports] == [(2, 0.0, 0.5), (2, 1.0, 1.5), (2, 2.0, 2.5), (2, 3.0, 3.0)]
    assert tail == reports[2:]  # a full chunk, then the partial one at the end of the source
    (answer,) = answers
    assert answer.frames_seen == 2 and answer.cached_tokens == reports[0].prompt_tokens
    assert reports[1].cached_tokens == answer.prompt_tokens + answer.completion_tokens - 1


def test_an_answer_ending_its_turn_is_not_closed_twice(server):
    """An answer that ends with <|im_end|> (forced here) is followed by the next user message directly; one
    that stops for length gets the <|im_end|> written: the next chunk's context differs by that one token."""
    gaps = {}
    for forced in (True, False):
        with VideoStream(server.url, chunk_frames=2) as stream:
            stream.push(frames(2, seed=8))
            extra = {"logit_bias": {str(stream._im_end_id): 100.0}, "stop_token_ids": [stream._im_end_id]} if forced else {}
            answer = stream.ask("what is it?", max_new_tokens=1, sampling_params=extra)
            (chunk,) = stream.push(frames(2, seed=9))
        assert stream._answer_closed is forced and answer.completion_tokens == 1
        gaps[forced] = chunk.prompt_tokens - (answer.prompt_tokens + answer.completion_tokens)
    assert stream._im_end_id is not None and gaps[True] == gaps[False] - 1, gaps


def test_question_before_any_frame_is_refused_clearly(server):
    with VideoStream(server.url) as stream:
        with pytest.raises(EmptyStreamError, match="no frame yet"):
            stream.ask("what happens?")
        stream.push(frames(2, seed=5))  # frames buffered, not yet sent: the question sends them first
        assert stream.ask("and now?", max_new_tokens=1).frames_seen == 2


@pytest.mark.parametrize("kwargs, name", [({"chunk_frames": 0}, "chunk_frames"), ({"chunk_frames": 3}, "chunk_frames"),
                                          ({"fps": 0}, "fps"), ({"fps": 4}, "fps"), ({"max_side": 8}, "max_side")])
def test_bad_constructor_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}: expected"):
        VideoStream("http://127.0.0.1:1", **kwargs)


def test_bad_call_arguments_are_named(tmp_path):
    stream = VideoStream("http://127.0.0.1:1")  # never opened: arguments are checked first
    for call in (lambda: stream.play_file(tmp_path / "x.mp4", speed=0), lambda: stream.from_frames([], speed=-1.0)):
        with pytest.raises(ValueError, match="^speed: expected"):
            call()
    with pytest.raises(ValueError, match="^max_new_tokens: expected"):
        stream.ask("q", max_new_tokens=0)
    with pytest.raises(ValueError, match="^sampling_params: expected"):
        stream.ask("q", sampling_params={"temperature": 1.0})
    with pytest.raises(ValueError, match=r"^frames\[0\]: expected an \[H, W, 3\] uint8"):
        stream._as_frames([np.zeros((8, 8), dtype=np.uint8)])
    with pytest.raises(RuntimeError, match="not open"):
        stream.push(frames(1))


def test_server_refusal_carries_its_message_and_the_stream_goes_on(server):
    with VideoStream(server.url, chunk_frames=2) as stream:
        stream.push(frames(2, seed=6))
        with pytest.raises(StreamError) as refused:
            stream.ask("q", max_new_tokens=10**6)  # more than the model's context
        assert refused.value.status == 400 and "context length" in refused.value.message
        answer = stream.ask("what happens?", max_new_tokens=2)
    assert answer.cached_tokens == stream.reports[0].prompt_tokens


def test_session_is_closed_after_an_error_and_the_server_serves(server):
    with pytest.raises(ZeroDivisionError):
        with VideoStream(server.url, chunk_frames=2) as stream:
            stream.push(frames(2, seed=7))
            session = stream.session_id
            1 / 0
    assert stream.session_id is None
    gone = requests.post(server.url + "/generate", timeout=60,
                         json={"text": "hi", "sampling_params": {"max_new_tokens": 1}, "session_params": {"id": session}})
    assert gone.status_code == 400 and "does not exist" in gone.text
    plain = requests.post(server.url + "/generate", json={"text": "hello", "sampling_params": {"max_new_tokens": 2}}, timeout=60)
    assert plain.status_code == 200 and plain.json()["meta_info"]["completion_tokens"] == 2
