"""Sparse decode attention: one query token per sequence over that sequence's listed KV slots (the CSR
a retrieval policy's `LayerKV` gives after mapping positions to slots).

`sparse_decode` dispatches: the Triton split-K kernel (`triton.py`) for CUDA tensors, or when asked
with ``impl='triton'`` (tests run it on the CPU under ``TRITON_INTERPRET=1``); the pure-torch reference
(`reference.py`) elsewhere. Both have the same signature and contract.
"""

from __future__ import annotations

from .reference import sparse_decode_reference

__all__ = ["sparse_decode", "sparse_decode_reference"]


def sparse_decode(q, k_buffer, v_buffer, kv_indptr, kv_slots, *, scale=None, out=None, impl: str | None = None):
    """See `sparse_decode_reference` for the contract; ``impl``: None (by device), 'triton' or 'reference'."""
    impl = impl or ("triton" if q.is_cuda else "reference")
    if impl == "triton":
        from .triton import sparse_decode_triton  # imports triton: only when used

        return sparse_decode_triton(q, k_buffer, v_buffer, kv_indptr, kv_slots, scale=scale, out=out)
    if impl != "reference":
        raise ValueError(f"sparse_decode: impl: expected None, 'triton' or 'reference', got {impl!r}")
    return sparse_decode_reference(q, k_buffer, v_buffer, kv_indptr, kv_slots, scale=scale, out=out)
