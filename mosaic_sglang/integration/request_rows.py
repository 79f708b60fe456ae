"""Host copies of each live request's ``req_to_token`` row and frame ids, grown by one entry per decode step.

Planning a forward needs every request's slots and frame ids on the host (the policy's bookkeeping is
host-side). Copying ``req_to_token[row, :seq_len]`` every decode step moves O(context) bytes per request
per token (and is a device→host synchronisation on CUDA); a decode step only adds one position, whose
slot SGLang has just allocated (``forward_batch.out_cache_loc``). `RequestRows` keeps each request's copy
and appends that one slot.

A copy is reused only while nothing else can have rewritten the row: the radix cache calls
`invalidate` wherever rows of live requests change under them (offload re-points aliasing rows to host
encodings, insert dedup re-points a request's tokens to the tree's slots, a flush). Any other forward
(extend, or a request whose length does not follow on from its copy) re-reads the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict

import torch

from ..serving.request_layout import RowCounts

__all__ = ["RequestRows"]


@dataclass
class _Row:
    row: int
    slots: torch.Tensor  # [capacity] int64
    frame_ids: torch.Tensor  # [capacity] int64
    length: int
    epoch: int
    has_host: bool  # some position's KV is in the host tier (a negative encoding)
    counts: RowCounts  # of slots[:length] / frame_ids[:length]


class RequestRows:
    """Per-request host copies (see module docstring)."""

    def __init__(self) -> None:
        self._rows: Dict[str, _Row] = {}
        self.epoch = 0
        self.reads = 0
        """Rows read whole (a count for tests: decode steps of a known request add none)."""

    def invalidate(self) -> None:
        """Rows of live requests may have changed: the next forward of each request re-reads its row."""
        self.epoch += 1

    def get(self, rid: str, row: int, seq_len: int, *, new_slot: int | None,
            read_row: Callable[[], torch.Tensor], read_frame_ids: Callable[[], torch.Tensor]):
        """``(slots [seq_len] int64, frame_ids [seq_len] int64)`` of request ``rid`` (views of its copy).

        Args:
            new_slot: in a decode step, the slot of the position ``seq_len - 1`` (None in extend).
            read_row / read_frame_ids: full reads, used when the copy cannot be extended.
        """
        entry = self._rows.get(rid)
        if (new_slot is not None and entry is not None and entry.row == row and entry.length == seq_len - 1
                and entry.epoch == self.epoch):
            if entry.slots.numel() < seq_len:
                entry.slots = _grow(entry.slots, 2 * seq_len)
                entry.frame_ids = _grow(entry.frame_ids, 2 * seq_len)
            entry.slots[seq_len - 1] = new_slot
            entry.frame_ids[seq_len - 1] = -1  # a generated token is text
            entry.length = seq_len
            c = entry.counts
            entry.counts = c._replace(device=c.device + (new_slot > 0), host=c.host + (new_slot < 0))
        else:
            self.reads += 1
            slots, frame_ids = read_row(), read_frame_ids()
            assert slots.numel() == frame_ids.numel() == seq_len, (slots.numel(), frame_ids.numel(), seq_len)
            capacity = seq_len + 256
            counts = RowCounts.of(frame_ids, slots)
            entry = _Row(row, _grow(slots, capacity), _grow(frame_ids, capacity), seq_len, self.epoch,
                         counts.host > 0, counts)
            self._rows[rid] = entry
        return entry.slots[:seq_len], entry.frame_ids[:seq_len]

    def frame_ids(self, rid: str):
        """``[length] int64`` frame ids of the request's copy as last returned, or None if it has none."""
        entry = self._rows.get(rid)
        return None if entry is None else entry.frame_ids[: entry.length]

    def counts(self, rid: str) -> RowCounts:
        """`RowCounts` of the request's copy as last returned (kept up to date, never rescanned)."""
        return self._rows[rid].counts

    def has_host(self, rid: str) -> bool:
        """Whether the request's row (as last read) holds host-resident positions."""
        return self._rows[rid].has_host

    def release(self, rid: str) -> None:
        self._rows.pop(rid, None)

    def __len__(self) -> int:
        return len(self._rows)


def _grow(values: torch.Tensor, capacity: int) -> torch.Tensor:
    out = torch.empty(capacity, dtype=torch.int64)
    out[: values.numel()] = values
    return out
