"""Pure-torch reference: causal attention of each query over an arbitrary subset of its sequence's KV."""

from __future__ import annotations

import torch
from torch.nn.functional import scaled_dot_product_attention

__all__ = ["attended_attention_reference"]


def attended_attention_reference(
    q: torch.Tensor,
    q_indptr: torch.Tensor,
    q_positions: torch.Tensor,
    k_buffer: torch.Tensor,
    v_buffer: torch.Tensor,
    kv_indptr: torch.Tensor,
    kv_slots: torch.Tensor,
    kv_positions: torch.Tensor,
    *,
    scale: float | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of sequence ``b``'s queries over the KV slots listed for ``b``, masked causally by position.

    A query at position ``p`` sees an attended entry at position ``s`` iff ``s <= p``. With the attended
    set equal to every position ``0..p`` this is exactly causal attention over the whole sequence.

    Args:
        q: ``[total_q, num_qo_heads, head_dim]`` float (fp32/fp16/bf16).
        q_indptr: ``[batch + 1] int64``; sequence ``b`` owns ``q[q_indptr[b]:q_indptr[b+1]]``.
        q_positions: ``[total_q] int64`` token position of each query in its sequence.
        k_buffer: ``[num_slots, num_kv_heads, head_dim]`` the layer's K pool (SGLang NHD layout).
        v_buffer: ``[num_slots, num_kv_heads, v_head_dim]`` the layer's V pool.
        kv_indptr: ``[batch + 1] int64``; sequence ``b`` attends ``kv_slots[kv_indptr[b]:kv_indptr[b+1]]``.
        kv_slots: ``[nnz] int64`` pool slot ids (all ``> 0``; slot 0 is SGLang's padding sink).
        kv_positions: ``[nnz] int64`` position of each listed slot in its sequence (any order).
        scale: softmax scale; default ``head_dim ** -0.5``.
        out: optional ``[total_q, num_qo_heads, v_head_dim]`` output buffer (q's dtype).

    Returns:
        ``[total_q, num_qo_heads, v_head_dim]`` in q's dtype. A query with no visible entry gets zeros.

    Example:
        >>> import torch
        >>> k = torch.randn(8, 1, 4); v = torch.randn(8, 1, 4); q = torch.randn(1, 2, 4)
        >>> o = attended_attention_reference(q, torch.tensor([0, 1]), torch.tensor([2]), k, v,
        ...     torch.tensor([0, 3]), torch.tensor([1, 2, 3]), torch.tensor([0, 1, 2]))
        >>> o.shape
        torch.Size([1, 2, 4])
    """
    num_qo_heads, num_kv_heads = q.shape[1], k_buffer.shape[1]
    if num_qo_heads % num_kv_heads:
        raise ValueError(f"num_qo_heads ({num_qo_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
    if out is None:
        out = q.new_empty(q.shape[0], num_qo_heads, v_buffer.shape[-1])
    q_bounds = q_indptr.tolist()
    kv_bounds = kv_indptr.tolist()
    for b in range(len(q_bounds) - 1):
        q0, q1 = q_bounds[b], q_bounds[b + 1]
        k0, k1 = kv_bounds[b], kv_bounds[b + 1]
        if q1 == q0:
            continue
        if k1 == k0:
            out[q0:q1] = 0
            continue
        slots = kv_slots[k0:k1]
        keys = k_buffer[slots].to(q.dtype).transpose(0, 1)  # [Hkv, n, D]
        values = v_buffer[slots].to(q.dtype).transpose(0, 1)  # [Hkv, n, Dv]
        visible = kv_positions[k0:k1].unsqueeze(0) <= q_positions[q0:q1].unsqueeze(1)  # [Tq, n]
        queries = q[q0:q1].transpose(0, 1)  # [Hq, Tq, D]
        attn = scaled_dot_product_attention(
            queries.unsqueeze(0),
            keys.unsqueeze(0),
            values.unsqueeze(0),
            attn_mask=None if bool(visible.all()) else visible,
            scale=scale,
            enable_gqa=num_qo_heads != num_kv_heads,
        )  # [1, Hq, Tq, Dv]
        result = attn.squeeze(0).transpose(0, 1)
        no_key = ~visible.any(dim=1)
        if bool(no_key.any()):
            result = result.masked_fill(no_key[:, None, None], 0)
        out[q0:q1] = result
    return out
