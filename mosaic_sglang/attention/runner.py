"""`AttentionRunner`: the contract between the Mosaic backend and an attention kernel family.

Per forward the backend calls `begin_forward` once with the attention plan (`ForwardPlan.head_major`:
one list per request, or per (KV head, request) with per-KV-head selection), then `run_layer` once per
layer with that layer's `LayerLists`. A runner may keep per-forward state (device copies of the
plan's indptrs, a FlashInfer plan) between the two; it never reads a previous forward's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, NamedTuple, Optional

import torch

if TYPE_CHECKING:
    from ..serving.plan import ForwardPlan

__all__ = ["AttentionRunner", "LayerLists"]


class LayerLists(NamedTuple):
    """One layer's attended entries, CSR over the plan's requests.

    Attributes:
        kv_indptr: ``[B + 1] int64`` on the model's device (the plan's, or the layer's own when padded).
        slots: ``[nnz]`` KV-pool row of each entry (rows of ``k_buffer``/``v_buffer`` given beside), in the
            runner's `AttentionRunner.slot_dtype` (int64 where the backend had to build them itself).
        positions: ``[nnz] int64`` sequence position of each entry (position-causal kernels).
    """

    kv_indptr: torch.Tensor
    slots: torch.Tensor
    positions: torch.Tensor


class AttentionRunner(ABC):
    """One attention kernel family serving the plan/run split."""

    name: str = "abstract"
    reads_own_kv: bool = False
    """Whether extend reads the forward's own tokens from ``k``/``v`` (else from the pool, like the lists)."""
    slot_dtype: torch.dtype = torch.int64
    """The index dtype the runner's kernels take for ``LayerLists.slots`` (the backend gathers them in it)."""

    def serves(self, plan: "ForwardPlan") -> bool:
        """Whether this runner can serve ``plan`` (else the backend uses its fallback for the forward)."""
        return True

    @abstractmethod
    def begin_forward(self, plan: "ForwardPlan", is_decode: bool, device: torch.device, *,
                      per_kv_head: bool = False) -> None:
        """Once per forward, before layer 0: ``plan`` is the attention plan (host lengths, device lists);
        ``per_kv_head``: its lists are one KV head's each (`ForwardPlan.head_major` of a per-head plan)."""

    @abstractmethod
    def run_layer(
        self,
        layer: int,
        q: torch.Tensor,
        k: Optional[torch.Tensor],
        v: Optional[torch.Tensor],
        k_buffer: torch.Tensor,
        v_buffer: torch.Tensor,
        lists: LayerLists,
        out: torch.Tensor,
        scale: float,
    ) -> torch.Tensor:
        """One layer's attention; returns the output (``out`` or a tensor of its shape and dtype).

        Args:
            layer: the layer's index among the layers this process serves (0-based).
            q: ``[nq, num_qo_heads, D]`` queries of every request (the plan's ``q_indptr`` splits them).
            k, v: ``[nq, num_kv_heads, D]`` this forward's own K/V (already written to the pool), or None.
            k_buffer, v_buffer: ``[S, num_kv_heads, D]`` / ``[S, num_kv_heads, Dv]`` the rows ``lists.slots`` index.
            lists: the layer's entries.
            out: ``[nq, num_qo_heads, Dv]`` preallocated output in q's dtype.
            scale: softmax scale.
        """
