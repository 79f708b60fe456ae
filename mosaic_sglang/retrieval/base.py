"""The retrieval protocol shared by `ClusterIndex` and every baseline, and the attended-set accounting.

Every retriever sees the same stream: ``append(keys, frame_ids)`` as video/text tokens arrive, then
``select(queries)`` for the question. It returns a `Selection`: per layer, the sorted, unique token
positions to attend. Always-attended tokens (sinks, recent window, text) are added by
`always_attended_mask` for everyone (the serving policy included), so budgets compare like for like.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import NamedTuple

import torch

from ..config import MosaicConfig
from ..csr import indptr_from_ids

__all__ = ["Selection", "Retriever", "always_attended_mask", "always_attended_positions"]


class Selection(NamedTuple):
    """The attended set of one sequence, CSR over layers.

    Attributes:
        indptr: ``[num_layers + 1] int64``; layer ``l`` owns ``indices[indptr[l]:indptr[l+1]]``.
        indices: ``[nnz] int64`` token positions (global across `append` calls), sorted and unique per layer.
        num_units: ``[num_layers] int64`` retrieval units chosen per layer (clusters, frames, pages or
            tokens, depending on the retriever): what a transfer engine would move.
    """

    indptr: torch.Tensor
    indices: torch.Tensor
    num_units: torch.Tensor

    @classmethod
    def from_mask(cls, mask: torch.Tensor, num_units: torch.Tensor) -> "Selection":
        """From ``mask [num_layers, N] bool`` (attended positions per layer) and ``num_units [num_layers]``."""
        layer_ids, positions = mask.nonzero(as_tuple=True)  # row-major: by layer, then position
        return cls(indptr_from_ids(layer_ids, mask.shape[0]), positions, num_units.to(torch.int64))

    @property
    def num_layers(self) -> int:
        return self.indptr.numel() - 1

    def layer(self, layer_id: int) -> torch.Tensor:
        """``[n_l] int64`` positions attended at ``layer_id``."""
        return self.indices[self.indptr[layer_id] : self.indptr[layer_id + 1]]

    def sizes(self) -> torch.Tensor:
        """``[num_layers] int64`` attended tokens per layer."""
        return self.indptr[1:] - self.indptr[:-1]


class Retriever(ABC):
    """A KV retrieval policy over one sequence (Mosaic clusters or a baseline).

    Implementations keep whatever summaries they need; they must not keep more than the budget's worth
    of device state per query (the host tier is someone else's concern).
    """

    config: MosaicConfig

    @abstractmethod
    def append(self, keys: torch.Tensor, frame_ids: torch.Tensor) -> None:
        """Observe new tokens.

        Args:
            keys: ``[num_layers, T, num_kv_heads, head_dim]`` float (post-RoPE keys, as cached).
            frame_ids: ``[T] int64``; the frame each visual token belongs to (non-decreasing over the
                stream), ``-1`` for text tokens. Positions continue from the previous call.
        """

    @abstractmethod
    def select(self, queries: torch.Tensor) -> Selection:
        """Choose the attended set for the given query vectors.

        Args:
            queries: ``[num_layers, Tq, num_qo_heads, head_dim]`` float; ``num_qo_heads`` is a multiple of
                ``num_kv_heads`` (GQA). One attended set serves all heads of a layer.

        Returns:
            `Selection` over all positions appended so far; always contains
            `always_attended_positions`, plus at most ``config.budget`` other tokens per layer.
        """

    @property
    @abstractmethod
    def num_tokens(self) -> int:
        """Tokens appended so far."""


def always_attended_mask(frame_ids: torch.Tensor, config: MosaicConfig, *, seq_len: int | None = None) -> torch.Tensor:
    """Positions every retriever attends regardless of the query: the one rule.

    Args:
        frame_ids: ``[N] int64`` frame id per position, ``-1`` for text.
        config: supplies ``sink_tokens`` and ``recent_window``.
        seq_len: where the recent window ends (default ``N``). The serving policy describes a prefix of
            a longer sequence (the indexed video span), whose window is the *sequence's* tail.

    Returns:
        ``[N] bool``: the first ``sink_tokens`` positions, positions ``>= seq_len - recent_window`` and
        every text position.

    Example:
        >>> cfg = MosaicConfig(sink_tokens=1, recent_window=2)
        >>> always_attended_mask(torch.tensor([-1, 0, 0, 0, 1, 1]), cfg).tolist()
        [True, False, False, False, True, True]
    """
    n = frame_ids.numel()
    seq_len = n if seq_len is None else seq_len
    keep = frame_ids < 0
    keep[: min(config.sink_tokens, n)] = True
    if config.recent_window > 0:
        keep[max(0, seq_len - config.recent_window) :] = True
    return keep


def always_attended_positions(frame_ids: torch.Tensor, config: MosaicConfig) -> torch.Tensor:
    """``[n] int64`` sorted positions of `always_attended_mask` (sinks, recent window, text)."""
    return always_attended_mask(frame_ids, config).nonzero().flatten()
