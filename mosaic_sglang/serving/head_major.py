"""Per-KV-head lists attended by kernels that take one list per request: KV heads as requests.

With ``selection_heads='per_kv_head'`` a request has one attended list per KV head
(`ForwardPlan.heads` blocks). Every attention kernel here (the torch reference, the split-K decode,
SGLang's extend attention) — and FlashInfer's paged wrappers — takes one list per request over a pool
of ``[S, H, D]`` slots. The lists are served unchanged by relabelling: request ``h · B + b`` is KV head
``h`` of request ``b`` (`ForwardPlan.head_major`), its queries are that head's GQA group laid out
head-major, and the pool is viewed as ``[S · H, 1, D]`` (slot ``s`` of head ``h`` is ``s · H + h``,
a view: no copy of the pool). The cost per layer: the queries copied in and the output copied out (and
in extend with SGLang's kernel the chunk's own K/V), an ``H`` times longer list of slots, and the
always parts repeated in every head's block.
"""

from __future__ import annotations

import torch

__all__ = ["rows_head_major", "write_token_major", "pool_heads_as_slots", "head_slots", "head_block_lists"]


def rows_head_major(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[n, H · G, D]`` → ``[H · n, G, D]``: row ``h · n + t`` holds token ``t``'s heads ``[h · G, (h + 1) · G)``
    (KV head ``h``'s GQA group, as ``repeat_kv`` pairs them). A copy."""
    n, width, d = x.shape
    return x.view(n, heads, width // heads, d).transpose(0, 1).reshape(heads * n, width // heads, d)


def write_token_major(y: torch.Tensor, out: torch.Tensor, heads: int) -> torch.Tensor:
    """The inverse of `rows_head_major`, into ``out``: ``y [H · n, G, D]`` → ``out [n, H · G, D]`` (one copy)."""
    rows, group, d = y.shape
    out.view(rows // heads, heads, group, d).copy_(y.view(heads, rows // heads, group, d).transpose(0, 1))
    return out


def pool_heads_as_slots(buffer: torch.Tensor) -> torch.Tensor:
    """A layer's pool ``[S, H, D]`` (contiguous) viewed as ``[S · H, 1, D]``: slot ``s · H + h`` is head ``h`` of
    slot ``s``."""
    return buffer.view(-1, 1, buffer.shape[-1])


def head_slots(slots: torch.Tensor, entry_head: torch.Tensor, heads: int) -> torch.Tensor:
    """``[nnz] int64`` pool slots of list entries whose KV head is ``entry_head [nnz]`` → slots of
    `pool_heads_as_slots`."""
    return slots * heads + entry_head


def head_block_lists(kv_indptr: torch.Tensor, first: int, count: int, batch: int) -> tuple[int, int, torch.Tensor]:
    """Of head-major lists (list ``h · B + b``, CSR ``kv_indptr [H · B + 1]``), the block of KV heads ``[first,
    first + count)``: ``(lo, hi, indptr [count · B + 1])``, its entries ``[lo, hi)`` of the whole and its CSR from
    0 (a tensor-parallel rank's own heads). Reads two bounds: a host sync when ``kv_indptr`` is on a device."""
    lo, hi = kv_indptr[[first * batch, (first + count) * batch]].tolist()
    return lo, hi, kv_indptr[first * batch : (first + count) * batch + 1] - lo
