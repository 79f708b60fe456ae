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

Captured decode steps (CUDA graphs): `init_graphs` makes one decode wrapper per captured batch size in
FlashInfer's CUDA-graph mode, over fixed ``indptr`` / last-page buffers and a fixed per-layer page-list
buffer; before each replay `plan_graph` plans the step's lengths (host work, out of the graph); inside the
graph `run_graph_layer` writes the layer's slots (`StaticDecodeLists.slots`) into its row and runs: device
work of fixed shape only.
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
    slot_dtype = torch.int32  # page lists are int32: slots gathered from req_to_token (int32) are copied as they are

    def __init__(self, flashinfer: Any, workspace: torch.Tensor, *, num_layers: int, num_qo_heads: int,
                 num_kv_heads: int, head_dim: int, dtype: torch.dtype, use_tensor_cores: bool) -> None:
        self._decode = getattr(flashinfer, DECODE_WRAPPER)(workspace, "NHD", backend=FA2,
                                                           use_tensor_cores=use_tensor_cores)
        self._prefill = getattr(flashinfer, PREFILL_WRAPPER)(workspace, "NHD", backend=FA2)
        self._flashinfer, self._workspace, self._use_tensor_cores = flashinfer, workspace, use_tensor_cores
        self._heads = (num_qo_heads, num_kv_heads, head_dim)
        self._graph_wrappers: dict = {}
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

    # -- captured decode steps (CUDA graphs) ------------------------------------------------------------

    def init_graphs(self, max_batch: int, capacity: int) -> None:
        """Fixed state for captured decode steps of up to ``max_batch`` requests with up to ``capacity``
        entries each per layer: page lists ``[L, max_batch · capacity] int32``, ``indptr``, last pages; one
        CUDA-graph decode wrapper per batch size, made at its first plan."""
        self._graph_capacity = capacity
        self._graph_indices = torch.zeros(self._num_layers, max_batch * capacity, dtype=torch.int32,
                                          device=self._device)
        self._graph_indptr = torch.zeros(max_batch + 1, dtype=torch.int32, device=self._device)
        self._graph_last_page = torch.ones(max_batch, dtype=torch.int32, device=self._device)
        self._graph_wrappers = {}

    def _graph_wrapper(self, bs: int):
        wrapper = self._graph_wrappers.get(bs)
        if wrapper is None:
            wrapper = self._graph_wrappers[bs] = getattr(self._flashinfer, DECODE_WRAPPER)(
                self._workspace, "NHD", use_cuda_graph=True, use_tensor_cores=self._use_tensor_cores,
                paged_kv_indptr_buffer=self._graph_indptr[:bs + 1], paged_kv_indices_buffer=self._graph_indices[0],
                paged_kv_last_page_len_buffer=self._graph_last_page[:bs], backend=FA2)
        return wrapper

    def plan_graph(self, batch_size: int, kv_indptr: torch.Tensor) -> None:
        """Out of the graph, before a replay: plan the step's lengths, ``kv_indptr [batch_size + 1]`` (host;
        `StaticDecodeLists.stage`). FlashInfer copies them into the fixed buffers the graph reads."""
        wrapper = self._graph_wrapper(batch_size)
        num_qo, num_kv, head_dim = self._heads
        use_layer_indices(wrapper, self._graph_indices[0])  # the plan's own page-list copy lands in row 0
        nnz = int(kv_indptr[-1])
        wrapper.plan(kv_indptr.to(torch.int32), self._graph_indices[0, :nnz], torch.ones(batch_size, dtype=torch.int32),
                     num_qo, num_kv, head_dim, 1, q_data_type=self._dtype, kv_data_type=self._dtype, non_blocking=True)
        self.plans += 1

    def run_graph_layer(self, layer: int, batch_size: int, q: torch.Tensor, k_buffer: torch.Tensor,
                        v_buffer: torch.Tensor, slots: torch.Tensor, scale: float) -> torch.Tensor:
        """Inside the graph: layer ``layer``'s attention for ``q [batch_size, Hq, D]`` over ``slots
        [batch_size · capacity]`` (`StaticDecodeLists.slots`; entries past the planned lists are never read)."""
        wrapper = self._graph_wrappers[batch_size]
        row = self._graph_indices[layer, : batch_size * self._graph_capacity]
        row.copy_(slots)
        use_layer_indices(wrapper, row)
        return wrapper.forward(q, (k_buffer, v_buffer), sm_scale=scale)
