"""The main job's path: a real `sglang.launch_server --enable-mosaic` subprocess, a multi-turn video
conversation over HTTP, Mosaic stats in meta_info; bad video input gives a 4xx and leaves the server
healthy (SGLang's strict idle memory check would kill the scheduler on a leaked KV slot)."""

from __future__ import annotations

import json

import pytest
import requests

from mosaic_sglang import MosaicConfig
from mosaic_sglang.frontend.server import SGLangServer, cpu_server_args
from mosaic_sglang.frontend.video_chat import VideoConversation

# a scheduler that dies (e.g. SGLang's strict memory check) leaves the engine waiting: fail, don't hang
pytestmark = [pytest.mark.engine, pytest.mark.timeout(480)]

CONTEXT_LENGTH = 3072  # a 32 s clip (~4.6K video tokens) is over it
BUDGET = 64  # --mosaic-budget
SINKS, WINDOW = MosaicConfig().sink_tokens, MosaicConfig().recent_window  # the server runs the defaults


@pytest.fixture(scope="module")
def server(tiny_vl_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    options = {"host_store_tokens": 16384, "allowed_media_dirs": [str(tmp_path_factory.getbasetemp())]}
    args = ["--enable-mosaic", "--mosaic-budget", str(BUDGET), "--mosaic-config", json.dumps(options),
            "--allowed-media-domains", "127.0.0.1",  # the loopback media server of test_allowed_url_is_served
            "--enable-metrics", "--context-length", str(CONTEXT_LENGTH), *cpu_server_args()]
    with SGLangServer(tiny_vl_model, args, log_path=log) as srv:
        yield srv


def test_multi_turn_video_conversation(server, tiny_vl_model, video_dir):
    chat = VideoConversation(server.url, tiny_vl_model, video_dir / "a.mp4")
    first = chat.ask("what happens in the video?", max_new_tokens=4)
    second = chat.ask("and then?", max_new_tokens=4)
    third = chat.ask("what color is it?", max_new_tokens=4)
    for turn in (first, second, third):
        stats = turn.mosaic
        assert turn.completion_tokens == 4
        assert stats["context_tokens"] == turn.prompt_tokens + turn.completion_tokens - 1
        assert stats["visual_tokens"] > 100
        # real sparsity at budget 64: the last decode step attends the selected tokens (exactly the budget),
        # the text and the sinks + window its selection was chosen against
        text = stats["context_tokens"] - stats["visual_tokens"]
        assert stats["attended_tokens"] <= BUDGET + SINKS + WINDOW + text, stats
        assert stats["attended_tokens"] < stats["context_tokens"] / 2, stats
    # each turn re-sends the conversation: everything up to the previous answer comes from the cache
    assert second.cached_tokens >= first.prompt_tokens
    assert third.cached_tokens >= second.prompt_tokens
    # the first answer's video went to the host tier; later turns read their clusters back from it
    assert first.mosaic["host_tokens"] == 0 and second.mosaic["host_tokens"] > 100
    assert second.mosaic["host_copies"] > 0 and third.mosaic["cache_lookups"] > 0


def _metrics(server) -> dict:
    text = requests.get(server.url + "/metrics", timeout=30).text
    out = {}
    for line in text.splitlines():
        if line.startswith("mosaic:"):
            name, value = line.rsplit(" ", 1)
            out[name.split("{")[0]] = float(value)
    return out


def test_prometheus_metrics_on_sglangs_endpoint(server, tiny_vl_model, video_dir):
    from mosaic_sglang.integration.prometheus_metrics import METRIC_NAMES

    before = _metrics(server)
    assert set(METRIC_NAMES) <= set(before), sorted(set(METRIC_NAMES) - set(before))
    chat = VideoConversation(server.url, tiny_vl_model, video_dir / "b.mp4")
    chat.ask("what happens in the video?", max_new_tokens=2)
    turn = chat.ask("and then?", max_new_tokens=2)
    after = _metrics(server)
    assert after["mosaic:forwards_total"] >= before["mosaic:forwards_total"] + 4  # 2 prefills + decodes
    assert after["mosaic:offloaded_tokens_total"] > before["mosaic:offloaded_tokens_total"]
    assert after["mosaic:host_copies_total"] - before["mosaic:host_copies_total"] >= turn.mosaic["host_copies"] > 0
    assert after["mosaic:host_store_used_tokens"] > 0 and after["mosaic:indexed_videos"] >= 1
    assert after["mosaic:cluster_cache_held_tokens"] > 0


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


def test_oversized_video_is_a_client_error_and_leaks_nothing(server, tmp_path, video_dir):
    from mosaic_sglang.frontend.video import make_synthetic_video

    long_clip = make_synthetic_video(tmp_path / "long.mp4", num_frames=128, fps=4, size=112, num_scenes=4, seed=9)
    before = _metrics(server)
    response = _generate(server, long_clip)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert "context length" in response.text.lower() or "too long" in response.text.lower(), response.text[:300]
    assert server.alive()
    after = _metrics(server)
    assert after["mosaic:host_store_used_tokens"] == before["mosaic:host_store_used_tokens"]  # nothing offloaded
    assert _generate(server, video_dir / "b.mp4").status_code == 200


def test_allowed_url_is_served_and_private_paths_are_not(server, video_dir):
    """This server lists 127.0.0.1 in SGLang's --allowed-media-domains: the loopback media server is
    fetched once; the corpus server of test_media_guard_http (no list) refuses the same URL with 0 hits."""
    from loopback_media import LoopbackMediaServer

    with LoopbackMediaServer(video_dir) as media:
        response = _generate(server, f"{media.url}/b.mp4")
        assert response.status_code == 200, response.text[:300]
        assert media.hits["/b.mp4"] == 1
    refused = _generate(server, "/etc/hostname")  # outside allowed_media_dirs
    assert refused.status_code == 400 and "media refused [local-path]" in refused.text


def test_openai_chat_reports_the_cached_video_prefix(server, video_dir):
    """--enable-mosaic turns on --enable-cache-report: a second OpenAI chat turn on the same video shows
    the cached prefix in usage (it read 0 without it)."""
    messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": str(video_dir / "a.mp4")}},
                                             {"type": "text", "text": "what happens?"}]}]
    body = {"model": "m", "messages": messages, "max_tokens": 2, "temperature": 0}
    first = requests.post(server.url + "/v1/chat/completions", json=body, timeout=300).json()
    second = requests.post(server.url + "/v1/chat/completions", json=body, timeout=300).json()
    cached = (second["usage"].get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    assert cached >= first["usage"]["prompt_tokens"] // 2, second["usage"]


def test_openai_clients_get_mosaic_stats_streaming_or_not(server, video_dir):
    """Mosaic's per-request stats reach an OpenAI client: ``metadata.mosaic`` of the response, and of the
    final usage chunk when streaming (``stream_options.include_usage``)."""
    import json as _json

    messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": str(video_dir / "b.mp4")}},
                                             {"type": "text", "text": "and now?"}]}]
    body = {"model": "m", "messages": messages, "max_tokens": 3, "temperature": 0}
    plain = requests.post(server.url + "/v1/chat/completions", json=body, timeout=300).json()
    (stats,) = plain["metadata"]["mosaic"]
    assert stats["policy"] == "mosaic" and stats["visual_tokens"] > 100
    assert stats["context_tokens"] == plain["usage"]["prompt_tokens"] + plain["usage"]["completion_tokens"] - 1
    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    chunks = []
    with requests.post(server.url + "/v1/chat/completions", json=streamed, stream=True, timeout=300) as response:
        for line in response.iter_lines():
            if line.startswith(b"data: {"):
                chunks.append(_json.loads(line[6:]))
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 3
    (stream_stats,) = usage_chunk["metadata"]["mosaic"]
    assert stream_stats["visual_tokens"] == stats["visual_tokens"] and stream_stats["attended_tokens"] > 0
