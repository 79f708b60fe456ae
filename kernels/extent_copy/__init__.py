"""K7 pool⇄host extent copies: the same KV-pool slots of every layer, K and V, to or from one staging
tensor ``[L, n, H, D]`` in a single launch (`gather_slots`: offload direction, pool → staging, then one
device→host copy per run of adjacent host extents, `TransferPlan.runs`; `scatter_slots`: the reverse).
`layer_table` builds the pointer table the Triton kernel reads (once per pool).

`gather_slots` / `scatter_slots` dispatch: the Triton kernel (`triton.py`) for CUDA tensors or with
``impl='triton'`` (the interpreter tests), the row-by-row reference (`reference.py`) otherwise. Both have
the same signature and contract; the tests also hold them to ``index_select`` / ``index_copy_``.
"""

from __future__ import annotations

from .layers import LayerSpec, LayerTable, layer_table
from .reference import gather_slots_reference, scatter_slots_reference

__all__ = [
    "LayerSpec", "LayerTable", "gather_slots", "gather_slots_reference", "layer_table",
    "scatter_slots", "scatter_slots_reference",
]


def _impl(impl: str | None, stage, op: str) -> str:
    impl = impl or ("triton" if stage.is_cuda else "reference")
    if impl not in ("triton", "reference"):
        raise ValueError(f"{op}: impl: expected None, 'triton' or 'reference', got {impl!r}")
    return impl


def gather_slots(layers_k, layers_v, slots, out_k, out_v, *, k_table=None, v_table=None, impl: str | None = None):
    """See `gather_slots_reference`; ``k_table`` / ``v_table``: cached `layer_table`s (Triton; optional);
    ``impl``: None (by ``out_k``'s device), 'triton' or 'reference'."""
    if _impl(impl, out_k, "gather_slots") == "triton":
        from .triton import gather_slots_triton  # imports triton: only when used

        return gather_slots_triton(layers_k, layers_v, slots, out_k, out_v, k_table=k_table, v_table=v_table)
    return gather_slots_reference(layers_k, layers_v, slots, out_k, out_v)


def scatter_slots(src_k, src_v, slots, layers_k, layers_v, *, k_table=None, v_table=None, impl: str | None = None):
    """See `scatter_slots_reference`; ``k_table`` / ``v_table``: cached `layer_table`s (Triton; optional);
    ``impl``: None (by ``src_k``'s device), 'triton' or 'reference'."""
    if _impl(impl, src_k, "scatter_slots") == "triton":
        from .triton import scatter_slots_triton  # imports triton: only when used

        return scatter_slots_triton(src_k, src_v, slots, layers_k, layers_v, k_table=k_table, v_table=v_table)
    return scatter_slots_reference(src_k, src_v, slots, layers_k, layers_v)
