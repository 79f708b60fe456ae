"""`RequestLayout`: one request of a forward batch as the retrieval policy sees it (no SGLang types).

The attention backend builds one per request per forward from SGLang's forward batch (its
``req_to_token`` row, prefix and extend lengths, and the frame ids of its multimodal items, see
`mosaic_sglang.integration.frame_ids`).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

__all__ = ["RequestLayout", "RowCounts"]


class RowCounts(NamedTuple):
    """Counts over a request's positions that per-forward statistics need (kept up to date by the
    backend's row copies, so a decode step does not rescan the whole context for them).

    Attributes:
        visual: positions with a frame id (video tokens).
        frames: largest frame id + 1 (0 without video).
        device: positions whose KV is in a device slot (``slot > 0``).
        host: positions whose KV is in the host tier (negative encodings).
    """

    visual: int
    frames: int
    device: int
    host: int

    @staticmethod
    def of(frame_ids: torch.Tensor, slots: torch.Tensor) -> "RowCounts":
        """Counted from scratch (O(positions))."""
        visual = int((frame_ids >= 0).sum())
        frames = int(frame_ids.max()) + 1 if visual else 0
        return RowCounts(visual, frames, int((slots > 0).sum()), int((slots < 0).sum()))


class RequestLayout(NamedTuple):
    """One request of a forward batch, as the attention backend sees it.

    Attributes:
        rid: SGLang request id.
        row: ``req_to_token`` row of the request.
        prefix_len: tokens already in the KV cache before this forward (cached prefix + earlier chunks).
        extend_len: tokens computed in this forward (1 for decode).
        frame_ids: ``[prefix_len + extend_len] int64`` frame id per position, ``-1`` for text.
        slots: ``[prefix_len + extend_len] int64`` KV-pool slot of each position (CPU copy of the row).
        counts: `RowCounts` of ``frame_ids``/``slots`` when the caller keeps them (else counted on use).
        prompt_done: this extend forward holds the last chunk of the request's prompt (what follows is
            decode); False in decode forwards and when SGLang does not say.
    """

    rid: str
    row: int
    prefix_len: int
    extend_len: int
    frame_ids: torch.Tensor
    slots: torch.Tensor
    counts: Optional[RowCounts] = None
    prompt_done: bool = False

    @property
    def seq_len(self) -> int:
        return self.prefix_len + self.extend_len

    @property
    def num_visual(self) -> int:
        return self.row_counts.visual

    @property
    def row_counts(self) -> RowCounts:
        return self.counts if self.counts is not None else RowCounts.of(self.frame_ids, self.slots)
