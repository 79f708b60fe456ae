"""K3 as batched torch operations: what the CPU serving path runs (the plain-loop reference is for tests).

Same contract as `emit_members_reference`, fixed shapes and no host synchronisation: the work is
O(R·C·log nnz_m + nnz·log(R·C)), independent of the sequence length, where the loop reference pays a
Python iteration per cluster.

1. Each (row, cluster)'s first eligible member: a bisection inside the cluster's member run for the
   first position ``>= eligible_lo`` (members ascend), ``log2(nnz_m + 1)`` rounds of ``[R, C]`` gathers.
2. Each output entry ``j`` (row-major over (row, cluster), ``Σ take`` of them): its cell by
   ``searchsorted`` over the inclusive prefix of ``take``, its offset ``t`` inside the cell, the member
   ``start + t``; written where it exists and lies below ``eligible_hi`` (as the kernel masks it).
"""

from __future__ import annotations

import torch

from ..buffers import output_buffer

__all__ = ["emit_members_vectorized"]


def emit_members_vectorized(member_indptr: torch.Tensor, member_positions: torch.Tensor, cluster_base: torch.Tensor,
                            take: torch.Tensor, eligible_lo: torch.Tensor, eligible_hi: torch.Tensor,
                            out_offset: torch.Tensor, *, req_to_token: torch.Tensor | None = None,
                            token_row: torch.Tensor | None = None, out: torch.Tensor | None = None,
                            size: int | None = None) -> torch.Tensor:
    """See `emit_members_reference` (every argument and the result are the same)."""
    if (req_to_token is None) != (token_row is None):
        raise ValueError("emit_members: expected req_to_token and token_row together, got only one of them")
    dtype = torch.int64 if req_to_token is None else req_to_token.dtype
    out = output_buffer(out, size, dtype, take.device, "emit_members")
    rows, num_c = take.shape
    if rows == 0 or num_c == 0 or out.numel() == 0 or member_positions.numel() == 0:
        return out  # nothing to write (no member is eligible without members)
    device = take.device
    take = take.to(torch.int64)
    indptr = member_indptr.to(torch.int64)
    positions = member_positions.to(torch.int64)
    lo = eligible_lo.to(torch.int64)[:, None]  # [R, 1]
    hi = eligible_hi.to(torch.int64)[:, None]
    # padding columns may point past the CSR: clamp their ids (they take nothing, nothing of theirs is read)
    cluster = (cluster_base.to(torch.int64)[:, None] + torch.arange(num_c, device=device)).clamp(max=indptr.numel() - 2)
    first, last = indptr[cluster], indptr[cluster + 1]  # [R, C]
    # 1. first member >= lo inside [first, last): bisection with a host-known round count
    a, b = first.clone(), last.clone()
    for _ in range(max(1, positions.numel()).bit_length()):
        mid = (a + b) // 2
        below = (mid < b) & (positions[mid.clamp(max=positions.numel() - 1)] < lo)
        a = torch.where(below, mid + 1, a)
        b = torch.where(below, b, mid)
    start = a  # [R, C]
    # 2. entries: j -> (cell, t); rows' entries are contiguous from out_offset, clusters in id order
    flat_take = take.flatten()  # [R * C]
    inclusive = torch.cumsum(flat_take, 0)
    j = torch.arange(out.numel(), device=device)  # Σ take <= out.numel(): every entry has a j
    cell = torch.searchsorted(inclusive, j, right=True).clamp(max=flat_take.numel() - 1)
    t = j - (inclusive[cell] - flat_take[cell])
    r, c = cell // num_c, cell % num_c
    per_row = take.sum(1)
    row_start = torch.cumsum(per_row, 0) - per_row  # [R] first entry index of each row
    dest = out_offset.to(torch.int64)[r] + (j - row_start[r])
    src = start[r, c] + t
    ok = (j < inclusive[-1]) & (src < last[r, c])
    pos = positions[src.clamp(max=positions.numel() - 1)]
    ok = ok & (pos < hi[r, 0])
    if req_to_token is None:
        value = pos
    else:
        value = req_to_token[token_row.to(torch.int64)[r], pos.clamp(max=req_to_token.shape[1] - 1)]
    # masked scatter without indexing by the mask (no host sync): misses go to a scratch entry
    work = torch.cat([out, out.new_zeros(1)])
    work.scatter_(0, torch.where(ok, dest, out.numel()), value.to(out.dtype))
    out.copy_(work[:-1])
    return out
