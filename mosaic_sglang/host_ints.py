"""Small host integer rows (per-request offsets, lengths, ids) to the model's device in one copy that does
not wait for the device.

A pageable ``torch.tensor(values, device=cuda)`` (or ``.to(cuda, non_blocking=True)`` from pageable
memory) synchronises with the stream; packing the rows into one pinned tensor and copying it with
``non_blocking`` does not (CPU: a plain tensor).
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["host_ints_to_device"]


def host_ints_to_device(rows: Sequence[Sequence[int]], device: torch.device | str) -> list[torch.Tensor]:
    """``rows`` (equal lengths ``n``) as ``[n] int64`` tensors on ``device``, from one ``[len(rows), n]`` copy."""
    device = torch.device(device)
    packed = torch.tensor([list(r) for r in rows], dtype=torch.int64, pin_memory=device.type == "cuda")
    return list(packed.to(device, non_blocking=True))
