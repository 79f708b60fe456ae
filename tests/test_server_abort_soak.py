"""Sessions with aborts against a real `sglang.launch_server --enable-mosaic` with the host tier on:
requests aborted mid-prefill (long video in 128-token chunks, aborted by rid as soon as the server is
seen running its first chunk) and mid-decode (streaming client that hangs up after its first chunks),
interleaved with completed conversations. SGLang's strict busy/idle memory checks and KV page
invariant checks run in the server: a leaked or double-freed slot kills the scheduler. At the end,
after a cache flush, the host store is empty again and the server still answers correctly."""

from __future__ import annotations

import json

import random
import threading
import time

import pytest
import requests

from mosaic_sglang.frontend.server import SGLangServer, cpu_server_args
from mosaic_sglang.frontend.video_chat import VideoConversation

from engine_support import strict_checks

pytestmark = [pytest.mark.engine, pytest.mark.timeout(600)]

PROMPT = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>{q}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def server(tiny_vl_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("soak") / "server.log"
    args = ["--enable-mosaic", "--mosaic-budget", "48", "--chunked-prefill-size", "128",
            "--mosaic-config", json.dumps({"recent_window": 16, "max_cluster_size": 16, "host_store_tokens": 16384,
                                           "allowed_media_dirs": [str(tmp_path_factory.getbasetemp())]}),
            "--enable-metrics", *cpu_server_args()]
    with strict_checks(), SGLangServer(tiny_vl_model, args, log_path=log) as srv:
        yield srv


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    from mosaic_sglang.frontend.video import make_synthetic_video

    return make_synthetic_video(tmp_path_factory.mktemp("v") / "long.mp4", num_frames=48, size=112, num_scenes=4, seed=5)


def _payload(video, question, rid=None, stream=False, max_new_tokens=24):
    body = {"text": PROMPT.format(q=question), "video_data": [str(video)], "stream": stream,
            "sampling_params": {"max_new_tokens": max_new_tokens, "temperature": 0}}
    if rid:
        body["rid"] = rid
    return body


def _forwards(server) -> float:
    """``mosaic:forwards_total`` from the server's /metrics: forwards the mosaic backend has run."""
    for line in requests.get(server.url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("mosaic:forwards_total"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _abort_mid_prefill(server, video, rid) -> dict:
    """Start a long-video request and abort it by rid once the server has run a forward for it (the
    1.7K-token prompt needs ~14 chunked-prefill forwards of 128 tokens); returns its (aborted) response."""
    result = {}
    before = _forwards(server)

    def send():
        # 512 new tokens: even if the prefill outran the abort, the request cannot finish before it lands
        body = _payload(video, "what happens?", rid, max_new_tokens=512)
        result["response"] = requests.post(server.url + "/generate", json=body, timeout=300)

    worker = threading.Thread(target=send)
    worker.start()
    deadline = time.monotonic() + 120
    while _forwards(server) <= before:  # the event: the scheduler ran this request's first chunk
        assert worker.is_alive() and time.monotonic() < deadline, "the server never started the request"
        time.sleep(0.05)
    requests.post(server.url + "/abort_request", json={"rid": rid}, timeout=30)
    worker.join(timeout=300)
    return result["response"].json()


def _hang_up_mid_decode(server, video):
    with requests.post(server.url + "/generate", json=_payload(video, "describe it", stream=True, max_new_tokens=64),
                       stream=True, timeout=300) as response:
        for i, _ in enumerate(response.iter_lines()):
            if i >= 2:
                break  # closing the connection aborts the request on the server


def test_sessions_with_aborts_leave_no_leak(server, tiny_vl_model, long_video, video_dir):
    rng = random.Random(0)
    actions = ["prefill_abort", "decode_abort", "conversation"] * 2
    rng.shuffle(actions)
    for i, action in enumerate(actions):
        if action == "prefill_abort":
            aborted = _abort_mid_prefill(server, long_video, rid=f"soak-{i}")
            meta = aborted.get("meta_info", aborted)
            assert "abort" in str(meta.get("finish_reason", aborted)).lower(), aborted
            assert meta.get("completion_tokens", 0) < 512  # stopped before finishing
        elif action == "decode_abort":
            _hang_up_mid_decode(server, video_dir / "a.mp4")
        else:
            chat = VideoConversation(server.url, tiny_vl_model, video_dir / "b.mp4")
            chat.ask("what happens?", max_new_tokens=3)
            second = chat.ask("and then?", max_new_tokens=3)
            assert second.mosaic["host_tokens"] > 0  # the first turn's clusters went to host
        assert server.alive() and requests.get(server.url + "/health", timeout=30).status_code == 200
    assert requests.post(server.url + "/flush_cache", timeout=60).status_code == 200
    chat = VideoConversation(server.url, tiny_vl_model, video_dir / "a.mp4")
    turn = chat.ask("what happens?", max_new_tokens=3)
    assert turn.mosaic["host_store_used"] == 0 and turn.cached_tokens == 0
    assert server.alive()
