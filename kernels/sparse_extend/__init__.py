"""Sparse extend (prefill) attention: each request's new chunk attends a selected subset of its cached
prefix (all visible to every query of the chunk) plus the chunk itself causally — position-causal
attention over the attended list ``selected prefix ∪ chunk``.

SGLang already ships this kernel: its Triton ``extend_attention_fwd`` reads a prefix through
``kv_indptr``/``kv_indices`` (no mask on it) and then the chunk's own K/V causally, so listing the selected
prefix slots in ``kv_indices`` is exactly our case. `sparse_extend` calls it for CUDA tensors or when asked
with ``impl='triton'`` (tests run it on the CPU under ``TRITON_INTERPRET=1``), and the pure-torch
`sparse_extend_reference` elsewhere. SGLang is imported inside the call only: ``mosaic_sglang.kernels``
must import without it.

Constraints of SGLang's kernel (0.5.23): page size 1 here (``prefix_slots`` are token slots); any head dim
(padded to the next power of two and masked; 192/288/576 take its rope-split path); ``q``, ``k_extend``,
``v_extend``, pools and ``out`` need a unit stride on the last axis; fp32 dots run as TF32 on NVIDIA GPUs.
"""

from __future__ import annotations

import torch

from .reference import sparse_extend_reference

__all__ = ["sparse_extend", "sparse_extend_reference"]


def sparse_extend(
    q: torch.Tensor,
    k_extend: torch.Tensor,
    v_extend: torch.Tensor,
    k_buffer: torch.Tensor,
    v_buffer: torch.Tensor,
    qo_indptr: torch.Tensor,
    prefix_indptr: torch.Tensor,
    prefix_slots: torch.Tensor,
    *,
    max_extend_len: int,
    scale: float | None = None,
    out: torch.Tensor | None = None,
    impl: str | None = None,
) -> torch.Tensor:
    """See `sparse_extend_reference` for the contract (shapes, dtypes, masking).

    ``max_extend_len`` (host int, ``max(qo_indptr[b+1] - qo_indptr[b])`` or any upper bound) sizes the
    Triton grid, so the call never syncs. ``impl``: None (by device), ``'triton'`` or ``'reference'``.

    Example (CPU, reference path):
        >>> import torch
        >>> q = torch.randn(3, 2, 8); k = torch.randn(3, 1, 8); pool = torch.randn(10, 1, 8)
        >>> o = sparse_extend(q, k, k, pool, pool, torch.tensor([0, 3]), torch.tensor([0, 2]),
        ...                   torch.tensor([4, 7]), max_extend_len=3)
        >>> o.shape
        torch.Size([3, 2, 8])
    """
    impl = impl or ("triton" if q.is_cuda else "reference")
    if impl not in ("triton", "reference"):
        raise ValueError(f"sparse_extend: impl: expected None, 'triton' or 'reference', got {impl!r}")
    _check_shapes(q, k_extend, v_extend, k_buffer, v_buffer, out)
    if out is None:
        out = q.new_empty(q.shape[0], q.shape[1], v_buffer.shape[-1])
    if impl == "reference":
        return sparse_extend_reference(q, k_extend, v_extend, k_buffer, v_buffer, qo_indptr, prefix_indptr,
                                       prefix_slots, max_extend_len=max_extend_len, scale=scale, out=out)
    if q.shape[0] == 0:
        return out
    if max_extend_len < 1:
        raise ValueError(f"sparse_extend: max_extend_len: expected the longest chunk (>= 1), got {max_extend_len}")
    from sglang.kernels.ops.attention.extend_attention import extend_attention_fwd  # SGLang: only when used

    extend_attention_fwd(
        q, k_extend, v_extend, out, k_buffer, v_buffer, qo_indptr, prefix_indptr, prefix_slots,
        None,  # custom_mask: none; the prefix is fully visible and the chunk is plain causal
        True,  # is_causal: the chunk attends itself causally
        None,  # mask_indptr: only read with a custom mask
        max_extend_len,
        1.0, 1.0,  # k_scale, v_scale: an unquantised pool
        sm_scale=q.shape[-1] ** -0.5 if scale is None else scale,
        logit_cap=0.0, sliding_window_size=-1, sinks=None, page_size=1,
    )
    return out


def _check_shapes(q, k_extend, v_extend, k_buffer, v_buffer, out) -> None:
    """Boundary checks on shapes and strides only (no device reads)."""
    total, num_qo_heads, head_dim = q.shape
    num_kv_heads, v_head_dim = k_buffer.shape[1], v_buffer.shape[-1]
    if num_qo_heads % num_kv_heads:
        raise ValueError(f"sparse_extend: num_qo_heads ({num_qo_heads}) must be a multiple of num_kv_heads "
                         f"({num_kv_heads})")
    want = {"k_extend": (total, num_kv_heads, head_dim), "v_extend": (total, num_kv_heads, v_head_dim),
            "k_buffer": (k_buffer.shape[0], num_kv_heads, head_dim),
            "v_buffer": (k_buffer.shape[0], num_kv_heads, v_head_dim)}
    if out is not None:
        want["out"] = (total, num_qo_heads, v_head_dim)
    got = {"k_extend": k_extend, "v_extend": v_extend, "k_buffer": k_buffer, "v_buffer": v_buffer, "out": out}
    for name, shape in want.items():
        tensor = got[name]
        if tuple(tensor.shape) != shape:
            raise ValueError(f"sparse_extend: {name}: expected shape {shape}, got {tuple(tensor.shape)}")
        if tensor.stride(-1) != 1:
            raise ValueError(f"sparse_extend: {name}: last axis must be contiguous (stride 1), got "
                             f"{tensor.stride(-1)}; pass .contiguous()")
    if q.stride(-1) != 1:
        raise ValueError(f"sparse_extend: q: last axis must be contiguous, got stride {q.stride(-1)}")
    for name, tensor in got.items():
        if tensor is not None and tensor.dtype != q.dtype:
            raise ValueError(f"sparse_extend: {name}: expected q's dtype {q.dtype}, got {tensor.dtype} "
                             "(a quantised pool needs k/v scales, which this op does not take)")
