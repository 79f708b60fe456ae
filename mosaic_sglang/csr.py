"""Ragged data as CSR: the one helper that turns per-row counts into an ``indptr``.

Every ragged structure in the project (selections over layers, cluster members over clusters, attended
slots over requests) is stored as ``*_indptr`` / ``*_indices``: row ``r`` owns
``indices[indptr[r]:indptr[r + 1]]``.
"""

from __future__ import annotations

import torch

__all__ = ["indptr_from_counts", "indptr_from_ids"]


def indptr_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """``counts [R] int`` entries per row → ``indptr [R + 1] int64`` (``indptr[0] = 0``), same device.

    Example:
        >>> indptr_from_counts(torch.tensor([2, 0, 3])).tolist()
        [0, 2, 2, 5]
    """
    indptr = torch.zeros(counts.numel() + 1, dtype=torch.int64, device=counts.device)
    indptr[1:] = torch.cumsum(counts, 0)
    return indptr


def indptr_from_ids(row_ids: torch.Tensor, num_rows: int) -> torch.Tensor:
    """``row_ids [nnz] int64`` (sorted by row, as ``mask.nonzero()`` gives them) → ``indptr [num_rows + 1]``.

    Example:
        >>> indptr_from_ids(torch.tensor([0, 0, 2]), 3).tolist()
        [0, 2, 2, 3]
    """
    return indptr_from_counts(torch.bincount(row_ids, minlength=num_rows))
