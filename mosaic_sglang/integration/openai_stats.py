"""Mosaic's per-request statistics for OpenAI-API clients, streaming included.

SGLang's ``/v1/chat/completions`` keeps ``meta_info`` (where `output_streamer` puts the stats) to itself
unless ``return_meta_info`` is set, and never sends it when streaming. With Mosaic on:

* a non-streaming response carries ``metadata["mosaic"]`` = one `RequestStats` dict per choice;
* a streamed one carries the same in the final usage chunk (``stream_options={"include_usage": true}``)
  under ``metadata["mosaic"]``.

Hooks (registered by `plugin.register`, active only where the tokenizer serves Mosaic):
AFTER ``OpenAIServingChat._build_chat_response``, AROUND ``OpenAIServingChat._generate_chat_stream``, and
AFTER ``TokenizerManager.__init__``, where `watch_outputs` wraps the Mosaic tokenizer's
``generate_request`` to remember each finished request's stats by rid for the stream's last chunk (bounded).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from .options import MOSAIC_BACKEND
from .output_streamer import META_INFO_KEY

__all__ = ["register_openai_stats", "watch_outputs", "OPENAI_STATS_TARGETS"]

_CHAT = "sglang.srt.entrypoints.openai.serving_chat.OpenAIServingChat"
OPENAI_STATS_TARGETS = (f"{_CHAT}._build_chat_response", f"{_CHAT}._generate_chat_stream",
                        "sglang.srt.managers.tokenizer_manager.TokenizerManager.__init__")
_CAP = 4096  # finished requests whose stats wait for their stream's usage chunk
_FINISHED: "OrderedDict[str, list]" = OrderedDict()
_ACTIVE = False


def _remember(out: Any) -> None:
    for item in out if isinstance(out, list) else [out]:
        meta = item.get("meta_info", {}) if isinstance(item, dict) else {}
        stats = meta.get(META_INFO_KEY)
        if stats and meta.get("finish_reason") is not None:
            _FINISHED[meta["id"]] = stats
            while len(_FINISHED) > _CAP:
                _FINISHED.popitem(last=False)


def watch_outputs(tokenizer_manager) -> None:
    """Wrap ``tokenizer_manager.generate_request`` (an async generator) to remember finished stats."""
    global _ACTIVE
    original = tokenizer_manager.generate_request

    async def generate_request(*args, **kwargs):
        async for out in original(*args, **kwargs):
            _remember(out)
            yield out

    tokenizer_manager.generate_request = generate_request
    _ACTIVE = True


def _on_tokenizer_manager(result, self, *args, **kwargs):
    if getattr(self.server_args, "attention_backend", None) == MOSAIC_BACKEND:
        watch_outputs(self)
    return None


def _on_chat_response(result, self, request, ret, created, *args, **kwargs):
    if not _ACTIVE or not hasattr(result, "metadata"):
        return None
    stats = [(item.get("meta_info", {}).get(META_INFO_KEY) or [None])[-1] for item in ret]
    for item in ret:
        _FINISHED.pop(item.get("meta_info", {}).get("id"), None)
    if any(s is not None for s in stats):
        result.metadata = {**(result.metadata or {}), "mosaic": stats}
    return result


def _with_stats(chunk: str) -> str:
    """The usage chunk (no choices, usage set) gains ``metadata.mosaic``; other chunks pass unchanged."""
    if not chunk.startswith("data: {") or '"usage":{' not in chunk or '"choices":[]' not in chunk:
        return chunk
    body = json.loads(chunk[len("data: "):])
    stats = _FINISHED.pop(body.get("id"), None)
    if stats is None:
        return chunk
    body["metadata"] = {**(body.get("metadata") or {}), "mosaic": [stats[-1]]}
    return "data: " + json.dumps(body) + "\n\n"


def _around_chat_stream(original, self, *args, **kwargs):
    async def stream():
        async for chunk in original(self, *args, **kwargs):
            yield _with_stats(chunk) if _ACTIVE and isinstance(chunk, str) else chunk

    return stream()


def register_openai_stats(hook_registry: Any, hook_type: Any) -> None:
    response, stream, tokenizer = OPENAI_STATS_TARGETS
    hook_registry.register(tokenizer, _on_tokenizer_manager, hook_type.AFTER)
    hook_registry.register(response, _on_chat_response, hook_type.AFTER)
    hook_registry.register(stream, _around_chat_stream, hook_type.AROUND)
