"""Output buffers shared by the index-writing kernels (`emit_members`, `assemble_always`)."""

from __future__ import annotations

import torch

__all__ = ["output_buffer"]


def output_buffer(out, size, dtype, device, op: str) -> torch.Tensor:
    """``out`` checked, or a fresh ``[size]`` buffer (its entries outside the rows stay unspecified)."""
    if out is None:
        if size is None:
            raise ValueError(f"{op}: expected out (a [nnz] int32/int64 buffer) or size (a host int), got neither; "
                             "computing the size here would need a host sync")
        return torch.empty(size, dtype=dtype, device=device)
    if out.dim() != 1 or out.dtype not in (torch.int32, torch.int64) or not out.is_contiguous():
        raise ValueError(f"{op}: out: expected a contiguous [nnz] int32/int64 tensor, got "
                         f"{tuple(out.shape)} {out.dtype} contiguous={out.is_contiguous()}")
    return out
