"""Triton cluster scoring with GQA aggregation: one priority per (row, cluster) from the row's queries.

The query vectors that read KV head ``h`` are the ``Tq · group`` pairs (token, query head of ``h``),
numbered ``j = t · group + g`` and scored in blocks of ``BLOCK_Q`` (at least 16 rows, for ``tl.dot``)
against blocks of ``BLOCK_C`` centroids with one fp32 ``tl.dot`` each (inputs upcast on load, IEEE
precision: the fp32 result must match the serving path's fp32 matmul, and the kernel reads the centroids
once per pass, so it is bandwidth-bound and tensor-core TF32 would buy nothing).

- ``_score_kernel``, one program per (row, cluster block): loops over KV heads and query blocks, keeps
  the running sum (mean) or max per cluster and writes ``-inf`` at padding. A block with no live cluster
  (cost ``<= 0`` or index ``>= num_clusters``) skips the loops.
- ``'size_weighted'`` needs a softmax over all clusters per (row, KV head, query vector), so it first
  runs ``_lse_kernel``, one program per (row, KV head, query block): an online max / sum over the row's
  live cluster blocks gives each query vector's log-sum-exp (``-inf`` when none is live); the score
  kernel then reduces ``exp(logit - lse)`` and divides by the cost. Logits are recomputed, not stored.

No host synchronisation: grids come from shapes, ``num_clusters`` is read on the device.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .reference import RULES, check_inputs

__all__ = ["cluster_scores_triton"]

@triton.jit
def _load_queries(q_ptr, row, kv_head, j0, num_vectors, stride_qr, stride_qt, stride_qh, stride_qd,
                  GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr):
    """Query vectors ``j0 .. j0 + BLOCK_Q`` of one KV head: ``q [BLOCK_Q, BLOCK_D]`` fp32, ``|q|² [BLOCK_Q]``."""
    j = j0 + tl.arange(0, BLOCK_Q)
    d = tl.arange(0, BLOCK_D)
    j_ok = j < num_vectors
    token = j // GROUP
    head = kv_head * GROUP + j % GROUP
    ptrs = q_ptr + row * stride_qr + token[:, None] * stride_qt + head[:, None] * stride_qh + d[None, :] * stride_qd
    q = tl.load(ptrs, mask=j_ok[:, None] & (d[None, :] < HEAD_DIM), other=0.0).to(tl.float32)  # [BLOCK_Q, BLOCK_D]
    return q, tl.sum(q * q, 1), j, j_ok


@triton.jit
def _load_costs(cost_ptr, row, c0, num_live, stride_kr, stride_kc, BLOCK_C: tl.constexpr):
    """Clusters ``c0 .. c0 + BLOCK_C``: index ``[BLOCK_C]``, cost ``[BLOCK_C]`` (0 past ``num_live``), live mask."""
    c = c0 + tl.arange(0, BLOCK_C)
    cost = tl.load(cost_ptr + row * stride_kr + c * stride_kc, mask=c < num_live, other=0)
    return c, cost, cost > 0


@triton.jit
def _load_clusters(cent_ptr, spread_ptr, row, kv_head, c, num_live, stride_cr, stride_cc, stride_ch, stride_cd,
                   stride_sr, stride_sc, stride_sh, RULE: tl.constexpr, HEAD_DIM: tl.constexpr,
                   BLOCK_D: tl.constexpr):
    """Centroids of clusters ``c`` for one KV head, transposed ``[BLOCK_D, BLOCK_C]`` fp32, and the
    clamped spreads ``[BLOCK_C]`` (zeros for 'centroid', which does not read them)."""
    d = tl.arange(0, BLOCK_D)
    c_ok = c < num_live
    ptrs = cent_ptr + row * stride_cr + c[None, :] * stride_cc + kv_head * stride_ch + d[:, None] * stride_cd
    cent_t = tl.load(ptrs, mask=(d[:, None] < HEAD_DIM) & c_ok[None, :], other=0.0).to(tl.float32)
    spread = tl.zeros(c.shape, tl.float32)
    if RULE != 0:
        spread = tl.load(spread_ptr + row * stride_sr + c * stride_sc + kv_head * stride_sh, mask=c_ok, other=0.0)
        spread = tl.maximum(spread.to(tl.float32), 0.0)
    return cent_t, spread


@triton.jit
def _logits(q, q_sq, cent_t, spread, cost, live, scale, RULE: tl.constexpr, HEAD_DIM: tl.constexpr):
    """``[BLOCK_Q, BLOCK_C]`` logits of one rule (the README's formulas); 'size_weighted' is ``-inf`` off ``live``."""
    logits = tl.dot(q, cent_t, input_precision="ieee") * scale  # q·c/√D
    if RULE == 1:  # + |q|·r/√D, r = RMS radius
        logits += tl.sqrt(q_sq)[:, None] * tl.sqrt(spread)[None, :] * scale
    if RULE == 2:  # + |q|²σ²/(2D) with σ² = spread/D, + log cost
        logits += q_sq[:, None] * (scale * scale * 0.5) * (spread / HEAD_DIM)[None, :]
        logits += tl.log(tl.maximum(cost, 1).to(tl.float32))[None, :]
        logits = tl.where(live[None, :], logits, float("-inf"))
    return logits


@triton.jit
def _num_live(num_clusters_ptr, row, num_cl, HAS_NUM_CLUSTERS: tl.constexpr):
    """Clusters of this row that may be live: ``min(num_clusters[row], C)``, or ``C``."""
    num_live = num_cl
    if HAS_NUM_CLUSTERS:
        num_live = tl.minimum(tl.load(num_clusters_ptr + row), num_cl)
    return num_live


@triton.jit
def _lse_kernel(
    q_ptr, cent_ptr, spread_ptr, cost_ptr, num_clusters_ptr, lse_ptr, num_cl, num_vectors, num_kv_heads, scale,
    stride_qr, stride_qt, stride_qh, stride_qd, stride_cr, stride_cc, stride_ch, stride_cd,
    stride_sr, stride_sc, stride_sh, stride_kr, stride_kc,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, HAS_NUM_CLUSTERS: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)  # int64 offsets: stacked rows × clusters can pass 2³¹ elements
    kv_head = tl.program_id(1)
    q, q_sq, j, j_ok = _load_queries(q_ptr, row, kv_head, tl.program_id(2) * BLOCK_Q, num_vectors,
                                     stride_qr, stride_qt, stride_qh, stride_qd, GROUP, HEAD_DIM, BLOCK_Q, BLOCK_D)
    num_live = _num_live(num_clusters_ptr, row, num_cl, HAS_NUM_CLUSTERS)
    run_max = tl.full([BLOCK_Q], float("-inf"), tl.float32)
    run_sum = tl.zeros([BLOCK_Q], tl.float32)
    for c0 in range(0, num_live, BLOCK_C):  # trailing padding past num_live is never read
        c, cost, live = _load_costs(cost_ptr, row, c0, num_live, stride_kr, stride_kc, BLOCK_C)
        cent_t, spread = _load_clusters(cent_ptr, spread_ptr, row, kv_head, c, num_live, stride_cr, stride_cc,
                                        stride_ch, stride_cd, stride_sr, stride_sc, stride_sh, 2, HEAD_DIM, BLOCK_D)
        logits = _logits(q, q_sq, cent_t, spread, cost, live, scale, 2, HEAD_DIM)  # [BLOCK_Q, BLOCK_C]
        new_max = tl.maximum(run_max, tl.max(logits, 1))
        safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)  # no live cluster yet: avoid -inf - -inf
        run_sum = run_sum * tl.exp(run_max - safe_max) + tl.sum(tl.exp(logits - safe_max[:, None]), 1)
        run_max = new_max
    lse = tl.where(run_sum > 0, run_max + tl.log(tl.where(run_sum > 0, run_sum, 1.0)), float("-inf"))  # [BLOCK_Q]
    tl.store(lse_ptr + (row * num_kv_heads + kv_head) * num_vectors + j, lse, mask=j_ok)


@triton.jit
def _score_kernel(
    q_ptr, cent_ptr, spread_ptr, cost_ptr, num_clusters_ptr, lse_ptr, out_ptr,
    num_cl, num_vectors, num_kv_heads, scale,
    stride_qr, stride_qt, stride_qh, stride_qd, stride_cr, stride_cc, stride_ch, stride_cd,
    stride_sr, stride_sc, stride_sh, stride_kr, stride_kc, stride_or, stride_oc,
    RULE: tl.constexpr, REDUCE_MAX: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
    HAS_NUM_CLUSTERS: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    num_live = _num_live(num_clusters_ptr, row, num_cl, HAS_NUM_CLUSTERS)
    c, cost, live = _load_costs(cost_ptr, row, tl.program_id(1) * BLOCK_C, num_live, stride_kr, stride_kc, BLOCK_C)
    # early exit: a block without a live cluster is all -inf, its logits are never needed
    heads_to_visit = tl.where(tl.max(live.to(tl.int32), 0) > 0, num_kv_heads, 0)
    if REDUCE_MAX:
        acc = tl.full([BLOCK_C], float("-inf"), tl.float32)
    else:
        acc = tl.zeros([BLOCK_C], tl.float32)
    for kv_head in range(0, heads_to_visit):
        cent_t, spread = _load_clusters(cent_ptr, spread_ptr, row, kv_head, c, num_live, stride_cr, stride_cc,
                                        stride_ch, stride_cd, stride_sr, stride_sc, stride_sh, RULE, HEAD_DIM, BLOCK_D)
        for j0 in range(0, num_vectors, BLOCK_Q):
            q, q_sq, j, j_ok = _load_queries(q_ptr, row, kv_head, j0, num_vectors, stride_qr, stride_qt, stride_qh,
                                             stride_qd, GROUP, HEAD_DIM, BLOCK_Q, BLOCK_D)
            logits = _logits(q, q_sq, cent_t, spread, cost, live, scale, RULE, HEAD_DIM)  # [BLOCK_Q, BLOCK_C]
            if RULE == 2:  # the query's estimated attention share, exp(logit - lse)
                lse = tl.load(lse_ptr + (row * num_kv_heads + kv_head) * num_vectors + j, mask=j_ok, other=0.0)
                lse = tl.where(lse == float("-inf"), 0.0, lse)  # [BLOCK_Q]; such rows have no live logit
                logits = tl.where(live[None, :], tl.exp(logits - lse[:, None]), 0.0)
            if REDUCE_MAX:
                acc = tl.maximum(acc, tl.max(tl.where(j_ok[:, None], logits, float("-inf")), 0))
            else:
                acc += tl.sum(tl.where(j_ok[:, None], logits, 0.0), 0)
    score = acc  # [BLOCK_C]
    if not REDUCE_MAX:
        score = acc / (num_vectors * num_kv_heads)  # every (token, query head) of the row
    if RULE == 2:  # attention mass per budget token
        score = score / tl.maximum(cost, 1).to(tl.float32)
    tl.store(out_ptr + row * stride_or + c * stride_oc, tl.where(live, score, float("-inf")), mask=c < num_cl)


def cluster_scores_triton(queries, centroids, spreads, costs, *, rule: str, reduce: str, num_clusters=None,
                          out=None, always_lse=None, block_c: int = 64, block_q: int = 32):
    """Same contract as `cluster_scores_reference` (all tensors on one device). ``block_c`` clusters and up
    to ``block_q`` query vectors (padded to >= 16 for ``tl.dot``) per tile; powers of two. ``always_lse``
    joins the clusters' log-sum-exp between the two kernels (one elementwise op)."""
    check_inputs(queries, centroids, spreads, costs, rule, reduce, num_clusters, out, always_lse)
    rows, tq, num_qo_heads, head_dim = queries.shape
    num_cl, num_kv_heads = centroids.shape[1], centroids.shape[2]
    group = num_qo_heads // num_kv_heads
    num_vectors = tq * group  # query vectors per KV head
    if out is None:
        out = torch.empty(rows, num_cl, dtype=torch.float32, device=queries.device)
    if rows == 0 or num_cl == 0:
        return out
    rule_id = RULES.index(rule)
    size_weighted = rule == "size_weighted"
    block_q = max(16, min(block_q, triton.next_power_of_2(num_vectors)))
    block_d = max(16, triton.next_power_of_2(head_dim))
    # Unused pointers still need a tensor: costs stands in for num_clusters, out for lse (never read then).
    num_clusters_arg = costs if num_clusters is None else num_clusters
    lse = torch.empty(rows, num_kv_heads, num_vectors, dtype=torch.float32, device=queries.device) if size_weighted \
        else out
    strides = (*queries.stride(), *centroids.stride(), *spreads.stride(), *costs.stride())
    common = dict(GROUP=group, HEAD_DIM=head_dim, HAS_NUM_CLUSTERS=num_clusters is not None,
                  BLOCK_Q=block_q, BLOCK_C=block_c, BLOCK_D=block_d)
    scale = 1.0 / math.sqrt(head_dim)
    if size_weighted:
        _lse_kernel[(rows, num_kv_heads, triton.cdiv(num_vectors, block_q))](
            queries, centroids, spreads, costs, num_clusters_arg, lse, num_cl, num_vectors, num_kv_heads, scale,
            *strides, **common)
        if always_lse is not None:  # the share of the total mass: the always part joins the denominator
            torch.logaddexp(lse, always_lse.to(torch.float32).view(lse.shape), out=lse)
    _score_kernel[(rows, triton.cdiv(num_cl, block_c))](
        queries, centroids, spreads, costs, num_clusters_arg, lse, out, num_cl, num_vectors, num_kv_heads, scale,
        *strides, *out.stride(), RULE=rule_id, REDUCE_MAX=reduce == "max", **common)
    return out
