"""`VideoRegistry`: one `ClusterIndex` per video prefix, keyed by KV slot, not by request.

The indexes' cluster state lives on the model's device (``device``: where the KV pool is, so selection
scores the layer's queries where they are); the slot bookkeeping here (anchors, ``slots``) is host-side.

A video is found through the slot of its first visual token (its *anchor*). A second question on the
same video is a new request whose ``req_to_token`` row holds the same slots, so it finds the same
index; two videos never share one (different slots); when SGLang frees an indexed slot the index is
cut there (or dropped, if the anchor went). When a video's first visual token is offloaded its anchor
becomes that token's host encoding (`rekey`).

The index covers the video span only (positions up to the last visual token of the prompt), so
different questions about one video share it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch

from ..clusters import ClusterIndex
from ..clusters.table import grow
from ..config import MosaicConfig
from .request_layout import RequestLayout

__all__ = ["VideoIndex", "VideoRegistry", "SlotKeyReader"]

SlotKeyReader = Callable[[torch.Tensor], torch.Tensor]
"""``read(slots [M] int64) -> keys [num_layers, M, num_kv_heads, head_dim]`` from the KV pool, on
the pool's device (host encodings ``< 0`` read from the host tier)."""

_VIDEO_UIDS = itertools.count()


@dataclass
class VideoIndex:
    """One indexed video prefix.

    Attributes:
        index: its `ClusterIndex` (keys read through the slots below).
        slots: ``[capacity] int64`` slot (or host encoding ``< 0``) of each indexed position.
        first_visual: position of the first visual token: its slot value is the anchor.
        uid: a stable key (the anchor changes when the first visual token is offloaded).
    """

    index: Optional[ClusterIndex]
    slots: torch.Tensor
    first_visual: int
    uid: int = field(default_factory=lambda: next(_VIDEO_UIDS))


class VideoRegistry(Mapping):
    """Anchor slot → `VideoIndex` (a read-only mapping; changed through the methods below)."""

    def __init__(self, config: MosaicConfig, *, num_layers: int, num_kv_heads: int, head_dim: int,
                 read_slot_keys: SlotKeyReader, device: torch.device | str | None = None) -> None:
        self.config = config
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.shape = dict(num_layers=num_layers, num_kv_heads=num_kv_heads, head_dim=head_dim)
        self.read_slot_keys = read_slot_keys
        self._videos: dict[int, VideoIndex] = {}
        self._decoding: dict[str, tuple[int, VideoIndex, int]] = {}  # rid -> (anchor, video, index size) at attach

    def __getitem__(self, anchor: int) -> VideoIndex:
        return self._videos[anchor]

    def __iter__(self) -> Iterator[int]:
        return iter(self._videos)

    def __len__(self) -> int:
        return len(self._videos)

    def attach(self, req: RequestLayout, *, is_decode: bool = False) -> Optional[int]:
        """Anchor of the request's video (its index created if new), or None for text-only requests.

        A request that recomputes positions the index holds (it diverges from the indexed slots, or its
        cached prefix is shorter than the index) cuts the index where they part. A decode step of a
        request attached before, whose video is still filed under the same anchor with the same index
        size, is answered from that attach: a decode step adds one generated token and changes no slot of
        the prefix, so nothing of size O(context) is scanned per step.
        """
        known = self._decoding.get(req.rid) if is_decode else None
        if known is not None:
            anchor, video, size = known
            if self._videos.get(anchor) is video and video.index.num_tokens == size:
                return anchor
        anchor = self._attach(req)
        if anchor is None:
            self._decoding.pop(req.rid, None)
        else:
            video = self._videos[anchor]
            self._decoding[req.rid] = (anchor, video, video.index.num_tokens)
        return anchor

    def forget(self, rid: str) -> None:
        """The request ended: drop what `attach` remembered of it."""
        self._decoding.pop(rid, None)

    def _attach(self, req: RequestLayout) -> Optional[int]:
        visual = (req.frame_ids >= 0).nonzero()
        if visual.numel() == 0:
            return None
        slots = req.slots
        anchor = int(slots[int(visual[0])])
        video = self._videos.get(anchor)
        if video is not None:
            n = video.index.num_tokens
            m = min(n, req.prefix_len)
            same = int((video.slots[:m] == slots[:m]).all()) if m else 1
            if not same or n > req.prefix_len:
                diverge = m if same else int((video.slots[:m] != slots[:m]).nonzero()[0])
                video.index.truncate(min(diverge, req.prefix_len))
        else:
            video = VideoIndex(None, torch.empty(0, dtype=torch.int64), int(visual[0]))
            # the reader follows the video object: its anchor key changes when its first token is offloaded
            video.index = ClusterIndex(self.config, **self.shape, device=self.device,
                                       key_reader=lambda p: self.read_slot_keys(video.slots[p.cpu()]))
            self._videos[anchor] = video
        return anchor

    def index_new_tokens(self, anchor: int, req: RequestLayout) -> Optional[tuple[int, torch.Tensor, torch.Tensor]]:
        """Append the request's not-yet-indexed video-span positions (their K/V are in the pool for every
        layer) and run the deferred splits.

        Returns:
            ``(start, keys [L, T, H, D], frame_ids [T])`` of what was appended, or None if nothing was.
        """
        video = self._videos[anchor]
        index = video.index
        visual = (req.frame_ids >= 0).nonzero().flatten()
        start, end = index.num_tokens, min(int(visual[-1]) + 1, req.seq_len)
        if end <= start:
            return None
        slots = req.slots[start:end]
        if video.slots.numel() < end:
            video.slots = grow(video.slots, 0, max(end, 2 * video.slots.numel()), 0)
        video.slots[start:end] = slots
        keys = self.read_slot_keys(slots)
        frame_ids = req.frame_ids[start:end]
        index.append(keys, frame_ids)
        index.maintain()
        return start, keys, frame_ids

    def matching(self, path: torch.Tensor) -> list[tuple[int, VideoIndex]]:
        """The videos whose indexed slots are a prefix of ``path [P]`` (tree values of a cached path)."""
        out = []
        for anchor, video in self._videos.items():
            n = video.index.num_tokens
            if 0 < n <= path.numel() and torch.equal(video.slots[:n], path[:n]):
                out.append((anchor, video))
        return out

    def rekey(self, anchor: int) -> None:
        """The video's first visual token changed slot value (offloaded): file it under the new anchor."""
        video = self._videos[anchor]
        new_anchor = int(video.slots[video.first_visual])
        if new_anchor != anchor:
            self._videos[new_anchor] = self._videos.pop(anchor)

    def remap(self, old: torch.Tensor, new: torch.Tensor) -> list[int]:
        """SGLang re-pointed positions from slots ``old [M]`` to ``new [M]`` holding the same KV (the radix
        tree deduplicated a prefix another request had already inserted, and freed ``old``): indexed
        positions follow. A video whose anchor lands on another video's anchor (the same video prefilled
        twice in one batch) is dropped in favour of the one already there. Returns the dropped uids."""
        if not self._videos or old.numel() == 0:
            return []
        order = torch.argsort(old)
        old_sorted, new_sorted = old[order], new[order]
        dropped = []
        for anchor in list(self._videos):
            video = self._videos[anchor]
            view = video.slots[: video.index.num_tokens]
            at = torch.searchsorted(old_sorted, view).clamp(max=old_sorted.numel() - 1)
            hit = old_sorted[at] == view
            if not bool(hit.any()):
                continue
            view[hit] = new_sorted[at[hit]]
            new_anchor = int(video.slots[video.first_visual])
            if new_anchor == anchor:
                continue
            del self._videos[anchor]
            if new_anchor in self._videos:
                dropped.append(video.uid)
            else:
                self._videos[new_anchor] = video
        return dropped

    def on_slots_freed(self, slots: torch.Tensor) -> list[int]:
        """SGLang freed these slots: cut each index at its first freed position, drop the videos whose
        anchor (or first position) went. Returns the dropped videos' uids."""
        if not self._videos:
            return []
        freed, dropped = torch.unique(slots), []
        for anchor in list(self._videos):
            video = self._videos[anchor]
            hit = torch.isin(video.slots[: video.index.num_tokens], freed).nonzero()
            if hit.numel() == 0:
                continue
            cut = int(hit[0])
            if cut == 0 or anchor in freed:
                dropped.append(video.uid)
                del self._videos[anchor]
            else:
                video.index.truncate(cut)
        return dropped

    def clear(self) -> None:
        self._videos.clear()
        self._decoding.clear()
