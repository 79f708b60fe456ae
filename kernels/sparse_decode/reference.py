"""Pure-torch reference of sparse decode attention: one query token per sequence against the KV slots
listed for that sequence (a CSR over sequences), fp32 accumulation, one sequence at a time."""

from __future__ import annotations

import torch

__all__ = ["sparse_decode_reference"]


def sparse_decode_reference(
    q: torch.Tensor,
    k_buffer: torch.Tensor,
    v_buffer: torch.Tensor,
    kv_indptr: torch.Tensor,
    kv_slots: torch.Tensor,
    *,
    scale: float | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``softmax(q·K_b/√D)·V_b`` per sequence ``b`` over its listed slots (decode: no causal mask, every
    listed entry precedes the query).

    Args:
        q: ``[B, num_qo_heads, D]`` float; query head ``h`` reads KV head ``h // (Hq / Hkv)``.
        k_buffer: ``[num_slots, num_kv_heads, D]`` the layer's K pool.
        v_buffer: ``[num_slots, num_kv_heads, Dv]`` the layer's V pool.
        kv_indptr: ``[B + 1] int64``; sequence ``b`` attends ``kv_slots[kv_indptr[b]:kv_indptr[b+1]]``.
        kv_slots: ``[nnz] int64`` pool rows.
        scale: softmax scale (default ``D ** -0.5``).
        out: optional ``[B, num_qo_heads, Dv]`` output (q's dtype).

    Returns:
        ``[B, num_qo_heads, Dv]`` in q's dtype; zeros for a sequence with an empty list.
    """
    batch, num_qo_heads, head_dim = q.shape
    num_kv_heads = k_buffer.shape[1]
    group = num_qo_heads // num_kv_heads
    scale = head_dim**-0.5 if scale is None else scale
    if out is None:
        out = q.new_empty(batch, num_qo_heads, v_buffer.shape[-1])
    bounds = kv_indptr.tolist()
    for b in range(batch):
        slots = kv_slots[bounds[b] : bounds[b + 1]]
        if slots.numel() == 0:
            out[b] = 0
            continue
        keys = k_buffer[slots].float()  # [n, Hkv, D]
        values = v_buffer[slots].float()  # [n, Hkv, Dv]
        queries = q[b].float().view(num_kv_heads, group, head_dim)  # [Hkv, G, D]
        weights = torch.softmax(torch.einsum("hgd,nhd->hgn", queries, keys) * scale, dim=-1)
        out[b] = torch.einsum("hgn,nhd->hgd", weights, values).reshape(num_qo_heads, -1).to(out.dtype)
    return out
