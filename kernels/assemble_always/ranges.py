"""The host-side descriptor of K4: a request's always-attended part as a few disjoint position ranges.

Sinks, the recent window and the text tokens of the indexed prefix ``[0, indexed_end)`` are runs of
consecutive positions (text comes in runs: the prompt, a timestamp between frames), so a request's
always part is a handful of ``[start, end)`` ranges — tens of ints instead of a ``[seq_len]`` mask —
built once per selection (`always_ranges`, which merges them with `merge_ranges`) and batched as CSR
over requests (`pack_ranges`). The positions past the index, ``[indexed_end, seq_len)``, are not in the
descriptor: the kernel adds that tail from per-forward tensors, so a decode step (``seq_len`` + 1)
reuses the descriptor unchanged.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

__all__ = ["AlwaysRanges", "merge_ranges", "always_ranges", "pack_ranges"]


class AlwaysRanges(NamedTuple):
    """Disjoint, ascending, non-empty position ranges per request, CSR over ``B`` requests.

    Attributes:
        indptr: ``[B + 1] int64``; request ``b`` owns ranges ``indptr[b] .. indptr[b+1] - 1``.
        starts: ``[k] int64`` first position of each range.
        ends: ``[k] int64`` one past its last position.
        max_ranges: most ranges of one request (host int: the kernel's grid).
    """

    indptr: torch.Tensor
    starts: torch.Tensor
    ends: torch.Tensor
    max_ranges: int

    def to(self, device) -> "AlwaysRanges":
        return AlwaysRanges(self.indptr.to(device), self.starts.to(device), self.ends.to(device), self.max_ranges)


def merge_ranges(starts: torch.Tensor, ends: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The union of ``[starts[i], ends[i])`` as disjoint ranges: sorted, empty ranges dropped, overlapping
    and touching ones merged (so the result is the unique minimal description).

    Args:
        starts, ends: ``[k] int64`` in any order; ``ends[i] <= starts[i]`` is an empty range.

    Returns:
        ``(starts [m] int64, ends [m] int64)`` with ``starts[i] < ends[i] < starts[i + 1]``.

    Example:
        >>> merge_ranges(torch.tensor([5, 0, 2, 9]), torch.tensor([7, 3, 4, 9]))
        (tensor([0, 5]), tensor([4, 7]))
    """
    keep = ends > starts
    starts, ends = starts[keep].to(torch.int64), ends[keep].to(torch.int64)
    order = torch.argsort(starts, stable=True)
    starts, ends = starts[order], ends[order]
    reach = torch.cummax(ends, 0).values  # [k] furthest end so far
    opens = torch.ones_like(starts, dtype=torch.bool)  # a range opens a group unless the group so far reaches it
    opens[1:] = starts[1:] > reach[:-1]
    closes = torch.ones_like(opens)  # the last range of each group
    closes[:-1] = opens[1:]
    return starts[opens], reach[closes]


def always_ranges(frame_ids: torch.Tensor, *, sink_tokens: int, recent_window: int,
                  seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`always_attended_mask` of the indexed prefix as ranges (positions ``< frame_ids.numel()``).

    Args:
        frame_ids: ``[indexed_end] int64`` frame per indexed position, ``-1`` for text.
        sink_tokens, recent_window: the config's values.
        seq_len: end of the served sequence (where the recent window ends), ``>= indexed_end``.

    Returns:
        ``(starts [m] int64, ends [m] int64)`` as `merge_ranges` gives them.

    Example:
        >>> always_ranges(torch.tensor([-1, 0, 0, 0, 1, 1]), sink_tokens=1, recent_window=2, seq_len=6)
        (tensor([0, 4]), tensor([1, 6]))
    """
    n = frame_ids.numel()
    if seq_len < n:
        raise ValueError(f"always_ranges: seq_len: expected >= indexed_end = {n}, got {seq_len}")
    text = torch.zeros(n + 2, dtype=torch.int64)
    text[1:-1] = (frame_ids.cpu() < 0).to(torch.int64)
    edge = text[1:] - text[:-1]  # [n + 1] +1 where a text run starts, -1 one past where it ends
    starts = [(edge == 1).nonzero().flatten(), torch.tensor([0])]
    ends = [(edge == -1).nonzero().flatten(), torch.tensor([min(sink_tokens, n)])]
    if recent_window > 0:
        starts.append(torch.tensor([max(0, seq_len - recent_window)]))
        ends.append(torch.tensor([n]))
    return merge_ranges(torch.cat(starts), torch.cat(ends))


def pack_ranges(per_request: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> AlwaysRanges:
    """Batch per-request ``(starts, ends)`` (each as `merge_ranges` gives them) into one `AlwaysRanges`."""
    counts = torch.tensor([s.numel() for s, _ in per_request], dtype=torch.int64)
    indptr = torch.zeros(counts.numel() + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(counts, 0)
    empty = torch.empty(0, dtype=torch.int64)
    starts = torch.cat([empty] + [s.to(torch.int64) for s, _ in per_request])
    ends = torch.cat([empty] + [e.to(torch.int64) for _, e in per_request])
    return AlwaysRanges(indptr, starts, ends, int(counts.max()) if counts.numel() else 0)
