"""`StaticDecodeLists`: the attended lists of a decode step at fixed addresses, for CUDA-graph replay.

A captured decode step reads its lists from tensors that never move: out of the graph (host side, before
each replay) `stage` writes the step's `ForwardPlan` into them in place; inside the graph `slots` maps a
layer's entries to KV slots with one gather of fixed shape from SGLang's ``req_to_token``. Each request
owns at most ``capacity`` entries per layer (sinks + window + text tail + budget); a plan that needs more,
or more requests than were captured, does not `fit` and runs eagerly.

Layout for a graph of batch size ``bs`` (``E = bs · capacity`` entries, the first ``nnz`` used):
``rows [max_bs · capacity] int32`` (the ``req_to_token`` row of each entry), ``positions [L, max_bs ·
capacity] int32`` (4 bytes per layer, request slot and entry: at 28 layers, 256 requests and 1.3K entries,
37 MB, with FlashInfer's int32 page lists as much again). Batch rows SGLang pads (``bs`` above the batch) get one entry each at row 0, position 0
(SGLang's padding request and slot), matching its padded ``seq_len`` of 1. Entries past a step's lists keep
old values: always valid indices, and no kernel reads past the staged ``kv_indptr``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..serving.plan import ForwardPlan

__all__ = ["StaticDecodeLists"]


class StaticDecodeLists:
    """Fixed buffers for captured decode steps (see module docstring).

    Args:
        num_layers: ``L``.
        max_batch: the largest captured batch size.
        capacity: entries per request per layer a captured step can hold.
        device: the KV pool's device.
    """

    def __init__(self, num_layers: int, max_batch: int, capacity: int, device: torch.device | str) -> None:
        self.num_layers, self.max_batch, self.capacity = num_layers, max_batch, capacity
        size = max_batch * capacity
        self.rows = torch.zeros(size, dtype=torch.int32, device=device)
        self.positions = torch.zeros(num_layers, size, dtype=torch.int32, device=device)

    def fits(self, plan: "ForwardPlan", batch_size: int) -> bool:
        """Whether ``plan`` (one query per request, one ``kv_indptr`` for every layer) can be staged for a
        graph of ``batch_size`` requests."""
        batch = plan.kv_indptr.numel() - 1
        return (not plan.padded and plan.heads == 1 and batch <= batch_size <= self.max_batch
                and plan.max_kv <= self.capacity and not plan.select_due
                and plan.kv_positions.shape[0] in (1, self.num_layers))

    def stage(self, plan: "ForwardPlan", row_ids: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Write ``plan``'s lists into the buffers (out of the graph; in place).

        Args:
            plan: the decode step's plan (`fits`).
            row_ids: ``[B] int64`` ``req_to_token`` row of each request (device).
            batch_size: the captured graph's batch size (``>= B``: the rest are padding rows).

        Returns:
            ``[batch_size + 1] int64`` host ``kv_indptr`` of the padded batch (what FlashInfer plans).
        """
        assert self.fits(plan, batch_size), "StaticDecodeLists.stage: the plan does not fit the captured buffers"
        batch, nnz = plan.kv_indptr.numel() - 1, int(plan.kv_indptr[-1])
        pad = batch_size - batch
        self.positions[:, :nnz].copy_(plan.kv_positions.expand(self.num_layers, nnz))
        self.rows[:nnz].copy_(row_ids[plan.kv_request])
        if pad:
            self.positions[:, nnz:nnz + pad].zero_()
            self.rows[nnz:nnz + pad].zero_()
        tail = plan.kv_indptr[-1] + torch.arange(1, pad + 1, dtype=torch.int64)
        return torch.cat([plan.kv_indptr.cpu(), tail])

    def slots(self, layer: int, batch_size: int, req_to_token: torch.Tensor) -> torch.Tensor:
        """``[batch_size · capacity]`` (``req_to_token``'s dtype) the KV slot of every entry of ``layer`` for a
        graph of ``batch_size`` (in the graph: fixed shape, no host synchronisation)."""
        size = batch_size * self.capacity
        return req_to_token[self.rows[:size], self.positions[layer, :size]]
