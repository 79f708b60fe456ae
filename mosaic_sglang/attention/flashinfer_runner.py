"""`FlashInferRunner`: FlashInfer's fa2 paged wrappers at page size 1, one plan per forward.

Every layer of a request attends a list of the same length (the exact fill), so the forward's lengths
— one ``kv_indptr`` — are planned once in `begin_forward`; each layer then writes its slots into its own
row of a per-layer index buffer ``[L, capacity] int32`` and points the wrapper at that row before its
call (`flashinfer_api.use_layer_indices`). Decode runs the decode wrapper (tensor cores when SGLang
would use them); extend runs the paged prefill wrapper with ``causal=True``, whose mask is aligned at
the bottom right: each request's list is reordered once per forward so that its cached-prefix entries
come first and its own tokens last in query order (`ForwardPlan.causal_order`), which makes that mask the
position-causal mask of the reference. Per-KV-head plans arrive as ``H · B`` requests of one KV head
(`ForwardPlan.head_major`) and are planned with ``num_kv_heads=1``.

Plans whose layers differ in length (``padded``: ``fill='whole'``, mass budgets) are not served
(`serves`); the backend hands them to its fallback runner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import torch

from .flashinfer_api import DECODE_WRAPPER, FA2, PREFILL_WRAPPER, use_layer_indices
from .runner import AttentionRunner, LayerLists

if TYPE_CHECKING:
    from ..serving.plan import ForwardPlan

__all__ = ["FlashInferRunner"]


class FlashInferRunner(AttentionRunner):
    """FlashInfer's paged wrappers under one plan per forward (see module docstring).

    Args:
        flashinfer: the ``flashinfer`` module (or a stand-in with the same two wrapper classes: tests).
        workspace: ``[bytes] uint8`` float workspace on the model's device (SGLang's shared one).
        num_layers: layers this process serves (rows of the per-layer index buffer).
        num_qo_heads, num_kv_heads, head_dim: per rank, as the pool holds them.
        dtype: the KV pool's dtype (queries share it).
        use_tensor_cores: the decode wrapper's choice (SGLang's `should_use_tensor_core`).
    """

    name = "flashinfer"

    def __init__(self, flashinfer: Any, workspace: torch.Tensor, *, num_layers: int, num_qo_heads: int,
                 num_kv_heads: int, head_dim: int, dtype: torch.dtype, use_tensor_cores: bool) -> None:
        self._decode = getattr(flashinfer, DECODE_WRAPPER)(workspace, "NHD", backend=FA2,
                                                           use_tensor_cores=use_tensor_cores)
        self._prefill = getattr(flashinfer, PREFILL_WRAPPER)(workspace, "NHD", backend=FA2)
        self._heads = (num_qo_heads, num_kv_heads, head_dim)
        self._dtype, self._device = dtype, workspace.device
        self._num_layers = num_layers
        self._indices = torch.empty(num_layers, 0, dtype=torch.int32, device=self._device)
        self._order: Optional[torch.Tensor] = None
        self.plans = 0
        """Plans made so far (one per served forward)."""

    def serves(self, plan: "ForwardPlan") -> bool:
        return not plan.padded

    def begin_forward(self, plan: "ForwardPlan", is_decode: bool, device: torch.device, *,
                      per_kv_head: bool = False) -> None:
        """Plan the forward's lengths once (host indptrs; FlashInfer copies them to the device). With
        ``per_kv_head`` each of the plan's lists is one KV head's (``num_kv_heads=1``, the group's query heads)."""
        nnz = int(plan.kv_indptr[-1])
        if nnz > self._indices.shape[1]:  # grows only: a forward's rows never move once planned
            self._indices = torch.empty(self._num_layers, max(nnz, 2 * self._indices.shape[1]), dtype=torch.int32,
                                        device=self._device)
        num_qo, num_kv, head_dim = self._heads
        if per_kv_head:
            num_qo, num_kv = num_qo // num_kv, 1
        batch = plan.kv_indptr.numel() - 1
        kv_indptr = plan.kv_indptr.to(torch.int32)
        last_page_len = torch.ones(batch, dtype=torch.int32)
        placeholder = self._indices[0, :nnz]
        self._is_decode, self._nnz = is_decode, nnz
        if is_decode:
            self._order = None
            self._decode.plan(kv_indptr, placeholder, last_page_len, num_qo, num_kv, head_dim, 1,
                              q_data_type=self._dtype, kv_data_type=self._dtype, non_blocking=True)
        else:
            self._order = plan.causal_order().to(device)
            self._prefill.plan(plan.q_indptr.to(torch.int32), kv_indptr, placeholder, last_page_len, num_qo, num_kv,
                               head_dim, 1, causal=True, q_data_type=self._dtype, kv_data_type=self._dtype,
                               non_blocking=True)
        self.plans += 1

    def run_layer(self, layer, q, k, v, k_buffer, v_buffer, lists: LayerLists, out, scale):
        row = self._indices[layer, : self._nnz]
        slots = lists.slots if self._order is None else lists.slots[self._order]
        row.copy_(slots)
        wrapper = self._decode if self._is_decode else self._prefill
        use_layer_indices(wrapper, row)
        if self._is_decode:
            return wrapper.forward(q, (k_buffer, v_buffer), sm_scale=scale)
        return wrapper.forward(q, (k_buffer, v_buffer), causal=True, sm_scale=scale)
