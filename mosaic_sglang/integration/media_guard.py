"""The media guard's SGLang hooks: refuse bad media before SGLang opens, fetches or decodes it.

Active only in a process whose tokenizer serves ``--attention-backend mosaic`` (stock SGLang serving
without Mosaic is untouched). Four hooks, registered by `plugin.register`:

* AROUND ``TokenizerManager._validate_mm_limits`` (called for every request with media — ``/generate``,
  ``/v1/chat/completions``, sessions, batches — before anything is loaded): `check_request_media`
  classifies each ``video_data`` item and counts the prompt's video placeholders.
* AFTER ``TokenizerManager.__init__``: builds the process's `MediaPolicy` and wraps the instance's
  ``mm_processor.process_mm_data_async`` so that every failure there becomes one ``MediaRefused``
  (a 400 without server paths or decoder text; the original goes to the server log).
* AFTER ``sglang.srt.utils.common._assert_media_url_allowed`` (SGLang's per-hop URL check, run on the first
  URL and on every redirect): the address rule of `mosaic_sglang.media.addresses`.
* BEFORE ``VideoDecoderWrapper.__init__``: `probe_container` on the exact path or bytes about to be
  decoded (downloads included).
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from ..config import MOSAIC_CONFIG, MosaicConfig
from ..media import (MediaPolicy, MediaRefused, check_request_media, check_side_media, local_path_refused,
                     probe_container, url_refusal)
from .options import MOSAIC_BACKEND, config_from_env

__all__ = ["register_media_guard", "active_policy", "activate", "MEDIA_GUARD_TARGETS"]

logger = logging.getLogger(__name__)

_TOKENIZER = "sglang.srt.managers.tokenizer_manager.TokenizerManager"
MEDIA_GUARD_TARGETS = (
    f"{_TOKENIZER}.__init__",
    f"{_TOKENIZER}._validate_mm_limits",
    "sglang.srt.utils.common._assert_media_url_allowed",
    "sglang.srt.utils.video_decoder.VideoDecoderWrapper.__init__",
)

_POLICY: Optional[MediaPolicy] = None


def active_policy() -> Optional[MediaPolicy]:
    """The process's policy, or None where no Mosaic tokenizer runs (then nothing is checked)."""
    return _POLICY


def activate(policy: Optional[MediaPolicy]) -> None:
    """Make ``policy`` the process's (None turns the guard off)."""
    global _POLICY
    _POLICY = policy


def _video_placeholder(tokenizer_manager) -> tuple[Optional[str], Optional[int]]:
    tokens = getattr(getattr(tokenizer_manager, "mm_processor", None), "mm_tokens", None)
    token = getattr(tokens, "video_token", None)
    return (token if isinstance(token, str) else None), getattr(tokens, "video_token_id", None)


def _on_validate_mm_limits(original, self, obj, *args, **kwargs):
    policy = _POLICY
    if policy is not None and getattr(obj, "video_data", None) is not None:
        token, token_id = _video_placeholder(self)
        prompt = obj.text if obj.text is not None else obj.input_ids
        sources = check_request_media(obj.video_data, policy, prompt=prompt, placeholder=token,
                                      placeholder_id=token_id)
        # hand SGLang the canonical items (raw base64 as a data: URL: never looked up as a path)
        items = [source.item for source in sources]
        obj.video_data = items if isinstance(obj.video_data, list) else items[0]
    if policy is not None:
        for kind in ("image_data", "audio_data"):
            check_side_media(getattr(obj, kind, None), kind, policy)
    return original(self, obj, *args, **kwargs)


def _find_refusal(error: BaseException) -> Optional[MediaRefused]:
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, MediaRefused):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _guard_processor(processor) -> None:
    original = processor.process_mm_data_async

    async def process_mm_data_async(*args, **kwargs):
        try:
            return await original(*args, **kwargs)
        except Exception as error:  # every media failure: one client error, the cause in the server log
            refused = _find_refusal(error)
            if refused is not None:
                raise refused from None
            request = kwargs.get("request_obj")
            kind = "video_data" if getattr(request, "video_data", None) is not None else "media"
            logger.warning("mosaic media guard: media processing failed (answered 400)", exc_info=True)
            raise MediaRefused("decode", kind, "the media could not be decoded") from None

    processor.process_mm_data_async = process_mm_data_async


def _on_tokenizer_manager(result, self, *args, **kwargs):
    server_args = self.server_args
    if getattr(server_args, "attention_backend", None) != MOSAIC_BACKEND:
        return None
    # fail closed: a Mosaic tokenizer started without the launch hooks (no exported config) opens no path
    config = config_from_env() if MOSAIC_CONFIG.read() else MosaicConfig(allowed_media_dirs=())
    policy = MediaPolicy.from_config(config, allowed_hosts=getattr(server_args, "allowed_media_domains", None) or ())
    activate(policy)
    if getattr(self, "mm_processor", None) is not None:
        _guard_processor(self.mm_processor)
    logger.info("mosaic media guard: local paths %s; hosts %s", "anywhere" if policy.allowed_dirs is None else
                (list(policy.allowed_dirs) or "refused"), list(policy.allowed_hosts) or "public addresses only")
    return None


def _on_url_check(result, url, *args, **kwargs):
    policy = _POLICY
    if policy is not None:
        reason = url_refusal(url, allowed_hosts=policy.allowed_hosts)
        if reason is not None:
            raise MediaRefused("address", "media URL", f"{reason}; list the host in --allowed-media-domains")
    return None


def _before_decoder(self, source, *args, **kwargs):
    policy = _POLICY
    if policy is None:
        return None
    if isinstance(source, str) and not policy.path_allowed(source):
        raise local_path_refused("video")
    if isinstance(source, (str, bytes, bytearray)):
        probe_container(source, "video", policy)
    return None


def register_media_guard(hook_registry: Any, hook_type: Any) -> None:
    """Register the four hooks (``hook_registry`` is SGLang's ``HookRegistry``)."""
    init, validate, url_check, decoder = MEDIA_GUARD_TARGETS
    hook_registry.register(init, _on_tokenizer_manager, hook_type.AFTER)
    hook_registry.register(validate, _on_validate_mm_limits, hook_type.AROUND)
    hook_registry.register(url_check, _on_url_check, hook_type.AFTER)
    hook_registry.register(decoder, _before_decoder, hook_type.BEFORE)
