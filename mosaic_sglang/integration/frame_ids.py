"""Which positions of a request are visual, and which frame each visual token belongs to.

SGLang attaches the request's multimodal items to the forward batch (``forward_batch.mm_inputs[i]``):
each item has a modality and inclusive prompt ``offsets``; video items carry ``video_grid_thw``
(temporal groups × patch rows × patch cols). A temporal group is what we call a *frame* (Qwen2.5-VL
merges 2 sampled frames into one group). Everything else (prompt text, timestamps, generated tokens)
is text: frame id ``-1``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

__all__ = ["frame_ids_from_mm_inputs"]


def frame_ids_from_mm_inputs(mm_inputs: Any, seq_len: int) -> torch.Tensor:
    """Frame id per position of a request's prompt.

    Args:
        mm_inputs: SGLang ``MultimodalInputs`` of the request, or None for text-only requests.
        seq_len: number of positions to describe.

    Returns:
        ``[seq_len] int64``: ``-1`` for text; video tokens numbered by temporal group, continuing across
        items in prompt order; each image is one frame.
    """
    frame_ids = torch.full((seq_len,), -1, dtype=torch.int64)
    items = list(getattr(mm_inputs, "mm_items", None) or [])
    spans = []
    for item in items:
        offsets = getattr(item, "offsets", None) or []
        if offsets:
            spans.append((offsets[0][0], item))
    next_frame = 0
    for _, item in sorted(spans, key=lambda s: s[0]):
        ranges = [(int(s), int(e) + 1) for s, e in item.offsets]  # inclusive -> half-open
        groups = _temporal_groups(item, ranges)
        positions = torch.cat([torch.arange(s, e) for s, e in ranges])
        per_frame = _split_evenly(positions.numel(), groups)
        ids = torch.repeat_interleave(torch.arange(groups) + next_frame, per_frame)
        keep = positions < seq_len
        frame_ids[positions[keep]] = ids[keep]
        next_frame += groups
    return frame_ids


def _temporal_groups(item: Any, ranges: Sequence[tuple[int, int]]) -> int:
    """Frames in an item: the video grid's temporal size, else one range per frame, else 1 (image)."""
    modality = str(getattr(item, "modality", "")).upper()
    if "VIDEO" in modality:
        grid = _model_data(item, "video_grid_thw")
        if grid is not None:
            grid = torch.as_tensor(grid).reshape(-1, 3)
            return max(1, int(grid[:, 0].sum()))
        return max(1, len(ranges))
    return 1


def _model_data(item: Any, key: str) -> Any:
    data = getattr(item, "model_specific_data", None) or {}
    return data.get(key) if isinstance(data, dict) else None


def _split_evenly(total: int, groups: int) -> torch.Tensor:
    """``[groups] int64`` sizes summing to ``total``, as equal as possible (earlier groups larger)."""
    base, extra = divmod(total, groups)
    sizes = torch.full((groups,), base, dtype=torch.int64)
    sizes[:extra] += 1
    return sizes
