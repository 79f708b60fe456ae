"""Rank-consistent clusters under tensor parallelism.

Under TP each rank holds ``H / tp`` of the KV heads (and the matching query heads). If every rank
clustered and scored its own heads, ranks would choose different clusters and offload different
tokens, and their radix trees — which SGLang keeps in lock-step — would diverge. Instead each rank's
cluster logic sees **all** heads and runs the same deterministic code on the same inputs, so it takes
the same decisions without any decision being sent:

- keys the index reads (new tokens at ingest, members at maintenance) are all-gathered over the
  attention-TP group along the head dimension (``[L, M, H/tp, D] -> [L, M, H, D]``);
- queries of a layer that selects (a question's prefill chunks, re-select decode steps) are all-gathered
  the same way (``[T, Hq/tp, D] -> [T, Hq, D]``); kept decode steps select nothing and gather nothing.

Attention itself stays per rank (its own heads, over the shared selection; with per-KV-head lists, over
its own heads' block of every head's lists: `MosaicAttnBackend._own_heads`); the host store keeps each
rank's own heads, at the same rows on every rank (extents are allocated by the same decisions).
Ranks concatenate heads in rank order, which is how SGLang splits them, so GQA groups line up.

`decision_log` hands SGLang's rank-consensus checker (``SGLANG_ENABLE_RANK_CONSENSUS_CHECKER=1``)
a record of every index size, selection and offload: a divergence stops all ranks with both logs.
"""

from __future__ import annotations

import threading
from typing import Optional

import torch

__all__ = ["HeadGather", "head_gather", "ConsensusLog", "decision_log"]


class HeadGather:
    """All-gather over the attention-TP group along a head dimension.

    Args:
        group: SGLang's `GroupCoordinator` of the attention-TP ranks.
    """

    def __init__(self, group) -> None:
        self.group = group
        self.size = group.world_size
        self.rank = group.rank_in_group

    def __call__(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """``x`` with dimension ``dim`` concatenated over the ranks, in rank order (every rank calls it)."""
        return self.group.all_gather(x.contiguous(), dim=dim)


def head_gather() -> Optional[HeadGather]:
    """The process's `HeadGather`, or None without tensor parallelism."""
    from sglang.srt.distributed.parallel_state import get_attn_tp_group

    group = get_attn_tp_group()
    return HeadGather(group) if group.world_size > 1 else None


class ConsensusLog:
    """Mosaic's decisions into SGLang's rank-consensus checker (`ClusterAttendedSet.decision_log`).

    The checker is configured after the model (and so this backend) is built, and only accepts records
    from the scheduler thread; `active` says whether a record would be taken now, so the policy computes
    a record's digest only then.
    """

    def __init__(self) -> None:
        from sglang.srt.utils import rank_consensus_checker

        self._checker = rank_consensus_checker

    def active(self) -> bool:
        checker = self._checker
        return checker.enabled() and threading.current_thread() is checker._scheduler_thread

    def __call__(self, fmt: str, *args) -> None:
        self._checker.assert_same(fmt, *args)


def decision_log() -> Optional[ConsensusLog]:
    """A `ConsensusLog` when ``SGLANG_ENABLE_RANK_CONSENSUS_CHECKER`` is set, else None (no cost)."""
    from sglang.srt.environ import envs

    return ConsensusLog() if envs.SGLANG_ENABLE_RANK_CONSENSUS_CHECKER.get() else None
