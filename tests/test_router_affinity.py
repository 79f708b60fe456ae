"""Data parallel and routing on loopback: one Mosaic server with ``--dp-size 2`` (two scheduler
processes, each with its own radix tree and host tier) behind SGLang's own ``sglang-router`` in
``--dp-aware`` mode. With the ``manual`` policy and each video's routing key (`frontend/routing.py`),
every follow-up question reaches the rank that holds its video's KV: ``cached_tokens`` covers the whole
previous turn. Round-robin routing, the negative control, sends a follow-up to the other rank and
recomputes the video. A streaming session on the DP server keeps every chunk on one rank with
``routed_dp_rank`` (the router does not proxy ``/open_session``)."""

from __future__ import annotations

import json

import pytest
import requests

from mosaic_sglang.frontend.router import SGLangRouter
from mosaic_sglang.frontend.server import SGLangServer, cpu_rank_binding, cpu_server_args
from mosaic_sglang.frontend.video_chat import VideoConversation
from mosaic_sglang.frontend.video_stream import VideoStream

pytestmark = [pytest.mark.engine, pytest.mark.timeout(600)]

DP = 2


@pytest.fixture(scope="module")
def server(tiny_vl_model, video_dir, tmp_path_factory):
    logs = tmp_path_factory.mktemp("dp")
    options = {"host_store_tokens": 8192, "allowed_media_dirs": [str(video_dir)]}
    args = ["--enable-mosaic", "--mosaic-budget", "48", "--mosaic-config", json.dumps(options), "--dp-size", str(DP),
            "--enable-streaming-session", *cpu_server_args(max_total_tokens=8192)]
    with SGLangServer(tiny_vl_model, args, log_path=logs / "server.log", env=cpu_rank_binding(DP)) as srv:
        yield srv, logs


def _router(server, logs, policy):
    srv, _ = server
    return SGLangRouter([srv.url], policy=policy, dp_aware=True, dp_size=DP, log_path=logs / f"router-{policy}.log")


def _flush(server):
    assert requests.post(server[0].url + "/flush_cache", timeout=60).status_code == 200


def test_round_robin_sends_the_follow_up_to_the_other_rank(server, tiny_vl_model, video_dir):
    _flush(server)
    with _router(server, server[1], "round_robin") as router:
        chat = VideoConversation(router.url, tiny_vl_model, video_dir / "a.mp4")
        first = chat.ask("what happens?", max_new_tokens=3)
        second = chat.ask("and then?", max_new_tokens=3)
    visual = first.mosaic["visual_tokens"]
    assert visual > 100 and second.cached_tokens < visual  # the other rank had never seen the video


def test_video_affinity_keeps_every_follow_up_on_the_rank_with_its_kv(server, tiny_vl_model, video_dir):
    _flush(server)
    with _router(server, server[1], "manual") as router:
        a = VideoConversation(router.url, tiny_vl_model, video_dir / "a.mp4")
        b = VideoConversation(router.url, tiny_vl_model, video_dir / "b.mp4")
        turns = {"a": [a.ask("what happens?", max_new_tokens=3)], "b": [b.ask("what happens?", max_new_tokens=3)]}
        for question in ("and then?", "what color is it?"):
            turns["a"].append(a.ask(question, max_new_tokens=3))
            turns["b"].append(b.ask(question, max_new_tokens=3))
        # a new conversation about video a: same key, so the same rank, which already holds the clip
        fresh = VideoConversation(router.url, tiny_vl_model, video_dir / "a.mp4").ask("what is it?", max_new_tokens=3)
    for name, conversation in turns.items():
        visual = conversation[0].mosaic["visual_tokens"]
        assert conversation[0].cached_tokens < visual  # first sight of the video on its rank
        for before, after in zip(conversation, conversation[1:]):
            assert after.cached_tokens >= before.prompt_tokens >= visual, (name, after)
    assert fresh.cached_tokens >= turns["a"][0].mosaic["visual_tokens"]


def _stream(url, rank):
    from test_video_stream import frames

    with VideoStream(url, chunk_frames=4, fps=2, routed_dp_rank=rank) as stream:
        reports = stream.push(frames(12))
        answer = stream.ask("what happens?", max_new_tokens=2)
    return reports, answer


def test_a_streaming_session_stays_on_its_rank(server):
    _flush(server)
    reports, answer = _stream(server[0].url, 1)
    for before, chunk in zip(reports, reports[1:]):  # every chunk extends the session on the same rank
        assert chunk.cached_tokens == before.prompt_tokens, (before, chunk)
    assert answer.cached_tokens == reports[-1].prompt_tokens
    # control: without a rank, SGLang's round robin hands the second chunk to the other rank's copy
    loose, _ = _stream(server[0].url, None)
    assert loose[1].cached_tokens < loose[0].prompt_tokens
