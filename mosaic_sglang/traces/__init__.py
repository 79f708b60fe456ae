"""KV traces for the retrieval benchmark.

- `synthetic_trace` / `SyntheticTraceSpec`: generated video-like KV with a planted needle (cheap, no model).
- `caption_stream_trace`: real SmolLM2-135M Q/K/V over a caption stream (imported lazily: needs transformers).
"""

from __future__ import annotations

from typing import Any

from .synthetic import SyntheticTraceSpec, synthetic_trace
from .trace import Trace

__all__ = ["Trace", "SyntheticTraceSpec", "synthetic_trace", "caption_stream_trace", "CaptionStream"]


def __getattr__(name: str) -> Any:
    if name in ("caption_stream_trace", "CaptionStream"):
        from . import caption_stream

        return getattr(caption_stream, name)
    raise AttributeError(f"module 'mosaic_sglang.traces' has no attribute {name!r}")
