"""The request-level media checks: every video item classified, and the prompt's placeholders counted.

`check_request_media` runs on SGLang's tokenizer side before any media is opened or fetched (hooked in
`integration/media_guard.py`); the container check (`probe.probe_container`) runs where SGLang's decoder
is created, on the exact path or bytes it is about to decode (that also covers downloaded URLs).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

from .addresses import Resolver, resolve_host
from .policy import MediaPolicy
from .refusal import MediaRefused
from .sources import MediaSource, check_side_item, classify_video_item

__all__ = ["check_request_media", "check_side_media", "count_placeholders"]


def count_placeholders(prompt: Union[str, Sequence[int], None], *, token: Optional[str],
                       token_id: Optional[int]) -> Optional[int]:
    """Video placeholders in ``prompt`` (text: occurrences of ``token``; ids: of ``token_id``), or None
    when the prompt or the placeholder is unknown."""
    if isinstance(prompt, str) and token:
        return prompt.count(token)
    if isinstance(prompt, (list, tuple)) and token_id is not None and all(isinstance(t, int) for t in prompt):
        return sum(1 for t in prompt if t == token_id)
    return None


def check_request_media(video_data: Any, policy: MediaPolicy, *, prompt=None, placeholder: Optional[str] = None,
                        placeholder_id: Optional[int] = None, resolve: Resolver = resolve_host) -> list[MediaSource]:
    """Classify each item of ``video_data`` (one item or a list) and check the prompt names each video.

    Raises:
        MediaRefused: the first item that breaks a rule, or ``placeholder`` when the prompt carries fewer
            video placeholders than videos (SGLang would otherwise drop the videos silently).
    """
    if video_data is None:
        return []
    items = video_data if isinstance(video_data, list) else [video_data]
    sources = [classify_video_item(item, f"video_data[{i}]", policy, resolve=resolve) for i, item in enumerate(items)]
    found = count_placeholders(prompt, token=placeholder, token_id=placeholder_id)
    if found is not None and found < len(items):
        raise MediaRefused(
            "placeholder", "video_data",
            f"{len(items)} video(s) but {found} video placeholder(s) {placeholder!r} in the prompt; each video "
            "needs one (chat templates insert it; a raw /generate prompt must carry it)")
    return sources


def check_side_media(data: Any, kind: str, policy: MediaPolicy, *, resolve: Resolver = resolve_host) -> None:
    """Path, scheme and address rules for every string item of ``image_data`` / ``audio_data``."""
    if data is None:
        return
    for i, item in enumerate(data if isinstance(data, list) else [data]):
        for j, sub in enumerate(item if isinstance(item, list) else [item]):
            check_side_item(sub, f"{kind}[{i}]" + (f"[{j}]" if isinstance(item, list) else ""), policy,
                            resolve=resolve)
