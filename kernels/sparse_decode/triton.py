"""Triton sparse decode attention over a CSR of KV slots: split-K with a log-sum-exp merge.

Stage 1, one program per (sequence, KV head, split): the split's share of the sequence's slot list is
walked in blocks of ``BLOCK_N`` entries; keys and values are gathered by slot, the ``G`` query heads
that read this KV head are scored with one ``tl.dot`` per block (padded to 16 rows), and an online
softmax keeps the running max / sum / weighted values; the split writes its normalised output and
log-sum-exp. Stage 2, one program per (sequence, query head): splits are merged with weights
``exp(lse_s - max lse)``. Empty lists (or splits) give ``lse = -inf`` and contribute nothing; a
sequence with nothing to attend gets zeros. Accumulation is fp32 whatever the input dtype; the dots run
in IEEE fp32 for fp32 inputs (a GPU would otherwise take TF32 and move fp32 results by ~1e-3) and in TF32
for fp16/bf16 inputs (upcast on load; TF32 keeps more mantissa than the inputs have).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["sparse_decode_triton"]


@triton.jit
def _split_kernel(
    q_ptr, k_ptr, v_ptr, indptr_ptr, slots_ptr, mid_o_ptr, mid_lse_ptr,
    stride_qb, stride_qh, stride_ks, stride_kh, stride_vs, stride_vh,
    stride_ob, stride_oh, stride_os, stride_lb, stride_lh,
    scale, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, V_DIM: tl.constexpr, NUM_SPLITS: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    b = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    start = tl.load(indptr_ptr + b)
    end = tl.load(indptr_ptr + b + 1)
    per_split = tl.cdiv(end - start, NUM_SPLITS)
    lo = start + split * per_split
    hi = tl.minimum(lo + per_split, end)

    g = tl.arange(0, BLOCK_G)  # query heads of this KV head (padded)
    d = tl.arange(0, BLOCK_D)
    dv = tl.arange(0, BLOCK_DV)
    heads = kv_head * GROUP + g
    g_ok = g < GROUP
    q = tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + d[None, :],
                mask=g_ok[:, None] & (d[None, :] < HEAD_DIM), other=0.0).to(tl.float32)  # [BLOCK_G, BLOCK_D]

    m = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_DV], tl.float32)
    for n0 in range(lo, hi, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        n_ok = n < hi
        slot = tl.load(slots_ptr + n, mask=n_ok, other=0)
        k = tl.load(k_ptr + slot[:, None] * stride_ks + kv_head * stride_kh + d[None, :],
                    mask=n_ok[:, None] & (d[None, :] < HEAD_DIM), other=0.0).to(tl.float32)  # [BLOCK_N, BLOCK_D]
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale  # [BLOCK_G, BLOCK_N]
        qk = tl.where(n_ok[None, :], qk, float("-inf"))
        m_new = tl.maximum(m, tl.max(qk, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(qk - m_safe[:, None])
        alpha = tl.exp(m - m_safe)
        v = tl.load(v_ptr + slot[:, None] * stride_vs + kv_head * stride_vh + dv[None, :],
                    mask=n_ok[:, None] & (dv[None, :] < V_DIM), other=0.0).to(tl.float32)  # [BLOCK_N, BLOCK_DV]
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=DOT_PRECISION)
        l = l * alpha + tl.sum(p, 1)
        m = m_new

    has = l > 0
    o = acc / tl.where(has, l, 1.0)[:, None]
    lse = tl.where(has, m + tl.log(tl.where(has, l, 1.0)), float("-inf"))
    tl.store(mid_o_ptr + b * stride_ob + heads[:, None] * stride_oh + split * stride_os + dv[None, :], o,
             mask=g_ok[:, None] & (dv[None, :] < V_DIM))
    tl.store(mid_lse_ptr + b * stride_lb + heads * stride_lh + split, lse, mask=g_ok)


@triton.jit
def _merge_kernel(
    mid_o_ptr, mid_lse_ptr, out_ptr, stride_ob, stride_oh, stride_os, stride_lb, stride_lh,
    stride_outb, stride_outh, V_DIM: tl.constexpr, NUM_SPLITS: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    b = tl.program_id(0)
    head = tl.program_id(1)
    s = tl.arange(0, BLOCK_S)
    dv = tl.arange(0, BLOCK_DV)
    s_ok = s < NUM_SPLITS
    lse = tl.load(mid_lse_ptr + b * stride_lb + head * stride_lh + s, mask=s_ok, other=float("-inf"))
    top = tl.max(lse, 0)
    top_safe = tl.where(top == float("-inf"), 0.0, top)
    w = tl.where(lse == float("-inf"), 0.0, tl.exp(lse - top_safe))  # [BLOCK_S]
    o = tl.load(mid_o_ptr + b * stride_ob + head * stride_oh + s[:, None] * stride_os + dv[None, :],
                mask=s_ok[:, None] & (dv[None, :] < V_DIM), other=0.0)  # [BLOCK_S, BLOCK_DV]
    total = tl.sum(w, 0)
    result = tl.sum(o * w[:, None], 0) / tl.where(total > 0, total, 1.0)
    tl.store(out_ptr + b * stride_outb + head * stride_outh + dv, result.to(out_ptr.dtype.element_ty), mask=dv < V_DIM)


def sparse_decode_triton(q, k_buffer, v_buffer, kv_indptr, kv_slots, *, scale=None, out=None, num_splits: int = 4,
                         block_n: int = 32):
    """Same contract as `sparse_decode_reference` (``num_splits`` splits per sequence and KV head)."""
    batch, num_qo_heads, head_dim = q.shape
    num_kv_heads, v_dim = k_buffer.shape[1], v_buffer.shape[-1]
    group = num_qo_heads // num_kv_heads
    scale = head_dim**-0.5 if scale is None else scale
    if out is None:
        out = q.new_empty(batch, num_qo_heads, v_dim)
    if batch == 0:
        return out
    assert k_buffer.stride(-1) == 1 and v_buffer.stride(-1) == 1 and q.stride(-1) == 1, "last dims must be contiguous"
    mid_o = torch.empty(batch, num_qo_heads, num_splits, v_dim, dtype=torch.float32, device=q.device)
    mid_lse = torch.empty(batch, num_qo_heads, num_splits, dtype=torch.float32, device=q.device)
    kv_indptr = kv_indptr.to(q.device, torch.int64)
    kv_slots = kv_slots.to(q.device, torch.int64)
    if kv_slots.numel() == 0:
        kv_slots = torch.zeros(1, dtype=torch.int64, device=q.device)  # never read (every range is empty)
    block_g = max(16, triton.next_power_of_2(group))  # tl.dot needs >= 16 rows
    block_d = max(16, triton.next_power_of_2(head_dim))
    block_dv = max(16, triton.next_power_of_2(v_dim))
    _split_kernel[(batch, num_kv_heads, num_splits)](
        q, k_buffer, v_buffer, kv_indptr, kv_slots, mid_o, mid_lse,
        q.stride(0), q.stride(1), k_buffer.stride(0), k_buffer.stride(1), v_buffer.stride(0), v_buffer.stride(1),
        mid_o.stride(0), mid_o.stride(1), mid_o.stride(2), mid_lse.stride(0), mid_lse.stride(1),
        scale, GROUP=group, HEAD_DIM=head_dim, V_DIM=v_dim, NUM_SPLITS=num_splits,
        BLOCK_G=block_g, BLOCK_D=block_d, BLOCK_DV=block_dv, BLOCK_N=block_n,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
    )
    _merge_kernel[(batch, num_qo_heads)](
        mid_o, mid_lse, out, mid_o.stride(0), mid_o.stride(1), mid_o.stride(2), mid_lse.stride(0), mid_lse.stride(1),
        out.stride(0), out.stride(1), V_DIM=v_dim, NUM_SPLITS=num_splits,
        BLOCK_S=max(2, triton.next_power_of_2(num_splits)), BLOCK_DV=block_dv,
    )
    return out
