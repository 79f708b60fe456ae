"""Pure-torch reference of K3, "emit the selected members": the plain loop over rows and clusters that
the Triton kernel must reproduce, plus the two small host helpers every caller needs (the eligibility
bounds, the output buffer)."""

from __future__ import annotations

import torch

from ..buffers import output_buffer

__all__ = ["emit_members_reference", "eligible_bounds"]


def eligible_bounds(sink_tokens: int, recent_window: int, seq_len: int) -> tuple[int, int]:
    """``[lo, hi)`` positions a cluster member may be selected from, for a sequence ending at ``seq_len``.

    `always_attended_mask`'s rule restricted to members (text is never a member): positions below
    ``sink_tokens`` are sinks, positions ``>= seq_len - recent_window`` the recent window (none when the
    window is 0). Both are attended anyway, so they are never selected.

    Example:
        >>> eligible_bounds(4, 64, 1000)
        (4, 936)
    """
    hi = max(0, seq_len - recent_window) if recent_window > 0 else seq_len
    return sink_tokens, hi


def emit_members_reference(member_indptr: torch.Tensor, member_positions: torch.Tensor, cluster_base: torch.Tensor,
                           take: torch.Tensor, eligible_lo: torch.Tensor, eligible_hi: torch.Tensor,
                           out_offset: torch.Tensor, *, req_to_token: torch.Tensor | None = None,
                           token_row: torch.Tensor | None = None, out: torch.Tensor | None = None,
                           size: int | None = None) -> torch.Tensor:
    """Write each row's selected members, clusters in ascending id order, into one flat buffer.

    A row is one (request, layer) pair. Row ``r``'s cluster ``c`` is global cluster ``cluster_base[r] + c``
    of the membership CSR (rows that read the same membership share it); it gives its first ``take[r, c]``
    eligible members (``eligible_lo[r] <= position < eligible_hi[r]``) in ascending position. The row's
    entries are contiguous from ``out_offset[r]``: cluster ``c`` starts at ``Σ_{c' < c} take[r, c']``.

    Args:
        member_indptr: ``[M + 1] int64`` CSR over the global clusters (every membership group of every
            request in the batch, concatenated).
        member_positions: ``[nnz_m] int32/int64`` member positions, ascending within a cluster.
        cluster_base: ``[R] int64`` global id of row ``r``'s cluster 0.
        take: ``[R, C] int64`` eligible members to take per cluster (`choose_clusters`; padding
            columns beyond a row's cluster count must be 0); at most the cluster's eligible count.
        eligible_lo, eligible_hi: ``[R] int64`` per row the eligible positions' bounds (`eligible_bounds`).
        out_offset: ``[R] int64`` where row ``r``'s entries start in ``out``.
        req_to_token: optional ``[rows, max_len] int32/int64`` position -> KV slot table (SGLang's); with it
            the slots ``req_to_token[token_row[r], position]`` are written instead of positions.
        token_row: ``[R] int32/int64`` row of ``req_to_token`` per row (SGLang's ``req_pool_indices``).
        out: optional ``[nnz] int32/int64`` buffer; only the rows' entries are written.
        size: length of a fresh buffer when ``out`` is None (int64, or ``req_to_token``'s dtype).

    Returns:
        ``out``.
    """
    if (req_to_token is None) != (token_row is None):
        raise ValueError("emit_members: expected req_to_token and token_row together, got only one of them")
    dtype = torch.int64 if req_to_token is None else req_to_token.dtype
    out = output_buffer(out, size, dtype, take.device, "emit_members")
    for r in range(take.shape[0]):
        lo, hi = int(eligible_lo[r]), int(eligible_hi[r])
        at = int(out_offset[r])
        for c in range(take.shape[1]):
            want = int(take[r, c])
            if want <= 0:
                continue
            g = int(cluster_base[r]) + c
            members = member_positions[int(member_indptr[g]) : int(member_indptr[g + 1])].to(torch.int64)
            chosen = members[(members >= lo) & (members < hi)][:want]
            values = chosen if req_to_token is None else req_to_token[int(token_row[r])][chosen]
            out[at : at + chosen.numel()] = values.to(out.dtype)
            at += want
    return out
