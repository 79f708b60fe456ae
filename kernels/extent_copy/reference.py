"""Pure-torch twins of the K7 extent copies: one row at a time, obviously right (and slow: tests and CPU).

`gather_slots_reference` copies pool rows of every layer into a staging tensor (the offload direction:
device slots → staging, then one device→host copy per run of host extents); `scatter_slots_reference`
is the reverse (staging, filled by one host→device copy per run, → pool rows). Same signatures and
contracts as the Triton launchers in `triton.py`.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .layers import check_args

__all__ = ["gather_slots_reference", "scatter_slots_reference"]


def gather_slots_reference(layers_k: Sequence[torch.Tensor], layers_v: Sequence[torch.Tensor], slots: torch.Tensor,
                           out_k: torch.Tensor, out_v: torch.Tensor, **_tables) -> tuple[torch.Tensor, torch.Tensor]:
    """``out_k[l, i] = layers_k[l][slots[i]]`` for every layer ``l`` and entry ``i`` (the same for V).

    Args:
        layers_k: L tensors ``[num_slots, H, D]`` (SGLang's ``k_buffer``), all of one dtype/shape/strides;
            or one ``[L, num_slots, H, D]`` tensor.
        layers_v: the same for values ``[num_slots, H, Dv]`` (``Dv`` may differ from ``D``).
        slots: ``[n] int32 | int64`` pool rows, on the pool's device (duplicates allowed here).
        out_k: ``[L, n, H, D]`` staging, the pool's dtype (any L/n strides, contiguous rows); written.
        out_v: ``[L, n, H, Dv]`` likewise.
        _tables: ``k_table`` / ``v_table`` of the Triton path; ignored.

    Returns:
        ``(out_k, out_v)``.
    """
    check_args(layers_k, layers_v, slots, out_k, out_v, "out")
    rows = slots.tolist()
    for layer, (k, v) in enumerate(zip(layers_k, layers_v)):
        for i, slot in enumerate(rows):
            out_k[layer, i] = k[slot]
            out_v[layer, i] = v[slot]
    return out_k, out_v


def scatter_slots_reference(src_k: torch.Tensor, src_v: torch.Tensor, slots: torch.Tensor,
                            layers_k: Sequence[torch.Tensor], layers_v: Sequence[torch.Tensor],
                            **_tables) -> tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]:
    """``layers_k[l][slots[i]] = src_k[l, i]`` for every layer ``l`` and entry ``i`` (the same for V);
    every other pool row is left untouched.

    Args:
        src_k: ``[L, n, H, D]`` staging, the pool's dtype (any L/n strides, contiguous rows).
        src_v: ``[L, n, H, Dv]`` likewise.
        slots: ``[n] int32 | int64`` pool rows, duplicate-free (with duplicates the Triton kernel's winner
            is unspecified), on the pool's device.
        layers_k, layers_v: the pool, as in `gather_slots_reference`; written in place.
        _tables: ``k_table`` / ``v_table`` of the Triton path; ignored.

    Returns:
        ``(layers_k, layers_v)``.
    """
    check_args(layers_k, layers_v, slots, src_k, src_v, "src")
    rows = slots.tolist()
    for layer, (k, v) in enumerate(zip(layers_k, layers_v)):
        for i, slot in enumerate(rows):
            k[slot] = src_k[layer, i]
            v[slot] = src_v[layer, i]
    return layers_k, layers_v
