"""Per-forward timing log of a scheduler process: how long each model forward took, dense or Mosaic.

With ``MOSAIC_FORWARD_LOG_DIR`` set, `plugin.register` wraps ``ModelRunner.forward`` (AROUND) so every
forward appends one JSON line to ``forward-<pid>.jsonl`` in that directory:

    {"mode": "decode" | "extend" | ..., "batch": B, "tokens": new tokens, "seq_len_max": ...,
     "backend": attention backend class, "seconds": forward wall time,
     "plan_s": ..., "select_s": ..., "index_s": ..., "rows_read": ...}

``seconds`` spans `ModelRunner.forward` (attention metadata, every layer, logits), so the scheduler's
own CPU work between forwards is not in it; on CUDA the device is synchronised before both clock
reads (a measurement mode: it costs the overlap it measures). ``plan_s`` / ``select_s`` / ``index_s``
are the host time the Mosaic backend spent planning the forward, selecting clusters inside layers and
indexing new tokens after the last layer, and ``rows_read`` the requests whose ``req_to_token`` row it
copied whole (absent for other backends). Off by default; nothing is
wrapped then.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..config import MOSAIC_FORWARD_LOG_DIR

__all__ = ["FORWARD_TIMER_TARGET", "register_forward_timer", "read_forward_log"]

FORWARD_TIMER_TARGET = "sglang.srt.model_executor.model_runner.ModelRunner.forward"


def register_forward_timer(registry, hook_type) -> bool:
    """Install the timing hook if ``MOSAIC_FORWARD_LOG_DIR`` is set; returns whether it was."""
    directory = MOSAIC_FORWARD_LOG_DIR.read()
    if directory is None:
        return False
    Path(directory).mkdir(parents=True, exist_ok=True)
    registry.register(FORWARD_TIMER_TARGET, _timed_forward, hook_type.AROUND)
    return True


def _sync(model_runner) -> None:
    device = str(getattr(model_runner, "device", "cpu"))
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _timed_forward(original, self, forward_batch, *args, **kwargs):
    _sync(self)
    start = time.perf_counter()
    result = original(self, forward_batch, *args, **kwargs)
    _sync(self)
    seconds = time.perf_counter() - start
    record = {
        "mode": forward_batch.forward_mode.name.lower(),
        "batch": int(forward_batch.batch_size),
        "tokens": int(forward_batch.input_ids.shape[0]) if forward_batch.input_ids is not None else 0,
        "seq_len_max": int(max(forward_batch.seq_lens_cpu.tolist())) if forward_batch.seq_lens_cpu is not None
        and forward_batch.batch_size else 0,
        "backend": type(self.attn_backend).__name__,
        "seconds": seconds,
    }
    timings = getattr(self.attn_backend, "forward_timings", None)
    if timings is not None:
        record.update(timings)
    path = Path(MOSAIC_FORWARD_LOG_DIR.read()) / f"forward-{os.getpid()}.jsonl"
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    return result


def read_forward_log(directory) -> list[dict]:
    """Every record written under ``directory`` (all processes), in file then line order."""
    records = []
    for path in sorted(Path(directory).glob("forward-*.jsonl")):
        records.extend(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return records
