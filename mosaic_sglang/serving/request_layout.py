"""`RequestLayout`: one request of a forward batch as the retrieval policy sees it (no SGLang types).

The attention backend builds one per request per forward from SGLang's forward batch (its
``req_to_token`` row, prefix and extend lengths, and the frame ids of its multimodal items, see
`mosaic_sglang.integration.frame_ids`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["RequestLayout"]


class RequestLayout(NamedTuple):
    """One request of a forward batch, as the attention backend sees it.

    Attributes:
        rid: SGLang request id.
        row: ``req_to_token`` row of the request.
        prefix_len: tokens already in the KV cache before this forward (cached prefix + earlier chunks).
        extend_len: tokens computed in this forward (1 for decode).
        frame_ids: ``[prefix_len + extend_len] int64`` frame id per position, ``-1`` for text.
        slots: ``[prefix_len + extend_len] int64`` KV-pool slot of each position (CPU copy of the row).
    """

    rid: str
    row: int
    prefix_len: int
    extend_len: int
    frame_ids: torch.Tensor
    slots: torch.Tensor

    @property
    def seq_len(self) -> int:
        return self.prefix_len + self.extend_len

    @property
    def num_visual(self) -> int:
        return int((self.frame_ids >= 0).sum())
