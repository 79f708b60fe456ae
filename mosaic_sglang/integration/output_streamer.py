"""Reports each request's Mosaic statistics in its response: ``meta_info['mosaic'] = [stats]``.

Uses SGLang's sanctioned route for extra response fields: the scheduler's
``get_output_streamer_class`` returns a `SchedulerOutputStreamer` subclass that opts in with
``has_additional_customized_info``; the tokenizer manager copies the values into ``meta_info``.
"""

from __future__ import annotations

import dataclasses
from typing import List

from sglang.srt.managers.scheduler_components.output_streamer import SchedulerOutputStreamer

from .runtime import get_runtime

__all__ = ["MosaicOutputStreamer", "META_INFO_KEY", "output_streamer_class_hook"]

META_INFO_KEY = "mosaic"


class MosaicOutputStreamer(SchedulerOutputStreamer):
    has_additional_customized_info = True

    def build_additional_customized_info(self, reqs: List) -> dict[str, list]:
        runtime = get_runtime()
        values = []
        for req in reqs:
            finished = req.finished()
            stats = runtime.take_stats(req.rid, finished=finished)
            values.append([dataclasses.asdict(stats)] if (finished and stats is not None) else [])
        return {META_INFO_KEY: values}


def output_streamer_class_hook(original, scheduler):
    """AROUND hook on ``Scheduler.get_output_streamer_class``: use ours when mosaic attention is on."""
    cls = original(scheduler)
    if cls is SchedulerOutputStreamer and _mosaic_attention_enabled(scheduler):
        return MosaicOutputStreamer
    return cls


def _mosaic_attention_enabled(scheduler) -> bool:
    from .options import MOSAIC_BACKEND

    args = getattr(scheduler, "server_args", None)
    names = {getattr(args, f, None) for f in ("attention_backend", "decode_attention_backend", "prefill_attention_backend")}
    return MOSAIC_BACKEND in names
