"""The media guard's SGLang hook functions, called directly (no server, no network traffic)."""

from __future__ import annotations

import asyncio

import pytest

from mosaic_sglang.integration import media_guard
from mosaic_sglang.media import MediaPolicy, MediaRefused


@pytest.fixture()
def policy(tmp_path):
    media_guard.activate(MediaPolicy(allowed_dirs=(str(tmp_path),)))
    yield media_guard.active_policy()
    media_guard.activate(None)


def test_every_redirect_hop_is_held_to_the_address_rule(policy):
    # SGLang calls _assert_media_url_allowed on the first URL and on each redirect target
    for url in ("http://127.0.0.1:8/v.mp4", "http://localhost:8/v.mp4", "http://[::1]/v", "http://169.254.169.254/"):
        with pytest.raises(MediaRefused, match=r"\[address\]"):
            media_guard._on_url_check(None, url)
    media_guard.activate(MediaPolicy(allowed_hosts=("127.0.0.1",)))
    media_guard._on_url_check(None, "http://127.0.0.1:8/v.mp4")  # listed by the operator
    media_guard.activate(None)
    media_guard._on_url_check(None, "http://127.0.0.1:8/v.mp4")  # no Mosaic tokenizer here: stock SGLang


def test_decoder_hook_checks_the_exact_source(policy, tmp_path):
    with pytest.raises(MediaRefused, match=r"\[local-path\]"):
        media_guard._before_decoder(object(), "/etc/hostname")
    with pytest.raises(MediaRefused, match=r"\[container\]"):
        media_guard._before_decoder(object(), b"just some downloaded text, not a video" * 10)
    media_guard._before_decoder(object(), [0, 1])  # frames already decoded: nothing to probe


def test_processor_failures_become_one_clean_refusal(caplog):
    class Processor:
        def __init__(self, error):
            self.error = error

        async def process_mm_data_async(self, *args, **kwargs):
            raise self.error

    def run(error):
        processor = Processor(error)
        media_guard._guard_processor(processor)
        with pytest.raises(MediaRefused) as err:
            asyncio.run(processor.process_mm_data_async(request_obj=type("R", (), {"video_data": ["x"]})()))
        return err.value

    leaked = run(RuntimeError("Error while loading data /srv/secret/clip.mp4: DECORDError at ndarray.cc:171"))
    assert leaked.rule == "decode" and "/srv" not in str(leaked) and "DECORD" not in str(leaked)
    assert "DECORDError" in caplog.text  # the operator still sees the cause
    inner = MediaRefused("max-side", "video", "too wide")
    try:
        try:
            raise inner
        except MediaRefused as e:
            raise ValueError("Error while loading data /srv/clip.mp4: Could not decode video") from e
    except ValueError as wrapped:
        assert run(wrapped) is inner  # SGLang's wrapping is peeled off: the rule reaches the client
