"""Abort matrix through a real HTTP server: an abort during the first prefill, during a streaming-session
chunk, mid-decode, and by client disconnect, each with and without the host tier. Every abort fires on an
observed event (the scheduler ran a forward for the request; the first streamed token arrived), never on
a sleep. Afterwards a follow-up on the same conversation / session and one on a new one answer exactly
what a clean run answered, and SGLang's strict memory checks (a leaked slot kills the scheduler) and
``MOSAIC_DEBUG`` (host-tier integrity, checksums of offloaded clusters) stay quiet."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from mosaic_sglang.frontend.server import SGLangServer, cpu_server_args

from engine_support import strict_checks

pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]

USER = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>{q}<|im_end|>\n<|im_start|>assistant\n"
CHUNK = "<|vision_start|><|video_pad|><|vision_end|>"
QUESTION = "<|im_end|>\n<|im_start|>user\nwhat happened?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from mosaic_sglang.frontend.video import make_synthetic_video

    d = tmp_path_factory.mktemp("abort")
    return {"long": make_synthetic_video(d / "long.mp4", num_frames=48, size=112, num_scenes=4, seed=5),
            "short": make_synthetic_video(d / "short.mp4", num_frames=8, size=112, num_scenes=1, seed=6)}


@pytest.fixture(scope="module", params=[0, 16384], ids=["device-only", "host-tier"])
def server(request, tiny_vl_model, clips, tmp_path_factory):
    options = {"recent_window": 16, "max_cluster_size": 16, "host_store_tokens": request.param,
               "allowed_media_dirs": [str(clips["long"].parent)]}
    args = ["--enable-mosaic", "--mosaic-budget", "48", "--chunked-prefill-size", "128", "--enable-metrics",
            "--enable-streaming-session", "--mosaic-config", json.dumps(options), *cpu_server_args()]
    log = tmp_path_factory.mktemp("abort-server") / "server.log"
    with strict_checks(), SGLangServer(tiny_vl_model, args, log_path=log) as srv:
        yield srv


def _post(server, path, body, **kwargs):
    return requests.post(server.url + path, json=body, timeout=300, **kwargs)


def _body(text, video=None, *, tokens=4, rid=None, stream=False, session=None):
    body = {"text": text, "sampling_params": {"max_new_tokens": tokens, "temperature": 0}, "stream": stream}
    if video is not None:
        body["video_data"] = [str(video)]
    if rid:
        body["rid"] = rid
    if session:
        body["session_params"] = session
    return body


def _ids(response) -> list:
    assert response.status_code == 200, response.text[:300]
    return response.json()["output_ids"]


def _forwards(server) -> float:
    for line in requests.get(server.url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("mosaic:forwards_total"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _abort_once_running(server, body) -> dict:
    """Send ``body`` (with a rid and many new tokens) and abort it once the scheduler ran a forward for it."""
    result, before = {}, _forwards(server)
    worker = threading.Thread(target=lambda: result.update(r=_post(server, "/generate", body)))
    worker.start()
    deadline = time.monotonic() + 120
    while _forwards(server) <= before:  # the event: a forward ran (the request is in the scheduler)
        assert worker.is_alive() and time.monotonic() < deadline, "the server never started the request"
        time.sleep(0.02)
    _post(server, "/abort_request", {"rid": body["rid"]})
    worker.join(timeout=300)
    return result["r"].json()


def _first_token_then(server, body, action) -> None:
    """Stream ``body``; after the first token arrives, ``action("abort")`` aborts by rid, ``"hang_up"`` closes."""
    with _post(server, "/generate", body, stream=True) as response:
        for line in response.iter_lines():
            if line.startswith(b"data: {"):
                break  # the event: the first streamed token
        if action == "abort":
            _post(server, "/abort_request", {"rid": body["rid"]})
            for _ in response.iter_lines():  # drain until the server ends the aborted stream
                pass


def _clean(server, run):
    """``run()``'s answer from an empty cache (a clean run), then empty the cache again."""
    assert _post(server, "/flush_cache", {}).status_code == 200
    out = run()
    assert _post(server, "/flush_cache", {}).status_code == 200
    return out


def _healthy(server):
    assert server.alive() and requests.get(server.url + "/health", timeout=30).status_code == 200


@pytest.mark.parametrize("kind", ["first-prefill", "mid-decode", "client-disconnect"])
def test_abort_then_follow_ups_equal_clean_runs(server, clips, kind):
    same = lambda: _ids(_post(server, "/generate", _body(USER.format(q="what happens?"), clips["long"])))
    other = lambda: _ids(_post(server, "/generate", _body(USER.format(q="colors?"), clips["short"])))
    clean_same, clean_other = _clean(server, same), _clean(server, other)
    # an abort after the prefill leaves the whole prompt in the radix tree, so the follow-up is a cache hit;
    # its clean twin is the same request asked twice from an empty cache (the answer depends on how much
    # of the prompt was cached: the question's selection is chosen by the queries of the tokens prefilled)
    clean_cached = _clean(server, lambda: (same(), same())[1])
    body = _body(USER.format(q="what happens?"), clips["long"], tokens=256, rid=f"abort-{kind}",
                 stream=kind != "first-prefill")
    if kind == "first-prefill":
        aborted = _abort_once_running(server, body)
        assert "abort" in json.dumps(aborted.get("meta_info", aborted)).lower(), aborted
    else:
        _first_token_then(server, body, "abort" if kind == "mid-decode" else "hang_up")
    _healthy(server)
    expected = clean_same if kind == "first-prefill" else clean_cached
    assert same() == expected  # the same conversation again (it reuses what the aborted one cached)
    assert other() == clean_other  # a new conversation
    _healthy(server)


def _session_run(server, chunks, *, abort_last=False):
    """Open a streaming session, append ``chunks`` (videos) turn by turn, optionally abort the last chunk
    while it prefills, then ask a question; returns the question's output ids."""
    sid = _post(server, "/open_session", {"capacity_of_str_len": 100000, "streaming": True}).json()
    rid = None
    try:
        for i, video in enumerate(chunks):
            text = ("<|im_start|>user\n" if i == 0 else "") + CHUNK
            body = _body(text, video, tokens=1, session={"id": sid, "rid": rid})
            if abort_last and i == len(chunks) - 1:
                body.update(rid=f"chunk-{sid}", sampling_params={"max_new_tokens": 256, "temperature": 0})
                _abort_once_running(server, body)
                continue
            response = _post(server, "/generate", body)
            assert response.status_code == 200, response.text[:300]
            rid = response.json()["meta_info"]["id"]
        return _ids(_post(server, "/generate", _body(QUESTION, session={"id": sid, "rid": rid})))
    finally:
        _post(server, "/close_session", {"session_id": sid})


def test_abort_of_a_streaming_chunk_then_the_session_goes_on(server, clips):
    clean = _clean(server, lambda: _session_run(server, [clips["short"]]))
    clean_new = _clean(server, lambda: _session_run(server, [clips["short"], clips["short"]]))
    # the aborted chunk leaves the session as it was before that chunk: the question sees chunk 1 only
    assert _session_run(server, [clips["short"], clips["long"]], abort_last=True) == clean
    _healthy(server)
    assert _session_run(server, [clips["short"], clips["short"]]) == clean_new  # a new session afterwards
    _healthy(server)
    # every finished turn released its per-request state (a streaming session keeps the turn's KV row and
    # SGLang skips on_release for it; that leaked before): only the probe itself is live in its forward
    assert _post(server, "/generate", _body("hello", tokens=1)).status_code == 200
    assert _gauge(server, "mosaic:live_requests") == 1


def _gauge(server, name: str) -> float:
    for line in requests.get(server.url + "/metrics", timeout=30).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not on /metrics")


def test_session_closed_mid_turn_releases_everything_when_the_turn_ends(server, clips):
    """``/close_session`` while a chunk of the session is still running: SGLang defers the close until the
    turn finishes; the turn then answers in full, and everything Mosaic held for the session (request
    records, selection rows, the host tier's locked rows) is released with it."""
    clean_new = _clean(server, lambda: _session_run(server, [clips["short"], clips["short"]]))
    sid = _post(server, "/open_session", {"capacity_of_str_len": 100000, "streaming": True}).json()
    first = _post(server, "/generate", _body("<|im_start|>user\n" + CHUNK, clips["short"], tokens=1,
                                             session={"id": sid, "rid": None}))
    assert first.status_code == 200, first.text[:300]
    body = _body(CHUNK, clips["long"], tokens=64, rid=f"closing-{sid}",
                 session={"id": sid, "rid": first.json()["meta_info"]["id"]})
    result, before = {}, _forwards(server)
    worker = threading.Thread(target=lambda: result.update(r=_post(server, "/generate", body)))
    worker.start()
    deadline = time.monotonic() + 120
    while _forwards(server) <= before:  # the event: the chunk is in the scheduler
        assert worker.is_alive() and time.monotonic() < deadline, "the server never started the chunk"
        time.sleep(0.02)
    assert _post(server, "/close_session", {"session_id": sid}).status_code == 200
    worker.join(timeout=300)
    turn = result["r"]
    assert turn.status_code == 200, turn.text[:300]
    assert turn.json()["meta_info"]["finish_reason"]["type"] in ("length", "stop")  # the turn ran to its end
    _healthy(server)
    # the close took effect when the turn ended: SGLang refuses a further turn, naming the session
    after = _post(server, "/generate", _body(QUESTION, session={"id": sid, "rid": turn.json()["meta_info"]["id"]}))
    assert after.status_code == 400 and f"session id {sid} does not exist" in after.text, after.text[:300]
    assert _session_run(server, [clips["short"], clips["short"]]) == clean_new  # a new session afterwards
    _healthy(server)
    assert _post(server, "/generate", _body("hello", tokens=1)).status_code == 200
    assert _gauge(server, "mosaic:live_requests") == 1  # only the probe, in its own forward
