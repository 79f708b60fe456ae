"""The interface between the attention backend and a retrieval policy: which positions each request
attends at each layer of a forward, as a plan and a per-layer run (FlashInfer's split).

The backend calls, per forward: `plan` once on the host (every request's always-attended part, its
number of selected tokens, and whatever selection is already known, as a `ForwardPlan`), `layer_kv`
once per layer with that layer's queries (the policy writes the selections due at this forward; for a
decode step that keeps its question's selection it is a view of the plan: no work, no host sync), and
`end_forward` once after the last layer, when every layer's K/V of the new tokens is in the pool (the
place to index them). `FullAttendedSet` attends everything (dense, the exactness reference);
`ClusterAttendedSet` (Mosaic) plugs in the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, List, Optional, Sequence

import torch

from .plan import AlwaysPart, ForwardPlan, LayerKV, build_plan
from .request_layout import RequestLayout
from .stats import RequestRecord, RequestStats

__all__ = ["AttendedSetPolicy", "FullAttendedSet", "LayerKeyReader"]

LayerKeyReader = Callable[[Sequence[int], Sequence[torch.Tensor]], List[torch.Tensor]]
"""``read(request indices, positions [n_j] int64 on the device per request) -> keys [n_j, H, D] per request`` of
one layer, as cached in the pool (the forward's own tokens included: the backend stores them before
attending); ``H`` = every KV head the cluster index sees (all ranks' under tensor parallelism)."""


class AttendedSetPolicy(ABC):
    """Chooses the attended set; owns whatever per-sequence state that needs."""

    name: str = "abstract"

    @abstractmethod
    def plan(self, requests: Sequence[RequestLayout], is_decode: bool) -> ForwardPlan:
        """Plan a forward over ``requests`` (host side, once per batch, before any layer runs).

        Every request's list must contain the forward's own tokens (``prefix_len .. seq_len-1``), so each
        query sees at least itself, and no position twice.
        """

    @abstractmethod
    def layer_kv(self, plan: ForwardPlan, layer_id: int, queries: torch.Tensor,
                 read_keys: Optional[LayerKeyReader] = None) -> LayerKV:
        """Layer ``layer_id``'s lists.

        Args:
            plan: this forward's plan (from `plan`).
            layer_id: model layer.
            queries: ``[nq, num_qo_heads, head_dim]`` the layer's queries of every request
                (``plan.q_indptr`` splits them).
            read_keys: this layer's cached keys of some positions of a request (what a selection that
                weighs the always-attended part reads); None: such a selection estimates it from the index.
        """

    def read_host(self, request_index: int, layer: int, host_rows: torch.Tensor, device):
        """K/V of host-resident rows (policies that offload); see `ClusterAttendedSet.read_host`."""
        raise NotImplementedError(f"{type(self).__name__} keeps no KV on the host")

    def end_forward(self) -> None:
        """After the last layer: the new tokens' K/V are in the pool for every layer."""

    @property
    def num_live_requests(self) -> int:
        """Requests whose per-request state the policy holds (the ``live_requests`` gauge)."""
        return len(getattr(self, "_records", ()))

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
        self._records: dict[str, RequestRecord] = {}

    def plan(self, requests: Sequence[RequestLayout], is_decode: bool) -> ForwardPlan:
        for req in requests:
            record = self._records.setdefault(req.rid, RequestRecord(self.name))
            device_tokens = int((req.slots > 0).sum())
            record.begin_forward(context_tokens=req.seq_len, visual_tokens=req.num_visual, frames=0, clusters=0,
                                 device_tokens=device_tokens, host_tokens=0, host_store_used=0)
            record.attended(req.seq_len)
        # one list serves every layer: the plan holds a single row
        return build_plan(1, [(r.prefix_len, r.seq_len) for r in requests], [AlwaysPart.dense()] * len(requests),
                          [0] * len(requests))

    def layer_kv(self, plan: ForwardPlan, layer_id: int, queries: torch.Tensor,
                 read_keys: Optional[LayerKeyReader] = None) -> LayerKV:
        return plan.layer(0)

    def release(self, rid: str) -> None:
        self._records.pop(rid, None)

    def request_stats(self, rid: str) -> Optional[RequestStats]:
        record = self._records.get(rid)
        return None if record is None else record.snapshot()
