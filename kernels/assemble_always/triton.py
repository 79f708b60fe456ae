"""Triton K4: write every request's always-attended positions (or KV slots) with no host sync.

Grid ``(B, max_ranges + 1)``: program ``(b, j)`` copies request ``b``'s ``j``-th range, the last column
the tail ``[indexed_end[b], seq_len[b])``; programs past a request's range count write nothing. A
range lands at ``out_offset[b] + Σ lengths of the request's earlier ranges``: ``cum`` (the exclusive
prefix sum of all range lengths) is one device ``torch.cumsum`` in the launcher, and the tail goes
after the request's last range, so the part is ascending. Each program walks its range in ``BLOCK``
steps; like SGLang's ``create_flashinfer_kv_indices_triton``, slots come from ``req_to_token`` rows.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..buffers import output_buffer

__all__ = ["assemble_always_triton"]


@triton.jit
def _assemble_always_kernel(indptr_ptr, starts_ptr, ends_ptr, cum_ptr, indexed_end_ptr, seq_len_ptr, offset_ptr,
                            r2t_ptr, token_row_ptr, out_ptr, max_ranges, stride_r2t,
                            MAP_SLOTS: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    j = tl.program_id(1)
    first = tl.load(indptr_ptr + b)
    last = tl.load(indptr_ptr + b + 1)
    r = first + j
    is_tail = j == max_ranges
    is_range = r < last  # j < this request's range count (never the tail column: count <= max_ranges)
    start = tl.load(starts_ptr + r, mask=is_range, other=0)
    end = tl.load(ends_ptr + r, mask=is_range, other=0)
    start = tl.where(is_tail, tl.load(indexed_end_ptr + b), start)
    end = tl.where(is_tail, tl.load(seq_len_ptr + b), end)
    at = tl.where(is_tail, last, r)  # the tail follows the request's ranges
    dst = tl.load(offset_ptr + b) + tl.load(cum_ptr + at, mask=is_range | is_tail, other=0) - tl.load(cum_ptr + first)
    if MAP_SLOTS:
        table_row = tl.load(token_row_ptr + b).to(tl.int64)
    k = tl.arange(0, BLOCK)
    for p0 in range(start, end, BLOCK):
        pos = p0 + k  # [BLOCK]
        ok = pos < end
        if MAP_SLOTS:
            value = tl.load(r2t_ptr + table_row * stride_r2t + pos, mask=ok, other=0)
        else:
            value = pos
        tl.store(out_ptr + dst + (pos - start), value.to(out_ptr.dtype.element_ty), mask=ok)


def assemble_always_triton(range_indptr, range_starts, range_ends, indexed_end, seq_len, out_offset, *, max_ranges,
                           req_to_token=None, token_row=None, out=None, size=None, block: int = 256):
    """Same contract as `assemble_always_reference` (all tensors on one device). ``block``: positions per
    step; 256 copies a typical recent window (64) or tail in one step without idling most lanes on sinks."""
    if (req_to_token is None) != (token_row is None):
        raise ValueError("assemble_always: expected req_to_token and token_row together, got only one of them")
    dtype = torch.int64 if req_to_token is None else req_to_token.dtype
    out = output_buffer(out, size, dtype, seq_len.device, "assemble_always")
    batch = seq_len.numel()
    if batch == 0:
        return out
    device = seq_len.device
    lengths = (range_ends - range_starts).to(torch.int64)
    cum = torch.zeros(lengths.numel() + 1, dtype=torch.int64, device=device)  # [k + 1] exclusive prefix
    cum[1:] = torch.cumsum(lengths, 0)
    range_starts = range_starts.to(torch.int64).contiguous()
    range_ends = range_ends.to(torch.int64).contiguous()
    if range_starts.numel() == 0:
        range_starts = range_ends = torch.zeros(1, dtype=torch.int64, device=device)  # never read (no ranges)
    map_slots = req_to_token is not None
    if not map_slots:
        req_to_token = token_row = out  # never read
    else:
        assert req_to_token.stride(1) == 1, f"req_to_token: rows must be contiguous, got {req_to_token.stride()=}"
    _assemble_always_kernel[(batch, max_ranges + 1)](
        range_indptr.to(torch.int64).contiguous(), range_starts, range_ends, cum,
        indexed_end.to(torch.int64).contiguous(), seq_len.to(torch.int64).contiguous(),
        out_offset.to(torch.int64).contiguous(), req_to_token, token_row.contiguous(), out,
        max_ranges, req_to_token.stride(0) if map_slots else 0, MAP_SLOTS=map_slots, BLOCK=block)
    return out
