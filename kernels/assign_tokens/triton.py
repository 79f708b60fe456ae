"""Triton K6, token-to-centroid assignment: every token's nearest candidate that admits it.

One program per (block of ``BLOCK_N`` tokens, membership group). It computes the block's ``|x|²`` once,
then loops over candidate blocks of ``BLOCK_A``: ``x·c`` accumulates over F in ``BLOCK_F`` slices with
one fp32 ``tl.dot`` each (inputs upcast on load, IEEE precision: TF32 would move d² by ~1e-3 relative
and flip near choices), ``d² = |x|² + |c|² − 2x·c`` clamped at 0, the admission test in registers, and
a running (best d², index) per token. Tiles are at least 16 wide for ``tl.dot``; out-of-range rows,
candidates and features load as 0 and out-of-range candidates never admit.

Ties: a block's minimum goes to its lowest index and a later block replaces the running best only if
strictly nearer, so equal d² resolve to the lowest candidate index, as ``torch.min`` does.
Divisions use ``div_rn`` (IEEE round-to-nearest, as torch) rather than the default approximate one.

No host synchronisation: the grid comes from shapes; A == 0 or n == 0 fills / returns without a launch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .reference import Assignment, check_inputs

__all__ = ["assign_tokens_triton"]


@triton.jit
def _assign_kernel(
    x_ptr, c_ptr, spread_ptr, size_ptr, best_ptr, d2_ptr,
    n, num_cand, num_feat, num_pairs, join_threshold, max_cluster_size,  # num_pairs: float (exact)
    stride_xg, stride_xn, stride_xf, stride_cg, stride_ca, stride_cf, stride_sg, stride_sa,
    stride_zg, stride_za, stride_bg, stride_bn, stride_dg, stride_dn,
    BLOCK_N: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_F: tl.constexpr,
):
    g = tl.program_id(1).to(tl.int64)  # int64 offsets: groups × tokens × F can pass 2³¹ elements
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN]
    row_ok = rows < n
    feats = tl.arange(0, BLOCK_F)  # [BF]
    x_base = x_ptr + g * stride_xg + rows[:, None].to(tl.int64) * stride_xn  # [BN, 1]

    x_sq = tl.zeros([BLOCK_N], tl.float32)
    for f0 in range(0, num_feat, BLOCK_F):
        f = f0 + feats
        xb = tl.load(x_base + f[None, :] * stride_xf, mask=row_ok[:, None] & (f[None, :] < num_feat), other=0.0)
        xb = xb.to(tl.float32)  # [BN, BF]
        x_sq += tl.sum(xb * xb, 1)

    best_d2 = tl.full([BLOCK_N], float("inf"), tl.float32)
    best = tl.full([BLOCK_N], -1, tl.int32)
    for a0 in range(0, num_cand, BLOCK_A):
        cand = a0 + tl.arange(0, BLOCK_A)  # [BA]
        cand_ok = cand < num_cand
        c_base = c_ptr + g * stride_cg + cand[None, :].to(tl.int64) * stride_ca  # [1, BA]
        dot = tl.zeros([BLOCK_N, BLOCK_A], tl.float32)
        c_sq = tl.zeros([BLOCK_A], tl.float32)
        for f0 in range(0, num_feat, BLOCK_F):
            f = f0 + feats
            f_ok = f < num_feat
            xb = tl.load(x_base + f[None, :] * stride_xf, mask=row_ok[:, None] & f_ok[None, :], other=0.0)
            ct = tl.load(c_base + f[:, None] * stride_cf, mask=f_ok[:, None] & cand_ok[None, :], other=0.0)
            ct = ct.to(tl.float32)  # [BF, BA] centroids, transposed
            dot += tl.dot(xb.to(tl.float32), ct, input_precision="ieee")  # [BN, BA]
            c_sq += tl.sum(ct * ct, 0)
        raw = x_sq[:, None] + c_sq[None, :] - 2.0 * dot
        d2 = tl.where(raw < 0.0, 0.0, raw)  # clamp at 0; a NaN stays NaN and never admits

        spread = tl.load(spread_ptr + g * stride_sg + cand * stride_sa, mask=cand_ok, other=0.0).to(tl.float32)
        size = tl.load(size_ptr + g * stride_zg + cand * stride_za, mask=cand_ok, other=max_cluster_size)
        s = size.to(tl.float32)[None, :]  # [1, BA]
        # relative spread after the join, in `_join`'s operation order: (s·S + s/(s+1)·d²)/(s+1)/pairs
        joined = s * spread[None, :] + tl.math.div_rn(s, s + 1.0) * d2
        after = tl.math.div_rn(tl.math.div_rn(joined, s + 1.0), num_pairs)
        admits = (cand_ok & (size < max_cluster_size))[None, :] & (after <= join_threshold)  # [BN, BA]

        masked = tl.where(admits, d2, float("inf"))
        block_d2 = tl.min(masked, 1)  # [BN]
        block_best = tl.min(tl.where(masked == block_d2[:, None], cand[None, :], num_cand), 1)  # lowest index
        nearer = block_d2 < best_d2  # strict: an earlier (lower-index) block keeps a tie
        best_d2 = tl.where(nearer, block_d2, best_d2)
        best = tl.where(nearer, block_best, best)

    tl.store(best_ptr + g * stride_bg + rows * stride_bn, best.to(tl.int64), mask=row_ok)
    tl.store(d2_ptr + g * stride_dg + rows * stride_dn, best_d2, mask=row_ok)


def assign_tokens_triton(x, centroids, spread, size, *, num_pairs: int, join_threshold: float,
                         max_cluster_size: int, out=None, block_n: int = 32, block_a: int = 64,
                         block_f: int = 64) -> Assignment:
    """Same contract as `assign_tokens_reference` (all tensors on one device). ``block_n`` tokens,
    ``block_a`` candidates and ``block_f`` features per tile (powers of two, shrunk to the problem, >= 16)."""
    check_inputs(x, centroids, spread, size, num_pairs, join_threshold, max_cluster_size, out)
    batched = x.dim() == 3
    tokens = tuple(x.shape[:-1])
    if out is None:
        out = (torch.empty(tokens, dtype=torch.int64, device=x.device),
               torch.empty(tokens, dtype=torch.float32, device=x.device))
    best, d2 = out
    xs, cs, ss, zs, bs, ds = (t if batched else t[None] for t in (x, centroids, spread, size, best, d2))
    groups, n, num_feat = xs.shape
    num_cand = cs.shape[1]
    if groups == 0 or n == 0:
        return Assignment(best, d2)
    if num_cand == 0:  # no candidate: nothing to launch
        best.fill_(-1)
        d2.fill_(float("inf"))
        return Assignment(best, d2)
    block_n = max(16, min(block_n, triton.next_power_of_2(n)))
    block_a = max(16, min(block_a, triton.next_power_of_2(num_cand)))
    block_f = max(16, min(block_f, triton.next_power_of_2(num_feat)))
    _assign_kernel[(triton.cdiv(n, block_n), groups)](
        xs, cs, ss, zs, bs, ds, n, num_cand, num_feat, float(num_pairs), float(join_threshold), max_cluster_size,
        *xs.stride(), *cs.stride(), *ss.stride(), *zs.stride(), *bs.stride(), *ds.stride(),
        BLOCK_N=block_n, BLOCK_A=block_a, BLOCK_F=block_f)
    return Assignment(best, d2)
