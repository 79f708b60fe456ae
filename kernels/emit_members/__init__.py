"""K3, emit the selected members: per (request, layer) row, the positions (or KV slots) of the members
`choose_clusters`'s ``take [R, C]`` asks for, written contiguously into the row's selected part —
what `attended_mask` selects beyond the always part, as a list the attention kernels read.

`emit_members` dispatches: the Triton kernel (`triton.py`) for CUDA tensors or with ``impl='triton'``
(interpreter tests), the batched torch form (`vectorized.py`, no host sync, cost independent of the
sequence) elsewhere; the plain-loop reference (`reference.py`, ``impl='reference'``) is what both are
tested against. `eligible_bounds` gives the per-row eligibility bounds from the config and the served
sequence's length.
"""

from __future__ import annotations

from .reference import eligible_bounds, emit_members_reference
from .vectorized import emit_members_vectorized

__all__ = ["emit_members", "emit_members_reference", "emit_members_vectorized", "eligible_bounds"]


def emit_members(member_indptr, member_positions, cluster_base, take, eligible_lo, eligible_hi, out_offset, *,
                 req_to_token=None, token_row=None, out=None, size=None, impl: str | None = None):
    """See `emit_members_reference`; ``impl``: None (by device), 'triton', 'vectorized' or 'reference'."""
    impl = impl or ("triton" if take.is_cuda else "vectorized")
    args = (member_indptr, member_positions, cluster_base, take, eligible_lo, eligible_hi, out_offset)
    if impl == "triton":
        from .triton import emit_members_triton  # imports triton: only when used

        return emit_members_triton(*args, req_to_token=req_to_token, token_row=token_row, out=out, size=size)
    if impl == "vectorized":
        return emit_members_vectorized(*args, req_to_token=req_to_token, token_row=token_row, out=out, size=size)
    if impl != "reference":
        raise ValueError(f"emit_members: impl: expected None, 'triton', 'vectorized' or 'reference', got {impl!r}")
    return emit_members_reference(*args, req_to_token=req_to_token, token_row=token_row, out=out, size=size)
