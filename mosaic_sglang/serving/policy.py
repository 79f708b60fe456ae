"""The interface between the attention backend and a retrieval policy: which positions each request
attends at each layer of a forward.

The backend calls, per forward: `begin_forward` once (host-side planning), `attended_positions` once per
(layer, request) with that layer's queries, and `end_forward` once after the last layer, when every
layer's K/V of the new tokens is in the pool (the place to index them). `FullAttendedSet` attends
everything (dense, the exactness reference); `ClusterAttendedSet` (Mosaic) plugs in the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional, Sequence

import torch

from .request_layout import RequestLayout
from .stats import RequestRecord, RequestStats

__all__ = ["AttendedSetPolicy", "FullAttendedSet"]


class AttendedSetPolicy(ABC):
    """Chooses the attended set; owns whatever per-sequence state that needs."""

    name: str = "abstract"

    @abstractmethod
    def begin_forward(self, requests: Sequence[RequestLayout], is_decode: bool) -> None:
        """Plan a forward over ``requests`` (host side, once per batch, before any layer runs)."""

    @abstractmethod
    def attended_positions(self, layer_id: int, request_index: int, queries: torch.Tensor) -> torch.Tensor:
        """Positions request ``request_index`` attends at ``layer_id``.

        Args:
            layer_id: model layer.
            request_index: index into the ``requests`` given to `begin_forward`.
            queries: ``[extend_len, num_qo_heads, head_dim]`` this layer's queries of the request.

        Returns:
            ``[n] int64`` sorted unique positions ``< seq_len``; must contain every position of the
            forward's own tokens (``prefix_len .. seq_len-1``), so each query sees at least itself.
        """

    def attended_positions_batch(self, layer_id: int, queries: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """`attended_positions` for every request of the forward at once (``{request_index: queries}``);
        policies override it to batch their scoring across requests."""
        return {i: self.attended_positions(layer_id, i, q) for i, q in queries.items()}

    def end_forward(self) -> None:
        """After the last layer: the new tokens' K/V are in the pool for every layer."""

    def release(self, rid: str) -> None:
        """The request finished or was aborted: drop its per-request state."""

    def on_slots_freed(self, slots: torch.Tensor) -> None:
        """SGLang freed these KV slots (tree eviction): drop state that refers to them."""

    def on_slots_remapped(self, old: torch.Tensor, new: torch.Tensor) -> None:
        """SGLang moved positions from slots ``old [M]`` to ``new [M]`` with the same KV (prefix dedup on
        insert into the radix tree; ``old`` is freed): state that refers to ``old`` follows to ``new``."""

    def reset(self) -> None:
        """The cache was flushed: drop all state."""

    def request_stats(self, rid: str) -> Optional[RequestStats]:
        """The request's statistics (reported in the response's ``meta_info['mosaic']``), or None if the
        policy has never seen it."""
        return None


class FullAttendedSet(AttendedSetPolicy):
    """Every request attends every position: dense attention through the mosaic code path."""

    name = "full"

    def __init__(self) -> None:
        self._requests: Sequence[RequestLayout] = ()
        self._records: dict[str, RequestRecord] = {}

    def begin_forward(self, requests: Sequence[RequestLayout], is_decode: bool) -> None:
        self._requests = requests
        for req in requests:
            record = self._records.setdefault(req.rid, RequestRecord(self.name))
            device_tokens = int((req.slots > 0).sum())
            record.begin_forward(context_tokens=req.seq_len, visual_tokens=req.num_visual, frames=0, clusters=0,
                                 device_tokens=device_tokens, host_tokens=0, host_store_used=0)
            record.attended(req.seq_len)

    def attended_positions(self, layer_id: int, request_index: int, queries: torch.Tensor) -> torch.Tensor:
        return torch.arange(self._requests[request_index].seq_len)

    def release(self, rid: str) -> None:
        self._records.pop(rid, None)

    def request_stats(self, rid: str) -> Optional[RequestStats]:
        record = self._records.get(rid)
        return None if record is None else record.snapshot()
