"""The media guard through a real ``sglang.launch_server --enable-mosaic``: every case of the bad-media
corpus gets a 4xx naming its rule, nothing reaches the loopback media server, and afterwards the server is
healthy and holds no KV slot or host page (SGLang's strict idle memory check is on: a leak kills it)."""

from __future__ import annotations

import json

import pytest
import requests

from mosaic_sglang.frontend.server import SGLangServer, cpu_server_args
from mosaic_sglang.testing.bad_media import CASES, CORPUS_LIMITS, write_corpus

from engine_support import strict_checks
from loopback_media import LoopbackMediaServer

pytestmark = [pytest.mark.engine, pytest.mark.timeout(480)]

PROMPT = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>hi<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    with LoopbackMediaServer(root) as media:
        write_corpus(root, media_url=media.url)
        yield root, media


@pytest.fixture(scope="module")
def server(tiny_vl_model, corpus, tmp_path_factory):
    root, _ = corpus
    options = {"allowed_media_dirs": [str(root)], "host_store_tokens": 8192, **CORPUS_LIMITS}
    args = ["--enable-mosaic", "--mosaic-budget", "32", "--mosaic-config", json.dumps(options), "--enable-metrics",
            "--context-length", "2048", *cpu_server_args(max_total_tokens=8192)]
    log = tmp_path_factory.mktemp("guard") / "server.log"
    with strict_checks(), SGLangServer(tiny_vl_model, args, log_path=log) as srv:
        yield srv


def _generate(server, video, text=PROMPT, **extra):
    body = {"text": text, "video_data": video if isinstance(video, list) else [video],
            "sampling_params": {"max_new_tokens": 2, "temperature": 0}, **extra}
    return requests.post(server.url + "/generate", json=body, timeout=300)


def _gauge(server, name: str) -> float:
    for line in requests.get(server.url + "/metrics", timeout=30).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not on /metrics")


def _assert_refused(response, rule: str) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:400])
    body = response.text
    assert f"media refused [{rule}]" in body, body[:400]
    assert "Traceback" not in body and 'File "' not in body and ".py" not in body, body[:400]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_media_is_refused_by_rule(server, corpus, case):
    root, media = corpus
    item = case.item.format(dir=root, media_url=media.url,
                            media_url_localhost=media.url.replace("127.0.0.1", "localhost"))
    if item.startswith("json:"):
        item = json.loads(item[len("json:"):])
    _assert_refused(_generate(server, [item]), case.rule)
    assert media.total_hits == 0, dict(media.hits)  # refused before any fetch (playlists included)


def test_refused_paths_read_the_same_whether_they_exist(server):
    existing, missing = _generate(server, "/etc/hostname"), _generate(server, "/etc/no-such-file")
    assert existing.status_code == missing.status_code == 400 and existing.json() == missing.json()


def test_prompt_and_api_level_refusals(server, corpus):
    root, media = corpus
    ok = str(root / "ok.mp4")
    _assert_refused(_generate(server, ok, text="no placeholder here"), "placeholder")
    _assert_refused(_generate(server, [ok, ok]), "placeholder")  # two videos, one placeholder
    for url in ("/etc/hostname", f"{media.url}/ok.mp4", "gopher://127.0.0.1/"):
        chat = {"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": "what happens?"}]}]}
        response = requests.post(server.url + "/v1/chat/completions", json=chat, timeout=300)
        assert response.status_code == 400 and "media refused" in response.text, response.text[:300]
    image = {"text": "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>\n",
             "image_data": ["/etc/hostname"], "sampling_params": {"max_new_tokens": 1}}
    _assert_refused(requests.post(server.url + "/generate", json=image, timeout=300), "local-path")
    unknown = _generate(server, ok, session_params={"id": "no-such-session"})
    assert 400 <= unknown.status_code < 500, unknown.text[:300]
    assert media.total_hits == 0


def test_server_is_healthy_and_holds_nothing_afterwards(server, corpus):
    root, media = corpus
    assert _generate(server, str(root / "ok.mp4")).status_code == 200  # a good clip still works
    assert server.alive() and requests.get(server.url + "/health", timeout=30).status_code == 200
    assert requests.post(server.url + "/flush_cache", timeout=60).status_code == 200
    text_only = {"text": "hello", "sampling_params": {"max_new_tokens": 1}}  # a forward publishes the gauges
    assert requests.post(server.url + "/generate", json=text_only, timeout=300).status_code == 200
    assert _gauge(server, "mosaic:host_store_used_tokens") == 0
    assert _gauge(server, "mosaic:cluster_cache_held_tokens") == 0
    assert media.total_hits == 0
