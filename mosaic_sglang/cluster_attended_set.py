"""`ClusterAttendedSet`: the Mosaic retrieval policy that the ``mosaic`` attention backend serves.

State is keyed by KV slot, not by request: one `ClusterIndex` per *video prefix*, found through the
slot of the sequence's first visual token (its anchor). A second question on the same video is a new
request whose ``req_to_token`` row holds the same slots, so it finds the same index; two videos never
share one (different slots), and when SGLang frees an indexed slot the index is cut there.

What a request attends at a layer:
    always-attended (sinks, recent window, text) ∪ members of the clusters selected by its queries
    ∪ every position the index does not cover (the forward's own tokens, text after the video, and
    anything not indexed yet). Attending more than selected is never wrong, only less sparse.

The index covers the video span only (positions up to the last visual token of the prompt), so
different questions about one video share it. Tokens are indexed in `end_forward`, after the last
layer, when the pool holds every layer's keys; deferred splits run there too (an extend boundary is a
frame boundary), never in a decode step.
"""

from __future__ import annotations

import os
import itertools
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence

import torch

from .attended_set_policy import AttendedSetPolicy
from .batched_selection import select_layer_batch
from .cluster_index import ClusterIndex
from .residency import ClusterResidency
from .config import MosaicConfig
from .integration.host_tier import HostTier, encode_host
from .integration.request_layout import RequestLayout

__all__ = ["ClusterAttendedSet", "SlotKeyReader"]

DUMP_ENV = "MOSAIC_DUMP_DIR"
"""Debug/test channel: when set, every selection (queries, result) and every index append (keys, frame
ids) is saved there with ``torch.save``, so tests can replay them against an offline `ClusterIndex`."""

SlotKeyReader = Callable[[torch.Tensor], torch.Tensor]
"""``read(slots [M] int64) -> keys [num_layers, M, num_kv_heads, head_dim]`` from the KV pool."""


_VIDEO_UIDS = itertools.count()


@dataclass
class _VideoIndex:
    index: ClusterIndex
    slots: torch.Tensor  # [capacity] int64 slot (or host encoding < 0) of each indexed position
    first_visual: int  # position of the first visual token: its slot value is the anchor
    uid: int = field(default_factory=lambda: next(_VIDEO_UIDS))  # stable key (the anchor may change)


class ClusterAttendedSet(AttendedSetPolicy):
    """Cluster selection over per-video `ClusterIndex`es (see module docstring)."""

    name = "mosaic"

    def __init__(self, config: MosaicConfig, *, num_layers: int, num_kv_heads: int, head_dim: int,
                 read_slot_keys: SlotKeyReader, host: Optional[HostTier] = None) -> None:
        self.config = config
        self.host = host
        self.shape = dict(num_layers=num_layers, num_kv_heads=num_kv_heads, head_dim=head_dim)
        self.read_slot_keys = read_slot_keys
        self.videos: Dict[int, _VideoIndex] = {}
        self._requests: Sequence[RequestLayout] = ()
        self._anchors: list[Optional[int]] = []
        self._is_decode = False
        self._decode_steps: Dict[str, int] = {}
        # rid -> layer -> (selected positions, index size when selected)
        self._kept: Dict[str, Dict[int, tuple[torch.Tensor, int]]] = {}
        self._dump_dir = os.environ.get(DUMP_ENV) or None
        self._dump_count = 0
        self._stats: Dict[str, dict] = {}
        self.maintenance_calls_in_decode = 0  # must stay 0: splits never run inside a decode step
        self.offloaded_tokens = 0
        """Tokens moved to the host tier since start (running total)."""

    # -- plan -------------------------------------------------------------------------------------------

    def begin_forward(self, requests: Sequence[RequestLayout], is_decode: bool) -> None:
        self._requests, self._is_decode = requests, is_decode
        self._anchors = [self._attach(i, req) for i, req in enumerate(requests)]
        if self.host is not None:
            self.host.begin_forward({self.videos[a].uid for a in self._anchors if a is not None})
        for req, anchor in zip(requests, self._anchors):
            if is_decode:
                self._decode_steps[req.rid] = self._decode_steps.get(req.rid, 0) + 1
            else:
                self._decode_steps[req.rid] = 0
                self._kept.pop(req.rid, None)
            stats = self._stats.setdefault(req.rid, {"policy": self.name})
            device_tokens = int((req.slots > 0).sum())
            stats["max_device_tokens"] = max(stats.get("max_device_tokens", 0), device_tokens)
            stats.update(
                context_tokens=req.seq_len,
                visual_tokens=req.num_visual,
                frames=int(req.frame_ids.max()) + 1 if req.num_visual else 0,
                attended_tokens=0,
                clusters=self.videos[anchor].index.num_clusters if anchor is not None else 0,
                device_tokens=device_tokens,
                host_tokens=int((req.slots < 0).sum()),
                host_store_used=self.host.used_tokens if self.host is not None else 0,
                cluster_cache_tokens=0,
            )

    def _attach(self, i: int, req: RequestLayout) -> Optional[int]:
        """Anchor slot of the request's video index (created if new), or None for text-only requests."""
        visual = (req.frame_ids >= 0).nonzero()
        if visual.numel() == 0:
            return None
        slots = req.slots
        anchor = int(slots[int(visual[0])])
        video = self.videos.get(anchor)
        if video is not None:
            n = video.index.num_tokens
            m = min(n, req.prefix_len)
            same = int((video.slots[:m] == slots[:m]).all()) if m else 1
            if not same or n > req.prefix_len:
                # this request recomputes positions the index holds: cut the index where it diverges
                diverge = m if same else int((video.slots[:m] != slots[:m]).nonzero()[0])
                video.index.truncate(min(diverge, req.prefix_len))
        else:
            video = _VideoIndex(None, torch.empty(0, dtype=torch.int64), int(visual[0]))
            # the reader follows the video object: its anchor key changes when its first token is offloaded
            video.index = ClusterIndex(self.config, **self.shape, key_reader=lambda p: self.read_slot_keys(video.slots[p]))
            self.videos[anchor] = video
        return anchor

    # -- run --------------------------------------------------------------------------------------------

    def attended_positions(self, layer_id: int, request_index: int, queries: torch.Tensor) -> torch.Tensor:
        return self.attended_positions_batch(layer_id, {request_index: queries})[request_index]

    def attended_positions_batch(self, layer_id: int, queries: Dict[int, torch.Tensor]) -> Dict[int, torch.Tensor]:
        """All requests of the forward at one layer; the selections due are scored in one batched call."""
        due = [i for i in queries if self._needs_selection(layer_id, i)]
        if due:
            indexes = [self.videos[self._anchors[i]].index for i in due]
            chosen = select_layer_batch(indexes, layer_id, [queries[i] for i in due])
            for i, index, selected in zip(due, indexes, chosen):
                req = self._requests[i]
                self._kept.setdefault(req.rid, {})[layer_id] = (selected, index.num_tokens)
                self._dump(self._anchors[i], req, layer_id, queries[i], selected)
        return {i: self._compose(layer_id, i) for i in queries}

    def read_host(self, request_index: int, layer: int, host_rows: torch.Tensor, device):
        """K/V of a request's host-resident rows at ``layer`` through its video's device cluster cache.

        Bound per layer: ``ceil((budget + sink_tokens + recent_window) × (1 + residency_slack))`` tokens.
        The index counts cluster members in *its* sinks and recent window (the tail of the video span) as
        free, while a later question's window is its own tail, so a selection may carry up to
        sinks + window tokens beyond the budget; whole clusters must fit.
        """
        anchor = self._anchors[request_index]
        if anchor is None:
            return self.host.read(layer, host_rows, device)
        cfg = self.config
        capacity = ClusterResidency.capacity_for(cfg.budget + cfg.always_attended, cfg.residency_slack)
        capacity = min(self.host.store.capacity, capacity)
        uid = self.videos[anchor].uid
        host = self.host
        counters = lambda: (host.copies, host.prefetch_copies, host.cache_lookups, host.cache_hits)  # noqa: E731
        before = counters()
        kv = host.read_cached(uid, capacity, layer, host_rows, device, prefetch_next=cfg.prefetch)
        after = counters()
        stats = self._stats[self._requests[request_index].rid]
        for name, b, a in zip(("host_copies", "prefetch_copies", "cache_lookups", "cache_hits"), before, after):
            stats[name] = stats.get(name, 0) + a - b
        stats["cluster_cache_tokens"] = max(stats["cluster_cache_tokens"], host.resident_tokens(uid))
        stats["cache_overflow_reads"] = host.overflow_reads
        return kv

    def _needs_selection(self, layer_id: int, i: int) -> bool:
        req, anchor = self._requests[i], self._anchors[i]
        if self._dense(i):
            return False
        previous = self._kept.get(req.rid, {}).get(layer_id)
        every = self.config.reselect_every
        return (
            not self._is_decode
            or previous is None
            or previous[1] < self.videos[anchor].index.num_tokens  # the index grew since (the prompt's own video)
            or (every > 0 and self._decode_steps.get(req.rid, 0) % every == 0)
        )

    def _dense(self, i: int) -> bool:
        req = self._requests[i]
        prefill = not self._is_decode and req.extend_len > 1
        return self._anchors[i] is None or (prefill and not self.config.select_in_prefill)

    def _compose(self, layer_id: int, i: int) -> torch.Tensor:
        """Selected ∪ always-attended ∪ everything the index does not cover."""
        req = self._requests[i]
        if self._dense(i):
            return self._record(req, torch.arange(req.seq_len))
        covered = min(self.videos[self._anchors[i]].index.num_tokens, req.seq_len)
        selected = self._kept[req.rid][layer_id][0]
        selected = selected[selected < covered]
        positions = torch.cat([selected, self._always(req, covered), torch.arange(covered, req.seq_len)])
        return self._record(req, torch.unique(positions))

    def _always(self, req: RequestLayout, covered: int) -> torch.Tensor:
        """Sinks, recent window and text among the covered positions."""
        cfg = self.config
        frame_ids = req.frame_ids[:covered]
        keep = frame_ids < 0
        keep[: cfg.sink_tokens] = True
        if cfg.recent_window:
            keep[max(0, req.seq_len - cfg.recent_window) :] = True
        return keep.nonzero().flatten()

    def _record(self, req: RequestLayout, positions: torch.Tensor) -> torch.Tensor:
        stats = self._stats[req.rid]
        stats["attended_tokens"] = max(stats["attended_tokens"], int(positions.numel()))
        return positions

    def end_forward(self, read_keys=None) -> None:
        """Index the forward's new video-span tokens; run deferred splits (extend forwards only)."""
        if self._is_decode:
            return
        for i, req in enumerate(self._requests):
            anchor = self._anchors[i]
            if anchor is None:
                continue
            video = self.videos[anchor]
            index = video.index
            visual = (req.frame_ids >= 0).nonzero().flatten()
            span_end = int(visual[-1]) + 1
            start, end = index.num_tokens, min(span_end, req.seq_len)
            if end <= start:
                continue
            positions = torch.arange(start, end)
            slots = req.slots[start:end]
            video.slots = _grow_to(video.slots, end)
            video.slots[start:end] = slots
            keys = self.read_slot_keys(slots)
            index.append(keys, req.frame_ids[start:end])
            if self._dump_dir:
                self._save({"event": "append", "anchor": anchor, "start": start, "keys": keys, "frame_ids": req.frame_ids[start:end]})
            index.maintain()
            self._stats[req.rid]["clusters"] = index.num_clusters

    def _dump(self, anchor: int, req: RequestLayout, layer_id: int, queries: torch.Tensor, selected: torch.Tensor) -> None:
        if self._dump_dir:
            self._save({"event": "select", "rid": req.rid, "anchor": anchor, "layer": layer_id,
                        "queries": queries.detach().cpu(), "selected": selected.cpu(),
                        "index_tokens": self.videos[anchor].index.num_tokens})

    def _save(self, record: dict) -> None:
        os.makedirs(self._dump_dir, exist_ok=True)
        torch.save(record, os.path.join(self._dump_dir, f"{os.getpid()}-{self._dump_count:06d}.pt"))
        self._dump_count += 1

    # -- offload ----------------------------------------------------------------------------------------

    def offload_prefix(self, path: torch.Tensor, node_id, offloader, read_kv, *, sealed_only: bool = False) -> int:
        """Move the clustered tokens of the video whose index matches ``path`` to the host tier.

        Called by the radix cache when a request ends (everything clustered moves) and after each extend
        chunk is checkpointed into the tree (``sealed_only``: only clusters with no member in the last
        ``active_frames`` frames, which can no longer receive tokens). Sinks stay on the device; one
        extent per cluster.

        Args:
            path: ``[P] int64`` tree values along the request's cached path (slots or host encodings).
            node_id: the path's last tree node.
            offloader: `PrefixOffloader` of the cache (tree values, ledger, live rows, allocator).
            read_kv: ``slots [M] -> (k [L, M, H, D], v [L, M, H, Dv])`` from the device pool.

        Returns:
            Tokens moved to host.
        """
        if self.host is None:
            return 0
        moved = 0
        for anchor, video in list(self.videos.items()):
            n = video.index.num_tokens
            if n == 0 or n > path.numel() or not torch.equal(video.slots[:n], path[:n]):
                continue
            indptr, members = video.index.cluster_members(0)
            on_device = (path[members] > 0) & (members >= self.config.sink_tokens)
            if sealed_only:
                on_device &= self._sealed(video.index, indptr, members)
            groups = _groups_to_move(indptr, members, on_device)
            if not groups:
                continue
            host_rows = self.host.put_clusters(read_kv, [path[g] for g in groups])
            if len(host_rows) < len(groups):  # host store full: the rest stays on the device
                groups = groups[: len(host_rows)]
                if not groups:
                    continue
            positions, rows = torch.cat(groups), torch.cat(host_rows)
            order = torch.argsort(positions)
            positions, rows = positions[order], rows[order]
            offloader.offload(node_id, positions, rows)
            video.slots[positions] = encode_host(rows)
            new_anchor = int(video.slots[video.first_visual])
            if new_anchor != anchor:
                self.videos[new_anchor] = self.videos.pop(anchor)
            moved += int(positions.numel())
        self.offloaded_tokens += moved
        return moved

    def _sealed(self, index: ClusterIndex, indptr: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
        """``[V] bool`` per member: its cluster's last member is before the last ``active_frames`` frames."""
        frame_ids = index.frame_ids
        visual = frame_ids[frame_ids >= 0]
        if visual.numel() == 0 or members.numel() == 0:
            return torch.zeros(members.numel(), dtype=torch.bool)
        first_active = int(visual.max()) - self.config.active_frames + 1
        cutoff = int((frame_ids >= first_active).nonzero()[0])  # first position of an active frame
        sizes = indptr[1:] - indptr[:-1]
        last_member = members[indptr[1:].clamp(min=1) - 1]  # ascending members: the last is the max
        sealed_cluster = (sizes > 0) & (last_member < cutoff)
        return torch.repeat_interleave(sealed_cluster, sizes)

    # -- lifetime ---------------------------------------------------------------------------------------

    def release(self, rid: str) -> None:
        self._kept.pop(rid, None)
        self._decode_steps.pop(rid, None)
        self._stats.pop(rid, None)

    def on_slots_freed(self, slots: torch.Tensor) -> None:
        if not self.videos:
            return
        freed = torch.unique(slots)
        for anchor in list(self.videos):
            video = self.videos[anchor]
            n = video.index.num_tokens
            hit = torch.isin(video.slots[:n], freed).nonzero()
            if hit.numel() == 0:
                continue
            cut = int(hit[0])
            if cut == 0 or anchor in freed:
                if self.host is not None:
                    self.host.drop_cache(video.uid)
                del self.videos[anchor]
            else:
                video.index.truncate(cut)

    def reset(self) -> None:
        self.videos.clear()

    def request_stats(self, rid: str) -> dict:
        stats = dict(self._stats.get(rid, {}))
        if stats.get("cache_lookups"):
            stats["cache_hit_rate"] = round(stats["cache_hits"] / stats["cache_lookups"], 4)
        return stats


def _groups_to_move(indptr: torch.Tensor, members: torch.Tensor, move: torch.Tensor) -> list[torch.Tensor]:
    """Per cluster with at least one member to move, those members (ascending), clusters in id order.

    Vectorised over all members; the Python work is per cluster *moved*, so a stream that offloads each
    cluster once pays for each once, not at every chunk.

    Args:
        indptr: ``[C + 1] int64`` CSR of ``members`` by cluster.
        members: ``[V] int64`` positions.
        move: ``[V] bool`` which members move.
    """
    sizes = indptr[1:] - indptr[:-1]
    cluster_of = torch.repeat_interleave(torch.arange(sizes.numel()), sizes)[move]
    if cluster_of.numel() == 0:
        return []
    counts = torch.bincount(cluster_of, minlength=sizes.numel())
    return list(torch.split(members[move], counts[counts > 0].tolist()))


def _grow_to(slots: torch.Tensor, n: int) -> torch.Tensor:
    if slots.numel() >= n:
        return slots
    grown = torch.empty(max(n, 2 * slots.numel()), dtype=torch.int64)
    grown[: slots.numel()] = slots
    return grown
