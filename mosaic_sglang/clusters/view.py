"""`IndexView`: the read-only contract between `ClusterIndex` (which writes the state) and the modules
that only read it — selection (`select.py`) and the integrity checks (`integrity.py`).

A view holds references (no copies) to the index's tensors, trimmed to the live part, taken at one
moment; it is cheap to build (`ClusterIndex.view`) and must not outlive the next write to the index.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from ..config import MosaicConfig
from .members import MemberLists
from .table import ClusterTable

__all__ = ["IndexView"]


class IndexView(NamedTuple):
    """The state of one `ClusterIndex` (``N`` positions, ``G`` membership groups, ``L`` layers).

    Attributes:
        config: the index's `MosaicConfig`.
        num_tokens: ``N``, positions appended so far.
        num_visual: visual positions among them.
        frame_ids: ``[N] int64`` frame id per position, ``-1`` for text.
        frame_ord: ``[N] int64`` frame ordinal per position (dense count of frames), ``-1`` for text.
        assign: ``[G, N] int64`` cluster id of each position per group, ``-1`` for none (text).
        num_clusters: clusters per group (host ints; ids ``0 .. num_clusters[g] - 1`` are live).
        layers_of_group: ``[G, Lg] int64`` the layers whose features define group ``g``.
        group_of_layer: ``[L] int64`` the membership group each layer reads.
        table: per-cluster summaries (`ClusterTable`).
        marked: ``[G, capacity] bool`` clusters waiting for a deferred split.
        num_marked: their count (host int).
        active: ``[G, A] int64`` assignment candidates (``-1`` padding).
        key_sum: ``[L, H, D] float64`` running sum of visual keys.
        key_sq: ``[L, H] float64`` running sum of their squared norms.
        read_keys: ``positions [M] int64 -> [L, M, H, D] float32`` keys (stored copy or the key reader).
        member_lists: ``() -> MemberLists`` the members of every cluster as CSR (built once per membership).
        num_kv_heads, head_dim: the key shape.
    """

    config: MosaicConfig
    num_tokens: int
    num_visual: int
    frame_ids: torch.Tensor
    frame_ord: torch.Tensor
    assign: torch.Tensor
    num_clusters: list
    layers_of_group: torch.Tensor
    group_of_layer: torch.Tensor
    table: ClusterTable
    marked: torch.Tensor
    num_marked: int
    active: torch.Tensor
    key_sum: torch.Tensor
    key_sq: torch.Tensor
    read_keys: Callable[[torch.Tensor], torch.Tensor]
    member_lists: Callable[[], MemberLists]
    num_kv_heads: int
    head_dim: int

    @property
    def device(self) -> torch.device:
        return self.assign.device

    @property
    def num_layers(self) -> int:
        return self.group_of_layer.numel()
