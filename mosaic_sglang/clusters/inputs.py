"""Input checks of `ClusterIndex`'s public methods: errors name the argument, the expected shape and
dtype, and what was given."""

from __future__ import annotations

import torch

__all__ = ["check_append", "check_queries", "describe"]


def check_append(keys, frame_ids, num_layers: int, num_kv_heads: int, head_dim: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate `ClusterIndex.append` arguments; returns ``(keys, frame_ids int64)`` on ``device``."""
    shape = f"[num_layers={num_layers}, T, num_kv_heads={num_kv_heads}, head_dim={head_dim}]"
    if not isinstance(keys, torch.Tensor) or not keys.is_floating_point() or keys.dim() != 4:
        raise ValueError(f"ClusterIndex.append: keys: expected a float tensor {shape}, got {describe(keys)}")
    if (keys.shape[0], keys.shape[2], keys.shape[3]) != (num_layers, num_kv_heads, head_dim):
        raise ValueError(f"ClusterIndex.append: keys: expected {shape}, got shape {tuple(keys.shape)}")
    if (not isinstance(frame_ids, torch.Tensor) or frame_ids.dtype not in (torch.int64, torch.int32)
            or frame_ids.dim() != 1 or frame_ids.numel() != keys.shape[1]):
        raise ValueError(
            f"ClusterIndex.append: frame_ids: expected an int64 tensor [T={keys.shape[1]}] "
            f"(-1 for text), got {describe(frame_ids)}"
        )
    frame_ids = frame_ids.to(device, torch.int64)
    visual = frame_ids[frame_ids >= 0]
    if bool((frame_ids < -1).any()) or bool((visual[1:] < visual[:-1]).any()):
        raise ValueError(
            "ClusterIndex.append: frame_ids: expected -1 (text) or non-decreasing frame ids >= 0, "
            f"got {frame_ids.tolist()[:16]}..."
        )
    return keys.to(device), frame_ids


def check_queries(queries, rows: int, num_kv_heads: int, head_dim: int, device) -> torch.Tensor:
    """Validate ``queries [rows, Tq, Hq, D]`` for selection; returns them on ``device``."""
    shape = f"[num_layers={rows}, Tq, num_qo_heads (multiple of {num_kv_heads}), head_dim={head_dim}]"
    if (not isinstance(queries, torch.Tensor) or not queries.is_floating_point() or queries.dim() != 4
            or queries.shape[0] != rows or queries.shape[3] != head_dim
            or queries.shape[1] < 1 or queries.shape[2] < 1 or queries.shape[2] % num_kv_heads):
        raise ValueError(f"ClusterIndex.select: queries: expected a float tensor {shape}, got {describe(queries)}")
    return queries.to(device)


def describe(x) -> str:
    """Shape and dtype of a tensor (else its type) for error messages."""
    if isinstance(x, torch.Tensor):
        return f"shape {tuple(x.shape)} dtype {x.dtype}"
    return type(x).__name__
