"""The main job's path: a real `sglang.launch_server --enable-mosaic` subprocess, a multi-turn video
conversation over HTTP, Mosaic stats in meta_info; bad video input gives a 4xx and leaves the server
healthy (SGLang's strict idle memory check would kill the scheduler on a leaked KV slot)."""

from __future__ import annotations

import pytest
import requests

from mosaic_sglang.frontend.server import SGLangServer, cpu_server_args
from mosaic_sglang.frontend.video_chat import VideoConversation

# a scheduler that dies (e.g. SGLang's strict memory check) leaves the engine waiting: fail, don't hang
pytestmark = [pytest.mark.engine, pytest.mark.timeout(480)]


@pytest.fixture(scope="module")
def server(tiny_vl_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    args = ["--enable-mosaic", "--mosaic-budget", "64", *cpu_server_args()]
    with SGLangServer(tiny_vl_model, args, log_path=log) as srv:
        yield srv


def test_multi_turn_video_conversation(server, tiny_vl_model, video_dir):
    chat = VideoConversation(server.url, tiny_vl_model, video_dir / "a.mp4")
    first = chat.ask("what happens in the video?", max_new_tokens=4)
    second = chat.ask("and then?", max_new_tokens=4)
    third = chat.ask("what color is it?", max_new_tokens=4)
    for turn in (first, second, third):
        assert turn.completion_tokens == 4
        assert turn.mosaic["context_tokens"] == turn.prompt_tokens + turn.completion_tokens - 1
        assert turn.mosaic["visual_tokens"] > 100
        assert turn.mosaic["attended_tokens"] <= turn.mosaic["context_tokens"]
    # each turn re-sends the conversation: everything up to the previous answer comes from the cache
    assert second.cached_tokens >= first.prompt_tokens
    assert third.cached_tokens >= second.prompt_tokens


def _generate(server, video):
    payload = {
        "text": "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>hi<|im_end|>\n",
        "video_data": [str(video)],
        "sampling_params": {"max_new_tokens": 2, "temperature": 0},
    }
    return requests.post(server.url + "/generate", json=payload, timeout=300)


@pytest.mark.parametrize("content", [b"", b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100], ids=["empty", "corrupt"])
def test_bad_video_is_a_client_error_and_server_survives(server, tmp_path, video_dir, content):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    response = _generate(server, bad)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert server.alive()
    assert _generate(server, video_dir / "b.mp4").status_code == 200
    assert requests.get(server.url + "/health", timeout=10).status_code == 200
