"""`SelectionSlab` (``req_to_selection``): every live request's kept selection, per layer, on the model's device.

A decode step that keeps its question's selection (``reselect_every = 0``, the default) attends, at every
layer, the same selected positions the question chose there. They stay where attention reads them: one
row per request of ``positions [rows, L, width] int32`` on the model's device, next to SGLang's
``req_to_token``. A decode step's plan copies them into its per-layer lists with one device gather from
``[B]``-sized descriptors (`copy_into`): nothing of size ``L × budget`` crosses from the host per step,
and nothing is read back (no host synchronisation).

What the host keeps per request is small and host-known without a sync: the slab row, each layer's
selected count (a tensor's ``numel``), and the index size the selection was made against (a selection
made before the index grew is stale).

Rows and width grow by doubling when a selection is reserved (at a question: an extend forward, or a
re-select step), never inside a kept decode step; entries past a layer's count hold ``-1``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..clusters.table import grow
from ..host_ints import host_ints_to_device

__all__ = ["SelectionSlab"]


class SelectionSlab:
    """Kept selections of live requests (see module docstring).

    Args:
        num_layers: ``L``.
        device: the model's device (where the KV pool lives).

    Attributes:
        positions: ``[rows, L, width] int32`` selected positions per request row and layer; ``-1`` past
            the layer's count and in free rows.
    """

    def __init__(self, num_layers: int, device: torch.device | str | None = None) -> None:
        self.num_layers = num_layers
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.positions = torch.full((0, num_layers, 0), -1, dtype=torch.int32, device=self.device)
        self._row: dict[str, int] = {}
        self._free: list[int] = []
        self._counts: dict[str, list[int]] = {}
        self._index_size: dict[str, int] = {}
        self._width: dict[int, int] = {}  # row -> width its selection was reserved with

    # -- lifetime ---------------------------------------------------------------------------------------

    def reserve(self, rid: str, width: int, index_size: int) -> int:
        """Make room for ``rid``'s new selection of at most ``width`` positions per layer, chosen against an
        index of ``index_size`` tokens; its earlier selection (if any) is forgotten. Returns its row."""
        row = self._row.get(rid)
        if row is None:
            if not self._free:
                self._grow(max(1, 2 * self.positions.shape[0]), self.positions.shape[2])
            row = self._free.pop()
            self._row[rid] = row
        if width > self.positions.shape[2]:
            self._grow(self.positions.shape[0], max(width, 2 * self.positions.shape[2]))
        self.positions[row].fill_(-1)
        self._counts[rid] = [0] * self.num_layers
        self._index_size[rid] = index_size
        self._width[row] = width
        return row

    def release(self, rid: str) -> None:
        """Forget ``rid``'s selection and free its row (no-op for an unknown request)."""
        row = self._row.pop(rid, None)
        if row is None:
            return
        self.positions[row].fill_(-1)
        self._free.append(row)
        del self._counts[rid], self._index_size[rid], self._width[row]

    def _grow(self, rows: int, width: int) -> None:
        old_rows = self.positions.shape[0]
        self.positions = grow(grow(self.positions, 0, rows, -1), 2, width, -1)
        self._free.extend(range(rows - 1, old_rows - 1, -1))  # lowest free row first

    # -- write and read ---------------------------------------------------------------------------------

    def write(self, rid: str, layer: int, selected: torch.Tensor, count: Optional[int] = None) -> None:
        """``rid``'s selected positions ``[f] int64`` (any device) at ``layer``; ``f`` ≤ the reserved width.
        ``count``: what `counts` reports for the layer (default ``f``; per-KV-head parts padded to a fixed
        stride report the heads times their longest part)."""
        row, n = self._row[rid], selected.numel()
        assert n <= self.positions.shape[2], f"{rid} layer {layer}: {n} selected > width {self.positions.shape[2]}"
        self.positions[row, layer, :n] = selected.to(self.device, torch.int32)
        self.positions[row, layer, n:] = -1
        self._counts[rid][layer] = n if count is None else count

    def row_width(self, row: int) -> int:
        """The width the selection in ``row`` was reserved with (per-KV-head parts: heads × their stride)."""
        return self._width[row]

    def __contains__(self, rid: str) -> bool:
        return rid in self._row

    def row(self, rid: str) -> int:
        return self._row[rid]

    def counts(self, rid: str) -> list[int]:
        """Selected positions per layer of ``rid``'s kept selection (host ints)."""
        return self._counts[rid]

    def index_size(self, rid: str) -> Optional[int]:
        """Index size ``rid``'s selection was chosen against, or None when it has none."""
        return self._index_size.get(rid)

    def copy_into(self, kv_positions: torch.Tensor, rows: Sequence[int], starts: Sequence[int],
                  counts: Sequence[int], offsets: Optional[Sequence[int]] = None) -> None:
        """Copy kept selections into a forward's lists, every layer at once, without a host sync.

        Args:
            kv_positions: ``[L, H · nnz] int64`` on the slab's device (`ForwardPlan.kv_positions`).
            rows: per kept request its slab row; starts: where its selected part begins in every layer's
                list; counts: its selected part's length ``f`` (≤ width; entries past a layer's own
                count are ``-1``, the padding of a padded plan); offsets: where in the slab row each part
                starts (default 0; per-KV-head selections keep head ``h``'s part at ``h · f``).
        """
        if not rows:
            return
        total = int(sum(counts))
        if total == 0:
            return
        device = self.device
        offsets = [0] * len(rows) if offsets is None else offsets
        count, start, row, offset = host_ints_to_device([counts, starts, rows, offsets], device)  # [K] each
        which = torch.repeat_interleave(torch.arange(len(rows), device=device), count, output_size=total)  # [F]
        col = torch.arange(total, device=device) - (torch.cumsum(count, 0) - count)[which]  # [F]
        kv_positions[:, start[which] + col] = self.positions[row[which], :, col + offset[which]].T.to(kv_positions.dtype)

    @property
    def nbytes(self) -> int:
        return self.positions.numel() * self.positions.element_size()
