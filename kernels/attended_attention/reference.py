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
    max_q: int | None = None,
    max_kv: int | None = None,
) -> torch.Tensor:
    """Attention of sequence ``b``'s queries over the KV slots listed for ``b``, masked causally by position.

    A query at position ``p`` sees an attended entry at position ``s`` iff ``s <= p``. With the attended
    set equal to every position ``0..p`` this is exactly causal attention over the whole sequence.
    One padded batch (``[B, max_q]`` queries × ``[B, max_kv]`` entries, padding masked): no loop over
    sequences and, given ``max_q``/``max_kv``, no host synchronisation.

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
        max_q, max_kv: the longest query segment / attended list (computed when not given: a host sync).

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
    device = q.device
    q_indptr, kv_indptr = q_indptr.to(device), kv_indptr.to(device)
    q_lens, kv_lens = q_indptr[1:] - q_indptr[:-1], kv_indptr[1:] - kv_indptr[:-1]  # [B]
    max_q = int(q_lens.max()) if max_q is None else max_q
    max_kv = int(kv_lens.max()) if max_kv is None else max_kv
    if q.shape[0] == 0:
        return out
    if max_kv == 0:
        return out.zero_()
    q_off = torch.arange(max_q, device=device)
    kv_off = torch.arange(max_kv, device=device)
    q_valid = q_off[None, :] < q_lens[:, None]  # [B, max_q]
    kv_valid = kv_off[None, :] < kv_lens[:, None]  # [B, max_kv]
    q_idx = (q_indptr[:-1, None] + q_off).clamp(max=q.shape[0] - 1)  # padding reads a real row, masked
    kv_idx = (kv_indptr[:-1, None] + kv_off).clamp(max=max(kv_slots.numel() - 1, 0))
    slots = kv_slots[kv_idx]  # [B, max_kv]
    keys = k_buffer[slots].to(q.dtype).transpose(1, 2)  # [B, Hkv, max_kv, D]
    values = v_buffer[slots].to(q.dtype).transpose(1, 2)  # [B, Hkv, max_kv, Dv]
    queries = q[q_idx].transpose(1, 2)  # [B, Hq, max_q, D]
    visible = kv_valid[:, None, :] & (kv_positions[kv_idx][:, None, :] <= q_positions[q_idx][:, :, None])  # [B, max_q, max_kv]
    attn = scaled_dot_product_attention(
        queries, keys, values, attn_mask=visible[:, None], scale=scale, enable_gqa=num_qo_heads != num_kv_heads,
    ).transpose(1, 2)  # [B, max_q, Hq, Dv]; rows with nothing visible are NaN here
    attn = torch.where(visible.any(-1)[..., None, None], attn, 0)
    rows = torch.where(q_valid, q_idx, q.shape[0])  # padding rows go to a scratch row past the end
    scratch = out.new_empty((q.shape[0] + 1,) + tuple(out.shape[1:]))
    scratch.index_copy_(0, rows.flatten(), attn.reshape(-1, num_qo_heads, attn.shape[-1]).to(out.dtype))
    out.copy_(scratch[:-1])
    return out
