"""K4, assemble the always-attended part: per request, its sinks, text, recent window and every position
past its index, written (as positions or KV slots) into the first ``a_b`` entries of its attended list.

The host builds a compact descriptor once per selection (`ranges.py`: disjoint position ranges, CSR
over requests); `assemble_always` expands it on the device: the Triton kernel (`triton.py`) for CUDA
tensors or with ``impl='triton'`` (interpreter tests), the plain-loop reference (`reference.py`)
otherwise. Together they give `always_attended_mask(frame_ids[:indexed_end], seq_len=...)`'s positions
followed by ``[indexed_end, seq_len)``, as `ClusterAttendedSet` plans them.
"""

from __future__ import annotations

from .ranges import AlwaysRanges, always_ranges, merge_ranges, pack_ranges
from .reference import assemble_always_reference

__all__ = ["assemble_always", "assemble_always_reference", "AlwaysRanges", "always_ranges", "merge_ranges",
           "pack_ranges"]


def assemble_always(range_indptr, range_starts, range_ends, indexed_end, seq_len, out_offset, *, max_ranges,
                    req_to_token=None, token_row=None, out=None, size=None, impl: str | None = None):
    """See `assemble_always_reference`; ``impl``: None (by device), 'triton' or 'reference'."""
    impl = impl or ("triton" if seq_len.is_cuda else "reference")
    args = (range_indptr, range_starts, range_ends, indexed_end, seq_len, out_offset)
    kwargs = dict(max_ranges=max_ranges, req_to_token=req_to_token, token_row=token_row, out=out, size=size)
    if impl == "triton":
        from .triton import assemble_always_triton  # imports triton: only when used

        return assemble_always_triton(*args, **kwargs)
    if impl != "reference":
        raise ValueError(f"assemble_always: impl: expected None, 'triton' or 'reference', got {impl!r}")
    return assemble_always_reference(*args, **kwargs)
