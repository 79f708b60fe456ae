"""The one GQA view of queries: which query vectors read each KV head.

Query head ``h`` reads KV head ``h // (num_qo_heads // num_kv_heads)`` (HF ``repeat_kv`` and SGLang
order). Scoring (clusters, baselines) and the quality metrics all go through `group_queries`.
"""

from __future__ import annotations

import torch

__all__ = ["group_queries"]


def group_queries(queries: torch.Tensor, num_kv_heads: int) -> torch.Tensor:
    """``[R, Tq, num_qo_heads, D]`` → ``[R, num_kv_heads, group, Tq, D]`` float32 (``group = Hq / Hkv``).

    ``R`` is any leading row dimension (layers, or (sequence, layer) pairs). A view when the input is
    float32 and contiguous. Flatten ``(group, Tq)`` with ``.flatten(2, 3)`` for one matmul per KV head.

    Example:
        >>> q = torch.arange(8.).reshape(1, 1, 4, 2)          # 4 query heads, 2 KV heads
        >>> group_queries(q, 2)[0, 1, :, 0, 0].tolist()       # KV head 1 is read by query heads 2, 3
        [4.0, 6.0]
    """
    rows, tq, num_qo_heads, head_dim = queries.shape
    if num_qo_heads % num_kv_heads:
        raise ValueError(f"group_queries: num_qo_heads={num_qo_heads} must be a multiple of num_kv_heads={num_kv_heads}")
    group = num_qo_heads // num_kv_heads
    return queries.float().reshape(rows, tq, num_kv_heads, group, head_dim).permute(0, 2, 3, 1, 4)
