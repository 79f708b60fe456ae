"""One streamed ``/v1/chat/completions`` request, timed the way SGLang's ``bench_serving`` times it.

`chat_stream` posts a chat request with ``"stream": true`` and ``stream_options.include_usage`` and
reads the server-sent events as they arrive: the first content token's arrival is the **TTFT**, the gaps
between later content chunks are the **inter-token latencies**, the final usage chunk gives the prompt /
completion / cached token counts and, from a Mosaic server, ``metadata["mosaic"]`` (one statistics dict
per choice: context, attended and device tokens, clusters, host copies). Times are ``time.perf_counter``
seconds on the client.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import List, Optional

import requests

__all__ = ["ChatResult", "chat_stream", "video_message", "warm_up"]


@dataclass
class ChatResult:
    """What one streamed chat request returned.

    Attributes:
        text: the assistant's content.
        success: a 200 response that finished; otherwise ``error`` says why.
        ttft: seconds from sending to the first content token (0 if none came).
        latency: seconds from sending to the end of the stream.
        itl: seconds between consecutive content chunks after the first.
        start_time: ``perf_counter`` when the request was sent.
        prompt_tokens, completion_tokens, cached_tokens: from the usage chunk.
        mosaic: the server's Mosaic statistics of the request (None from a server without Mosaic).
        status: the HTTP status (0 if the request never got one).
    """

    text: str = ""
    success: bool = False
    error: str = ""
    ttft: float = 0.0
    latency: float = 0.0
    itl: List[float] = field(default_factory=list)
    start_time: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    mosaic: Optional[dict] = None
    status: int = 0

    @property
    def context_tokens(self) -> int:
        """Positions the request's last forward saw (its prompt and all but the last generated token)."""
        return self.prompt_tokens + max(0, self.completion_tokens - 1)

    @property
    def attended_fraction(self) -> float:
        """Attended / context tokens at the request's last forward (1.0 without Mosaic: dense attends all)."""
        if not self.mosaic or not self.mosaic.get("context_tokens"):
            return 1.0
        return self.mosaic["attended_tokens"] / self.mosaic["context_tokens"]

    @property
    def device_kv_tokens(self) -> int:
        """KV slots the request held on the device at its peak: every context token without Mosaic;
        with it, its largest device-resident count plus its video's device cluster cache."""
        if not self.mosaic:
            return self.context_tokens
        return int(self.mosaic.get("max_device_tokens", 0)) + int(self.mosaic.get("cluster_cache_tokens", 0))


def video_message(video_url: str, text: str) -> dict:
    """A user message with one ``video_url`` part followed by ``text``."""
    return {"role": "user", "content": [{"type": "video_url", "video_url": {"url": video_url}},
                                        {"type": "text", "text": text}]}


def chat_stream(base_url: str, messages: list, *, max_tokens: int, temperature: float = 0.0,
                timeout_s: float = 600.0, extra_body: Optional[dict] = None,
                session: Optional[requests.Session] = None) -> ChatResult:
    """Send one streamed chat completion to ``base_url`` (e.g. ``http://127.0.0.1:30000``); never raises for
    a refused or failed request: the result's ``success`` / ``error`` / ``status`` say what happened."""
    body = {"model": "default", "messages": messages, "max_tokens": max_tokens, "temperature": temperature,
            "stream": True, "stream_options": {"include_usage": True}, **(extra_body or {})}
    out = ChatResult(start_time=time.perf_counter())
    http = session or requests
    parts: List[str] = []
    last = None
    try:
        with http.post(base_url.rstrip("/") + "/v1/chat/completions", json=body, stream=True,
                       timeout=timeout_s) as reply:
            out.status = reply.status_code
            if reply.status_code != 200:
                out.error = f"HTTP {reply.status_code}: {reply.text[:300]}"
                out.latency = time.perf_counter() - out.start_time
                return out
            for line in reply.iter_lines():
                if not line or not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    out.error = str(chunk["error"])[:300]
                    break
                now = time.perf_counter()
                for choice in chunk.get("choices") or []:
                    delta = (choice.get("delta") or {}).get("content")
                    if delta:
                        if last is None:
                            out.ttft = now - out.start_time
                        else:
                            out.itl.append(now - last)
                        last = now
                        parts.append(delta)
                usage = chunk.get("usage")
                if usage:
                    out.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                    out.completion_tokens = int(usage.get("completion_tokens") or 0)
                    details = usage.get("prompt_tokens_details") or {}
                    out.cached_tokens = int(details.get("cached_tokens") or 0)
                    stats = (chunk.get("metadata") or {}).get("mosaic")
                    if stats:
                        out.mosaic = dict(stats[0] if isinstance(stats, list) else stats)
    except (requests.RequestException, ValueError) as error:
        out.error = f"{type(error).__name__}: {error}"[:300]
    out.latency = time.perf_counter() - out.start_time
    out.text = "".join(parts)
    out.success = not out.error
    return out


def warm_up(base_url: str, video_url: str, *, max_tokens: int = 2) -> ChatResult:
    """One unmeasured request with a video (as SGLang's ``bench_serving`` sends before timing): the
    server's first video request pays one-time costs (kernel and processor set-up, allocator growth)
    that would otherwise land in the first measured TTFT. Pass a clip the measured set does not use, so
    that no measured prefix is cached by it."""
    return chat_stream(base_url, [video_message(video_url, "Describe the video.")], max_tokens=max_tokens)
