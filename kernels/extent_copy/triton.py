"""Triton K7: copy the same pool slots of every layer, K and V, to or from a staging tensor in ONE launch.

Today `TransferEngine._submit_cuda` issues two ``index_copy_`` launches per layer (2·L per step). Here
one program per (block of ``BLOCK_N`` entries, layer, K-or-V) loads its layer's base address from a
pointer table (`layers.LayerTable`: SGLang's pool is a list of per-layer tensors, so there is no single
tensor to index), casts it to a typed pointer and copies whole ``[H, D]`` rows, ``BLOCK_E`` elements at
a time, between ``pool[slot]`` and ``stage[layer, i]``. Pure loads and stores (no arithmetic), so every
dtype copies bit-exactly, bf16 included (also under ``TRITON_INTERPRET=1``). The launchers never sync
with the host: shapes come from tensor metadata, slot values stay on the device.
"""

from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

from .layers import LayerTable, check_args, layer_table

__all__ = ["gather_slots_triton", "scatter_slots_triton"]

# Untuned: a [BLOCK_N, BLOCK_E] tile of at most 4096 elements (8 KiB in fp16) keeps each program's registers
# small at num_warps=4; rows wider than 1024 elements are walked in 1024-element chunks. Tune on the GPU.
_TILE = 4096
_MAX_BLOCK_E = 1024


@triton.jit
def _copy_rows(table_ptr, layer, slot, i, i_ok, stage_ptr, stride_slot, stride_stage_l, stride_stage_n,
               ROW: tl.constexpr, BLOCK_E: tl.constexpr, TO_STAGE: tl.constexpr):
    # the layer's pool base, typed like the staging tensor (check_args made the dtypes equal)
    pool_ptr = tl.load(table_ptr + layer).to(tl.pointer_type(stage_ptr.dtype.element_ty))
    pool_rows = pool_ptr + slot[:, None] * stride_slot  # [BLOCK_N, 1] start of each pool row
    stage_rows = stage_ptr + layer * stride_stage_l + i[:, None] * stride_stage_n  # [BLOCK_N, 1]
    for e0 in range(0, ROW, BLOCK_E):
        e = e0 + tl.arange(0, BLOCK_E)  # [BLOCK_E] element of the flattened [H, D] row
        ok = i_ok[:, None] & (e[None, :] < ROW)  # [BLOCK_N, BLOCK_E]
        if TO_STAGE:
            tl.store(stage_rows + e[None, :], tl.load(pool_rows + e[None, :], mask=ok), mask=ok)
        else:
            tl.store(pool_rows + e[None, :], tl.load(stage_rows + e[None, :], mask=ok), mask=ok)


@triton.jit
def _extent_copy_kernel(
    k_table_ptr, v_table_ptr, slots_ptr, stage_k_ptr, stage_v_ptr, n,
    stride_ks, stride_vs, stride_skl, stride_skn, stride_svl, stride_svn,
    ROW_K: tl.constexpr, ROW_V: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_EK: tl.constexpr,
    BLOCK_EV: tl.constexpr, TO_STAGE: tl.constexpr,
):
    layer = tl.program_id(1).to(tl.int64)  # int64: layer * stride may pass 2**31 elements
    i = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N] staging entries
    i_ok = i < n
    slot = tl.load(slots_ptr + i, mask=i_ok, other=0).to(tl.int64)  # [BLOCK_N] pool rows (int32 or int64)
    i = i.to(tl.int64)
    if tl.program_id(2) == 0:
        _copy_rows(k_table_ptr, layer, slot, i, i_ok, stage_k_ptr, stride_ks, stride_skl, stride_skn,
                   ROW_K, BLOCK_EK, TO_STAGE)
    else:
        _copy_rows(v_table_ptr, layer, slot, i, i_ok, stage_v_ptr, stride_vs, stride_svl, stride_svn,
                   ROW_V, BLOCK_EV, TO_STAGE)


def _launch(layers_k, layers_v, slots, stage_k, stage_v, k_table, v_table, *, to_stage: bool) -> None:
    spec_k, spec_v, n = check_args(layers_k, layers_v, slots, stage_k, stage_v, "out" if to_stage else "src",
                                   k_table, v_table)
    if n == 0:
        return
    k_table = k_table if k_table is not None else layer_table(layers_k, name="layers_k")
    v_table = v_table if v_table is not None else layer_table(layers_v, name="layers_v")
    row_k, row_v = spec_k.num_kv_heads * spec_k.head_dim, spec_v.num_kv_heads * spec_v.head_dim
    block_ek = min(triton.next_power_of_2(row_k), _MAX_BLOCK_E)
    block_ev = min(triton.next_power_of_2(row_v), _MAX_BLOCK_E)
    block_n = max(1, min(64, _TILE // max(block_ek, block_ev)))
    grid = (triton.cdiv(n, block_n), spec_k.num_layers, 2)  # (entry blocks, layers, K or V)
    _extent_copy_kernel[grid](
        k_table.ptrs, v_table.ptrs, slots, stage_k, stage_v, n,
        spec_k.stride_slot, spec_v.stride_slot, stage_k.stride(0), stage_k.stride(1), stage_v.stride(0),
        stage_v.stride(1), ROW_K=row_k, ROW_V=row_v, BLOCK_N=block_n, BLOCK_EK=block_ek, BLOCK_EV=block_ev,
        TO_STAGE=to_stage,
    )


def gather_slots_triton(layers_k: Sequence[torch.Tensor], layers_v: Sequence[torch.Tensor], slots: torch.Tensor,
                        out_k: torch.Tensor, out_v: torch.Tensor, *, k_table: LayerTable | None = None,
                        v_table: LayerTable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `reference.gather_slots_reference`, in one launch for all layers, K and V.

    ``k_table`` / ``v_table``: the pool's `layers.layer_table`, built once by the caller; then the layers
    are not walked at all (None: built here, one small host→device copy per call)."""
    _launch(layers_k, layers_v, slots, out_k, out_v, k_table, v_table, to_stage=True)
    return out_k, out_v


def scatter_slots_triton(src_k: torch.Tensor, src_v: torch.Tensor, slots: torch.Tensor,
                         layers_k: Sequence[torch.Tensor], layers_v: Sequence[torch.Tensor], *,
                         k_table: LayerTable | None = None,
                         v_table: LayerTable | None = None) -> tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]:
    """Same contract as `reference.scatter_slots_reference` (slots duplicate-free), in one launch for all
    layers, K and V; ``k_table`` / ``v_table`` as in `gather_slots_triton`."""
    _launch(layers_k, layers_v, slots, src_k, src_v, k_table, v_table, to_stage=False)
    return layers_k, layers_v
