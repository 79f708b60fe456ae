"""Pure-torch reference of sparse extend attention: each request's chunk of new tokens attends a selected
subset of its cached prefix (every selected entry visible to every query) plus the chunk itself causally.

This is the CPU twin of SGLang's Triton ``extend_attention_fwd`` as `sparse_extend` calls it; it is written
as a plain loop over requests in fp32 so it is obviously right, and it shares the dispatcher's signature.
"""

from __future__ import annotations

import torch

__all__ = ["sparse_extend_reference"]


def sparse_extend_reference(
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
) -> torch.Tensor:
    """Request ``b``'s extend queries over ``[selected prefix of b] ++ [b's own chunk, causal]``.

    Query ``i`` of request ``b``'s chunk sees every slot in ``prefix_slots[prefix_indptr[b]:prefix_indptr[b+1]]``
    (all of them precede the chunk, so position-causality holds trivially) and the chunk's tokens ``0..i``.

    Args:
        q: ``[T, num_qo_heads, head_dim]`` float, the extend queries of all requests, packed.
        k_extend: ``[T, num_kv_heads, head_dim]`` the chunk's own keys (same dtype as ``q``).
        v_extend: ``[T, num_kv_heads, v_head_dim]`` the chunk's own values.
        k_buffer: ``[num_slots, num_kv_heads, head_dim]`` the layer's K pool (SGLang NHD layout).
        v_buffer: ``[num_slots, num_kv_heads, v_head_dim]`` the layer's V pool.
        qo_indptr: ``[B + 1] int32/int64``; request ``b`` owns rows ``qo_indptr[b]:qo_indptr[b+1]`` of q/k/v_extend.
        prefix_indptr: ``[B + 1] int32/int64``; CSR over ``prefix_slots``.
        prefix_slots: ``[nnz] int32/int64`` pool rows of the selected prefix, any order, possibly empty per request.
        max_extend_len: the longest chunk (a host int; unused here, the Triton path sizes its grid with it).
        scale: softmax scale; default ``head_dim ** -0.5``.
        out: optional ``[T, num_qo_heads, v_head_dim]`` output buffer (q's dtype).

    Returns:
        ``[T, num_qo_heads, v_head_dim]`` in q's dtype (``out`` when given).
    """
    del max_extend_len  # kept for the shared signature
    num_qo_heads, head_dim = q.shape[1], q.shape[2]
    num_kv_heads = k_buffer.shape[1]
    group = num_qo_heads // num_kv_heads
    scale = head_dim**-0.5 if scale is None else scale
    if out is None:
        out = q.new_empty(q.shape[0], num_qo_heads, v_buffer.shape[-1])
    q_bounds, p_bounds = qo_indptr.tolist(), prefix_indptr.tolist()
    for b in range(len(q_bounds) - 1):
        q0, q1 = q_bounds[b], q_bounds[b + 1]
        if q1 == q0:
            continue
        slots = prefix_slots[p_bounds[b] : p_bounds[b + 1]].long()
        n_prefix, n_extend = slots.numel(), q1 - q0
        keys = torch.cat([k_buffer[slots], k_extend[q0:q1]]).float()  # [P + E, Hkv, D]
        values = torch.cat([v_buffer[slots], v_extend[q0:q1]]).float()  # [P + E, Hkv, Dv]
        queries = q[q0:q1].float().view(n_extend, num_kv_heads, group, head_dim)  # [E, Hkv, G, D]
        scores = torch.einsum("ehgd,nhd->hgen", queries, keys) * scale  # [Hkv, G, E, P + E]
        rows = torch.arange(n_extend, device=q.device)[:, None]
        cols = torch.arange(n_prefix + n_extend, device=q.device)[None, :]
        visible = (cols < n_prefix) | (cols - n_prefix <= rows)  # [E, P + E]: whole prefix, causal chunk
        weights = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
        attn = torch.einsum("hgen,nhd->ehgd", weights, values)  # [E, Hkv, G, Dv]
        out[q0:q1] = attn.reshape(n_extend, num_qo_heads, -1).to(out.dtype)
    return out
