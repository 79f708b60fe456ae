"""Multi-turn question answering about one video through SGLang's native ``/generate`` endpoint.

Each turn re-sends the whole conversation (video first), so SGLang's radix cache serves the video's
KV from the previous turn: ``cached_tokens`` grows with the conversation while only the new question
is computed. The response's ``meta_info`` carries Mosaic's per-request statistics under ``"mosaic"``.
Every turn carries the video's routing key (`routing.py`), so behind ``sglang-router --policy manual``
the whole conversation reaches the replica that holds the video's KV.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, NamedTuple, Optional

import requests

from .routing import ROUTING_KEY_HEADER, routing_headers

__all__ = ["Turn", "VideoConversation"]


class Turn(NamedTuple):
    question: str
    answer: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    mosaic: dict


class VideoConversation:
    """A conversation about ``video`` with the model served at ``url``.

    Args:
        url: server base URL, e.g. ``http://127.0.0.1:30000``.
        tokenizer_path: folder of the served model (its chat template renders the prompt).
        video: path of the video file (decoded by the server).
        system: optional system message.
        routing_key: the ``x-smg-routing-key`` header value; None: the video's own key
            (`video_routing_key`), so conversations about the same clip share a replica.
    """

    def __init__(self, url: str, tokenizer_path: str | Path, video: str | Path, *, system: Optional[str] = None,
                 routing_key: Optional[str] = None):
        from transformers import AutoTokenizer

        self.url = url.rstrip("/")
        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path))
        self.video = str(video)
        self.headers = routing_headers(self.video) if routing_key is None else {ROUTING_KEY_HEADER: routing_key}
        self.messages: List[dict] = [{"role": "system", "content": system}] if system else []
        self.turns: List[Turn] = []

    def prompt_for(self, question: str) -> str:
        content = [{"type": "text", "text": question}]
        if not self.turns:
            content.insert(0, {"type": "video", "video": self.video})
        messages = self.messages + [{"role": "user", "content": content}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def ask(self, question: str, *, max_new_tokens: int = 16, temperature: float = 0.0, timeout_s: float = 300) -> Turn:
        """Ask one question; the answer joins the conversation for the next turn."""
        payload = {
            "text": self.prompt_for(question),
            "video_data": [self.video],
            "sampling_params": {"max_new_tokens": max_new_tokens, "temperature": temperature},
        }
        response = requests.post(self.url + "/generate", json=payload, headers=self.headers, timeout=timeout_s)
        if response.status_code != 200:
            raise RuntimeError(f"/generate returned {response.status_code}: {response.text[:500]}")
        body = response.json()
        meta = body["meta_info"]
        content = [{"type": "text", "text": question}]
        if not self.turns:
            content.insert(0, {"type": "video", "video": self.video})
        self.messages += [
            {"role": "user", "content": content},
            {"role": "assistant", "content": body["text"]},
        ]
        stats = meta.get("mosaic") or [{}]
        turn = Turn(
            question=question,
            answer=body["text"],
            prompt_tokens=int(meta["prompt_tokens"]),
            cached_tokens=int(meta.get("cached_tokens", 0)),
            completion_tokens=int(meta.get("completion_tokens", 0)),
            mosaic=stats[-1] if isinstance(stats, list) else stats,
        )
        self.turns.append(turn)
        return turn
