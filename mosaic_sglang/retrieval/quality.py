"""Retrieval quality of an attended set: attention-mass recall, top-k recall, output error.

All three compare attention restricted to a `Selection` with exact attention over every position the
query can see (causal), per layer, query token and query head, in fp32:

- **mass recall**: ``Σ_{n ∈ S} softmax(q·K/√d)[n]`` — the share of the true attention weight the attended
  set ``S`` keeps (1 for the full set).
- **top-k recall** (Quest's definition): the fraction of the true ``k`` highest-weight positions that are
  in ``S`` (``k = min(top_k, visible positions)``).
- **output error**: ``‖o_S − o‖₂ / ‖o‖₂`` where ``o = softmax(q·K/√d)·V`` over everything visible and
  ``o_S`` is the same attention renormalised over ``S`` (what the sparse backend computes). A query that
  sees no attended position gets ``o_S = 0`` (error 1).

Each is averaged over query tokens and heads, reported per layer. GQA: query head ``h`` reads KV head
``h // (num_qo_heads // num_kv_heads)`` (HF ``repeat_kv`` and SGLang order).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .base import Selection
from .gqa import group_queries

__all__ = ["SelectionQuality", "selection_quality"]

_CHUNK_ELEMENTS = 1 << 25
"""Most fp32 logits held at once per layer chunk (128 MiB): bounds memory at 128K-token contexts."""


class SelectionQuality(NamedTuple):
    """Quality of one selection, per layer (each ``[num_layers] float32``).

    `mean()` gives the scalar over layers that the benchmark tables print.
    """

    mass_recall: torch.Tensor
    topk_recall: torch.Tensor
    output_error: torch.Tensor

    def mean(self) -> "SelectionQuality":
        """The same fields as 0-d float32 tensors, averaged over layers."""
        return SelectionQuality(*(t.mean() for t in self))


def selection_quality(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    selection: Selection,
    *,
    query_positions: torch.Tensor | None = None,
    scale: float | None = None,
    top_k: int = 10,
) -> SelectionQuality:
    """Score an attended set against exact attention.

    Args:
        queries: ``[L, Tq, num_qo_heads, D]`` float (post-RoPE, as attention uses them).
        keys: ``[L, N, num_kv_heads, D]`` float (post-RoPE, as cached).
        values: ``[L, N, num_kv_heads, Dv]`` float.
        selection: attended positions per layer (`Selection` over the same ``N`` positions).
        query_positions: ``[Tq] int64`` position of each query token; query ``t`` sees keys at positions
            ``<= query_positions[t]``. Default: every query sees all ``N`` positions (queries after the context).
        scale: softmax scale; default ``1/√D``.
        top_k: ``k`` of the top-k recall (Quest reports 10).

    Returns:
        `SelectionQuality` with ``[L] float32`` fields.

    Example:
        >>> L, N, H, D = 1, 5, 1, 4
        >>> k = torch.zeros(L, N, H, D); k[0, 2, 0, 0] = 50.0   # one dominant key at position 2
        >>> q = torch.zeros(L, 1, H, D); q[0, 0, 0, 0] = 1.0
        >>> sel = Selection(torch.tensor([0, 1]), torch.tensor([2]), torch.tensor([1]))
        >>> round(selection_quality(q, k, torch.randn(L, N, H, D), sel).mass_recall.item(), 3)
        1.0
    """
    num_layers, tq, hq, d = queries.shape
    lk, n, hkv, dk = keys.shape
    if (lk, dk) != (num_layers, d) or values.shape[:3] != keys.shape[:3]:
        raise ValueError(
            f"selection_quality: expected keys [L={num_layers}, N, Hkv, D={d}] and values [L, N, Hkv, Dv] "
            f"matching the queries, got queries {tuple(queries.shape)}, keys {tuple(keys.shape)}, "
            f"values {tuple(values.shape)}"
        )
    if hq % hkv != 0:
        raise ValueError(f"selection_quality: num_qo_heads={hq} must be a multiple of num_kv_heads={hkv}")
    if selection.num_layers != num_layers:
        raise ValueError(f"selection_quality: selection has {selection.num_layers} layers, queries {num_layers}")
    device = queries.device
    scale = d**-0.5 if scale is None else scale
    group = hq // hkv
    if query_positions is None:
        visible = torch.ones(tq, n, dtype=torch.bool, device=device)
    else:
        visible = torch.arange(n, device=device)[None, :] <= query_positions.to(device)[:, None]  # [Tq, N]

    attended = _selection_mask(selection, n, device)  # [L, N] bool
    per_layer = max(1, hq * tq * n)
    chunk = max(1, _CHUNK_ELEMENTS // per_layer)
    out = torch.empty(3, num_layers, dtype=torch.float32, device=device)
    for lo in range(0, num_layers, chunk):
        hi = min(num_layers, lo + chunk)
        out[:, lo:hi] = _layer_chunk(
            queries[lo:hi], keys[lo:hi], values[lo:hi], attended[lo:hi], visible, group, scale, top_k
        )
    return SelectionQuality(out[0], out[1], out[2])


def _selection_mask(selection: Selection, n: int, device: torch.device) -> torch.Tensor:
    """``[L, N] bool``: True where the selection attends the position."""
    num_layers = selection.num_layers
    sizes = selection.sizes().to(device)
    layer_of = torch.repeat_interleave(torch.arange(num_layers, device=device), sizes)
    idx = selection.indices.to(device)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"selection_quality: selection indices must lie in [0, {n}), got [{int(idx.min())}, {int(idx.max())}]")
    mask = torch.zeros(num_layers, n, dtype=torch.bool, device=device)
    mask[layer_of, idx] = True
    return mask


def _layer_chunk(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attended: torch.Tensor,
    visible: torch.Tensor,
    group: int,
    scale: float,
    top_k: int,
) -> torch.Tensor:
    """``[3, l] float32`` (mass recall, top-k recall, output error) for a chunk of ``l`` layers."""
    l, tq, hq, d = q.shape
    hkv = k.shape[2]
    qf = group_queries(q, hkv)  # [l, Hkv, g, Tq, D]
    kf = k.float().permute(0, 2, 1, 3)[:, :, None]  # [l, Hkv, 1, N, D]
    vf = v.float().permute(0, 2, 1, 3)[:, :, None]  # [l, Hkv, 1, N, Dv]
    logits = (qf @ kf.transpose(-1, -2)) * scale  # [l, Hkv, g, Tq, N]
    logits = logits.masked_fill(~visible, float("-inf"))
    probs = torch.softmax(logits, dim=-1)  # rows always have >= 1 visible position (its own or all)
    att = attended[:, None, None, None, :]  # [l, 1, 1, 1, N]
    att_vis = att & visible

    mass = (probs * att_vis).sum(-1)  # [l, Hkv, g, Tq]

    n_vis = visible.sum(-1)  # [Tq]
    k_eff = min(top_k, probs.shape[-1])
    top_idx = probs.topk(k_eff, dim=-1).indices  # [l, Hkv, g, Tq, k]
    hit = torch.gather(att.expand_as(probs), -1, top_idx).float()
    # Queries that see fewer than top_k positions count only their visible ones (the rest have weight 0).
    rank_ok = torch.arange(k_eff, device=q.device)[None, :] < n_vis[:, None]  # [Tq, k]
    denom = rank_ok.sum(-1).clamp_min(1).float()  # [Tq]
    topk_rec = (hit * rank_ok).sum(-1) / denom

    full_out = probs @ vf  # [l, Hkv, g, Tq, Dv]
    sparse_logits = logits.masked_fill(~att, float("-inf"))
    empty = ~att_vis.any(-1)  # [l, 1, 1, Tq]
    sparse_probs = torch.softmax(sparse_logits.masked_fill(empty[..., None], 0.0), dim=-1)
    sparse_out = (sparse_probs @ vf).masked_fill(empty[..., None], 0.0)
    err = (sparse_out - full_out).norm(dim=-1) / full_out.norm(dim=-1).clamp_min(1e-12)

    reduce = (1, 2, 3)  # KV heads, group, query tokens
    return torch.stack([mass.mean(reduce), topk_rec.mean(reduce), err.mean(reduce)])
