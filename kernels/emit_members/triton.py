"""Triton K3: write the selected members of every (row, cluster) with no host synchronisation.

One program per (row, cluster). A cluster's members are ascending and the eligible ones form one
interval of positions ``[lo, hi)``, so they are a contiguous run of the cluster's member list: the
program counts the members below ``lo`` (the sinks it skips), then copies the next ``take`` members
(those ``< hi``) to ``out_offset[r] + dst[r, c]``, mapping them to KV slots through ``req_to_token`` when
given. ``dst`` (the exclusive prefix sum of ``take`` along clusters) is one device ``torch.cumsum`` in
the launcher; no sort, no atomics. Programs with ``take == 0`` load nothing and exit their loops at once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..buffers import output_buffer

__all__ = ["emit_members_triton"]


@triton.jit
def _emit_members_kernel(indptr_ptr, positions_ptr, base_ptr, take_ptr, dst_ptr, lo_ptr, hi_ptr, offset_ptr,
                         r2t_ptr, token_row_ptr, out_ptr, stride_take, stride_dst, stride_r2t,
                         MAP_SLOTS: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    c = tl.program_id(1)
    take = tl.load(take_ptr + row * stride_take + c)  # scalar int64
    has = take > 0
    cluster = tl.load(base_ptr + row) + c
    # padding columns may point past the CSR: read the cluster's extent only when something is taken
    first = tl.load(indptr_ptr + cluster, mask=has, other=0)
    last = tl.load(indptr_ptr + cluster + 1, mask=has, other=0)
    lo = tl.load(lo_ptr + row)
    hi = tl.load(hi_ptr + row)
    k = tl.arange(0, BLOCK)

    below = tl.zeros([BLOCK], tl.int64)  # members under `lo` (sinks): they lead the ascending list
    for m0 in range(first, last, BLOCK):
        m = m0 + k
        pos = tl.load(positions_ptr + m, mask=m < last, other=0).to(tl.int64)  # [BLOCK]
        below += ((m < last) & (pos < lo)).to(tl.int64)
    src0 = first + tl.sum(below, 0)

    dst0 = tl.load(offset_ptr + row) + tl.load(dst_ptr + row * stride_dst + c)
    if MAP_SLOTS:
        table_row = tl.load(token_row_ptr + row).to(tl.int64)
    for t0 in range(0, take, BLOCK):
        t = t0 + k
        src = src0 + t
        ok = (t < take) & (src < last)
        pos = tl.load(positions_ptr + src, mask=ok, other=0).to(tl.int64)  # [BLOCK]
        ok = ok & (pos < hi)  # never past the eligible run, even if take overstates it
        if MAP_SLOTS:
            value = tl.load(r2t_ptr + table_row * stride_r2t + pos, mask=ok, other=0)
        else:
            value = pos
        tl.store(out_ptr + dst0 + t, value.to(out_ptr.dtype.element_ty), mask=ok)


def emit_members_triton(member_indptr, member_positions, cluster_base, take, eligible_lo, eligible_hi, out_offset, *,
                        req_to_token=None, token_row=None, out=None, size=None, block: int = 64):
    """Same contract as `emit_members_reference` (all tensors on one device). ``block``: members per
    step; 64 covers a typical cluster (``max_cluster_size`` defaults to 64) in one step."""
    dtype = torch.int64 if req_to_token is None else req_to_token.dtype
    out = output_buffer(out, size, dtype, take.device, "emit_members")
    rows, num_c = take.shape
    if rows == 0 or num_c == 0:
        return out
    if (req_to_token is None) != (token_row is None):
        raise ValueError("emit_members: expected req_to_token and token_row together, got only one of them")
    take = take.to(torch.int64).contiguous()
    dst = torch.cumsum(take, 1) - take  # [R, C] exclusive prefix: where cluster c starts in its row
    member_positions = member_positions.contiguous()
    if member_positions.numel() == 0:
        member_positions = torch.zeros(1, dtype=torch.int64, device=take.device)  # never read (no members)
    map_slots = req_to_token is not None
    if not map_slots:
        req_to_token = token_row = out  # never read
    else:
        assert req_to_token.stride(1) == 1, f"req_to_token: rows must be contiguous, got {req_to_token.stride()=}"
    _emit_members_kernel[(rows, num_c)](
        member_indptr.to(torch.int64).contiguous(), member_positions, cluster_base.to(torch.int64).contiguous(),
        take, dst, eligible_lo.to(torch.int64).contiguous(), eligible_hi.to(torch.int64).contiguous(),
        out_offset.to(torch.int64).contiguous(), req_to_token, token_row.contiguous(), out,
        take.stride(0), dst.stride(0), req_to_token.stride(0) if map_slots else 0,
        MAP_SLOTS=map_slots, BLOCK=block)
    return out
