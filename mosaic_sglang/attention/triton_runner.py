"""`TritonRunner`: decode through the project's split-K `sparse_decode`, extend through SGLang's extend
attention (`sparse_extend`: the chunk's own K/V causally plus the list's cached-prefix entries).

Serves every plan; extend without the forward's own K/V (nothing to read the chunk from) falls back to the
torch reference for that layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from mosaic_sglang.kernels import sparse_decode, sparse_extend

from ..serving.plan import LayerKV
from .runner import LayerLists
from .torch_runner import TorchRunner

if TYPE_CHECKING:
    from ..serving.plan import ForwardPlan

__all__ = ["TritonRunner"]


class TritonRunner(TorchRunner):
    """Triton kernels (CUDA, or the interpreter on CPU in tests); the reference where they cannot run."""

    name = "triton"
    reads_own_kv = True

    def begin_forward(self, plan: "ForwardPlan", is_decode: bool, device: torch.device, *,
                      per_kv_head: bool = False) -> None:
        super().begin_forward(plan, is_decode, device, per_kv_head=per_kv_head)
        self._plan, self._is_decode = plan, is_decode
        self._prefix = None
        if not is_decode and not plan.padded:  # every layer's lists share their prefix entries
            self._prefix = tuple(t.to(device) for t in plan.prefix_entries())

    def run_layer(self, layer, q, k, v, k_buffer, v_buffer, lists: LayerLists, out, scale):
        if self._is_decode:
            return sparse_decode(q, k_buffer, v_buffer, lists.kv_indptr, lists.slots, scale=scale, out=out,
                                 impl="triton")
        if k is None or v is None:
            return super().run_layer(layer, q, k, v, k_buffer, v_buffer, lists, out, scale)
        prefix = self._prefix
        if prefix is None:  # padded lists: this layer's own prefix entries
            prefix = tuple(t.to(q.device) for t in self._plan.prefix_entries(LayerKV(lists.kv_indptr, lists.positions)))
        prefix_indptr, entries = prefix
        return sparse_extend(q, k, v, k_buffer, v_buffer, self._q_indptr, prefix_indptr, lists.slots[entries],
                             max_extend_len=self._max_q, scale=scale, out=out, impl="triton")
