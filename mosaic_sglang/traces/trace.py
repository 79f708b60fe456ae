"""`Trace`: one sequence's KV and the question's queries, as the retrieval benchmark consumes it."""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["Trace"]


class Trace(NamedTuple):
    """A KV trace: context (frames with interleaved text), then a question whose queries are given.

    Attributes:
        keys: ``[L, N, num_kv_heads, D] float32`` post-RoPE keys of every position (question included).
        values: ``[L, N, num_kv_heads, D] float32``.
        frame_ids: ``[N] int64`` frame of each visual position (non-decreasing), ``-1`` for text.
        queries: ``[L, Tq, num_qo_heads, D] float32`` post-RoPE queries of the question's tokens.
        query_positions: ``[Tq] int64`` position of each question token (query ``t`` sees ``<= `` it).
        needle_positions: ``[k] int64`` positions of the event the question is about.
    """

    keys: torch.Tensor
    values: torch.Tensor
    frame_ids: torch.Tensor
    queries: torch.Tensor
    query_positions: torch.Tensor
    needle_positions: torch.Tensor

    @property
    def num_tokens(self) -> int:
        return self.frame_ids.numel()

    def frame_chunks(self) -> list[tuple[int, int]]:
        """``[(start, end)]`` position ranges that a streaming ingest appends one by one.

        Each chunk is one frame with the text just before it (timestamps); the text before the first
        frame joins the first chunk, the text after the last frame (the question) is the last chunk.
        """
        fids = self.frame_ids
        n = fids.numel()
        visual = (fids >= 0).nonzero().flatten()
        if visual.numel() == 0:
            return [(0, n)]
        starts_of_frame = visual[torch.cat([torch.tensor([True]), fids[visual[1:]] != fids[visual[:-1]]])]
        # A chunk starts right after the previous frame's last visual token.
        prev_end = torch.cat([torch.tensor([0]), _last_visual_before(visual, starts_of_frame[1:]) + 1])
        bounds = prev_end.tolist() + [int(visual[-1]) + 1]
        chunks = list(zip(bounds[:-1], bounds[1:]))
        if bounds[-1] < n:
            chunks.append((bounds[-1], n))
        return chunks


def _last_visual_before(visual: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """``[k]`` the last visual position before each frame start."""
    idx = torch.searchsorted(visual, starts) - 1
    return visual[idx]
