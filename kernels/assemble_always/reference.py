"""Pure-torch reference of K4, "assemble the always-attended part": per request, its descriptor's ranges
then the tail past the index, written as plain ``arange``s."""

from __future__ import annotations

import torch

from ..buffers import output_buffer

__all__ = ["assemble_always_reference"]


def assemble_always_reference(range_indptr: torch.Tensor, range_starts: torch.Tensor, range_ends: torch.Tensor,
                              indexed_end: torch.Tensor, seq_len: torch.Tensor, out_offset: torch.Tensor, *,
                              max_ranges: int, req_to_token: torch.Tensor | None = None,
                              token_row: torch.Tensor | None = None, out: torch.Tensor | None = None,
                              size: int | None = None) -> torch.Tensor:
    """Write each request's always-attended positions, ascending, contiguously from ``out_offset[b]``:
    its ranges (`AlwaysRanges`, all below ``indexed_end[b]``), then ``[indexed_end[b], seq_len[b])``.
    The request's length is ``a_b = Σ (ends - starts) + seq_len[b] - indexed_end[b]``.

    Args:
        range_indptr: ``[B + 1] int64``, range_starts / range_ends: ``[k] int64`` (`AlwaysRanges`).
        indexed_end: ``[B] int64`` positions the request's index covers (0 for a dense request).
        seq_len: ``[B] int64`` the request's length this forward.
        out_offset: ``[B] int64`` where request ``b``'s entries start in ``out``.
        max_ranges: ``AlwaysRanges.max_ranges`` (host int; the Triton grid, unused here).
        req_to_token: optional ``[rows, max_len] int32/int64`` position -> KV slot table; with it the slots
            ``req_to_token[token_row[b], position]`` are written instead of positions.
        token_row: ``[B] int32/int64`` row of ``req_to_token`` per request (``req_pool_indices``).
        out: optional ``[nnz] int32/int64`` buffer; only the requests' entries are written.
        size: length of a fresh buffer when ``out`` is None (int64, or ``req_to_token``'s dtype).

    Returns:
        ``out``.
    """
    if (req_to_token is None) != (token_row is None):
        raise ValueError("assemble_always: expected req_to_token and token_row together, got only one of them")
    dtype = torch.int64 if req_to_token is None else req_to_token.dtype
    out = output_buffer(out, size, dtype, seq_len.device, "assemble_always")
    for b in range(seq_len.numel()):
        first, last = int(range_indptr[b]), int(range_indptr[b + 1])
        assert last - first <= max_ranges, f"request {b}: {last - first} ranges > {max_ranges=}"
        parts = [torch.arange(int(range_starts[i]), int(range_ends[i])) for i in range(first, last)]
        parts.append(torch.arange(int(indexed_end[b]), int(seq_len[b])))
        positions = torch.cat(parts).to(seq_len.device)
        values = positions if req_to_token is None else req_to_token[int(token_row[b])][positions]
        at = int(out_offset[b])
        out[at : at + positions.numel()] = values.to(out.dtype)
    return out
