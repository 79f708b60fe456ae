"""`TorchRunner`: the pure-torch reference over the plan's lists (the CPU serving path)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from mosaic_sglang.kernels import attended_attention

from .runner import AttentionRunner, LayerLists

if TYPE_CHECKING:
    from ..serving.plan import ForwardPlan

__all__ = ["TorchRunner"]


class TorchRunner(AttentionRunner):
    """`attended_attention` (batched, position-causal) over every layer's lists: serves every plan."""

    name = "reference"

    def begin_forward(self, plan: "ForwardPlan", is_decode: bool, device: torch.device, *,
                      per_kv_head: bool = False) -> None:
        self._q_indptr, self._q_positions = plan.q_indptr.to(device), plan.q_positions.to(device)
        self._max_q, self._max_kv = plan.max_q, plan.max_kv

    def run_layer(self, layer, q, k, v, k_buffer, v_buffer, lists: LayerLists, out, scale):
        return attended_attention(q, self._q_indptr, self._q_positions, k_buffer, v_buffer, lists.kv_indptr,
                                  lists.slots, lists.positions, scale=scale, out=out, max_q=self._max_q,
                                  max_kv=self._max_kv)
