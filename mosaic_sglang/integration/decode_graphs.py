"""Captured decode steps of the Mosaic backend (``graph_text_tokens > 0``, FlashInfer route).

A decode step that keeps its question's selection does no host work inside its layers: its lists are
known before layer 0. Such a step can replay a CUDA graph: out of the graph its `ForwardPlan` is staged in
place into `StaticDecodeLists` and its lengths are planned (`FlashInferRunner.plan_graph`); inside, every
layer gathers its slots with one fixed-shape op and runs FlashInfer's CUDA-graph decode wrapper. Steps
that do not fit — a selection due at this step (re-selection), host-resident clusters (offload reads run
on the host), a padded plan, more entries per request than the capacity (``budget + sinks + window +
graph_text_tokens``), more requests than the largest captured batch — run eagerly.

`DecodeGraphs` holds that state for SGLang's decode graph runner (CUDA). `EmulatedDecodeGraphs`
(``MOSAIC_EMULATE_DECODE_GRAPHS=1``, tests on CPU with the fake FlashInfer) runs every fitting decode step
through the same staging and per-layer code, each layer captured once per batch size as an
`EmulatedGraph` and replayed at later steps: no host synchronisation inside, every read at the address the
capture saw, and the answers through ``sgl.Engine`` equal to dense.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional, Tuple

import torch

from ..attention import FlashInferRunner
from ..attention.static_lists import StaticDecodeLists
from ..testing.graph_capture import EmulatedGraph

if TYPE_CHECKING:
    from ..serving.plan import ForwardPlan

__all__ = ["DecodeGraphs", "EmulatedDecodeGraphs", "graph_batch_sizes"]


def graph_batch_sizes(max_batch: int) -> list:
    """Batch sizes captured when SGLang does not say: 1, 2, 4, ... up to ``max_batch``."""
    sizes, bs = [], 1
    while bs < max_batch:
        sizes.append(bs)
        bs *= 2
    return sizes + [max_batch]


class DecodeGraphs:
    """Static state of captured decode steps (module docstring).

    Args:
        runner: the FlashInfer runner (its graph mode).
        num_layers: layers of this process.
        capacity: entries per request per layer a captured step holds.
        batch_sizes: the captured batch sizes.
        device: the KV pool's device.
    """

    def __init__(self, runner: FlashInferRunner, num_layers: int, capacity: int, batch_sizes, device) -> None:
        self.runner, self.capacity = runner, capacity
        self.batch_sizes = sorted(set(batch_sizes))
        self.lists = StaticDecodeLists(num_layers, self.batch_sizes[-1], capacity, device)
        runner.init_graphs(self.batch_sizes[-1], capacity)
        self.steps = 0
        """Decode steps staged for a graph so far."""

    def padded_batch(self, batch: int) -> Optional[int]:
        """The captured batch size a batch of ``batch`` requests replays with (None: larger than any)."""
        return next((bs for bs in self.batch_sizes if bs >= batch), None)

    def fits(self, plan: "ForwardPlan", has_host_requests: bool) -> Optional[int]:
        """The padded batch size if this decode step can replay a graph, else None."""
        bs = self.padded_batch(plan.kv_indptr.numel() - 1)
        if bs is None or has_host_requests or not self.lists.fits(plan, bs):
            return None
        return bs

    def stage(self, plan: "ForwardPlan", row_ids: torch.Tensor, batch_size: int) -> None:
        """Out of the graph: the step's lists into the static buffers, its lengths into the graph's plan."""
        self.runner.plan_graph(batch_size, self.lists.stage(plan, row_ids, batch_size))
        self.steps += 1

    def stage_capture(self, row_ids: torch.Tensor, batch_size: int) -> None:
        """Out of the graph, before capturing ``batch_size``: SGLang's dummy requests attend one entry each."""
        from ..serving.plan import AlwaysPart, build_plan

        plan = build_plan(1, [(0, 1)] * batch_size, [AlwaysPart.dense()] * batch_size, [0] * batch_size,
                          device=self.lists.rows.device)
        self.runner.plan_graph(batch_size, self.lists.stage(plan, row_ids, batch_size))

    def layer(self, layer: int, batch_size: int, q: torch.Tensor, k_buffer: torch.Tensor, v_buffer: torch.Tensor,
              req_to_token: torch.Tensor, scale: float) -> torch.Tensor:
        """Inside the graph: ``[batch_size, Hq, Dv]`` attention of ``q [batch_size, Hq, D]`` over the layer's lists."""
        slots = self.lists.slots(layer, batch_size, req_to_token)
        return self.runner.run_graph_layer(layer, batch_size, q, k_buffer, v_buffer, slots, scale)


class EmulatedDecodeGraphs(DecodeGraphs):
    """`DecodeGraphs` driven by the backend itself on CPU: each (batch size, layer) captured as an
    `EmulatedGraph` at its first step, replayed at later ones (queries and outputs through fixed buffers)."""

    def __init__(self, runner, num_layers, capacity, batch_sizes, device, *, num_qo_heads: int, head_dim: int,
                 v_head_dim: int, dtype: torch.dtype) -> None:
        super().__init__(runner, num_layers, capacity, batch_sizes, device)
        max_bs = self.batch_sizes[-1]
        self.q = torch.zeros(max_bs, num_qo_heads, head_dim, dtype=dtype, device=device)
        self.out = torch.zeros(max_bs, num_qo_heads, v_head_dim, dtype=dtype, device=device)
        self._graphs: Dict[Tuple[int, int], EmulatedGraph] = {}
        self.replays = 0
        """Layer graphs replayed (not captured) so far."""

    def run_layer(self, layer: int, batch_size: int, q: torch.Tensor, k_buffer: torch.Tensor,
                  v_buffer: torch.Tensor, req_to_token: torch.Tensor, scale: float) -> torch.Tensor:
        """``[B, Hq, Dv]`` for the step's ``q [B, Hq, D]`` (``B <= batch_size``): capture or replay the layer."""
        batch = q.shape[0]
        self.q[:batch].copy_(q)
        self.q[batch:batch_size].zero_()
        key = (batch_size, layer)
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._graphs[key] = EmulatedGraph()
            graph.capture(lambda: self.out[:batch_size].copy_(
                self.layer(layer, batch_size, self.q[:batch_size], k_buffer, v_buffer, req_to_token, scale)))
        else:
            graph.replay()
            self.replays += 1
        return self.out[:batch].clone()
