"""`ClusterAttendedSet`: the Mosaic retrieval policy that the ``mosaic`` attention backend serves.

Its jobs, each in its own place: the per-video cluster indexes keyed by slot (`VideoRegistry`), the
per-request selection cache and the attended-set composition (here), per-request and process
statistics (`stats`), what leaves the device (`mosaic_sglang.offload.planner`), and the replay dump
(`SelectionDump`).

What a request attends at a layer:
    always-attended (sinks, recent window, text) ∪ members of the clusters selected by its queries
    ∪ every position the index does not cover (the forward's own tokens, text after the video, and
    anything not indexed yet). Attending more than selected is never wrong, only less sparse.

Tokens are indexed in `end_forward`, after the last layer, when the pool holds every layer's keys;
deferred splits run there too (an extend boundary is a frame boundary), never in a decode step. In
decode the question's selection is kept (``reselect_every = 0``) or renewed every k steps.
"""

from __future__ import annotations

import hashlib
from typing import Dict, Optional, Sequence

import torch

from mosaic_sglang.kernels.assemble_always import always_ranges

from ..clusters import select_layer_batch, select_layer_into
from ..clusters.mass import always_log_mass, banded_log_mass
from ..config import MosaicConfig
from ..offload.host_tier import HostTier, decode_host, encode_host
from ..offload.planner import closed_groups, clusters_to_offload, stream_groups
from ..offload.residency import ClusterResidency
from ..retrieval.base import always_attended_mask
from .plan import AlwaysPart, ForwardPlan, LayerKV, build_plan
from .policy import AttendedSetPolicy, LayerKeyReader
from .request_layout import RequestLayout
from .selection_slab import SelectionSlab
from .selection_dump import SelectionDump
from .stats import ProcessCounters, RequestRecord, RequestStats
from .videos import SlotKeyReader, VideoRegistry

__all__ = ["ClusterAttendedSet", "tensor_digest"]


def tensor_digest(values: torch.Tensor) -> str:
    """``'<n>:<8-byte BLAKE2b hex>'`` of an integer tensor's values (a host copy: debug checks only)."""
    data = values.detach().to("cpu", torch.int64).contiguous().numpy().tobytes()
    return f"{values.numel()}:{hashlib.blake2b(data, digest_size=8).hexdigest()}"


class ClusterAttendedSet(AttendedSetPolicy):
    """Cluster selection over per-video `ClusterIndex`es (see module docstring).

    Args:
        config: the knobs.
        num_layers, num_kv_heads, head_dim: the KV pool's shape.
        read_slot_keys: keys of pool slots (`SlotKeyReader`).
        host: the host tier when offload is on.
        counters: the process counters to add to (default: private ones).
        device: the model's device: where the plan's lists and the kept selections (`SelectionSlab`) live
            (default CPU).
    """

    name = "mosaic"

    def __init__(self, config: MosaicConfig, *, num_layers: int, num_kv_heads: int, head_dim: int,
                 read_slot_keys: SlotKeyReader, host: Optional[HostTier] = None,
                 counters: Optional[ProcessCounters] = None, device: torch.device | str | None = None) -> None:
        self.config = config
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.host = host
        self.counters = counters if counters is not None else ProcessCounters()
        self.num_layers = num_layers
        self.heads = num_kv_heads if config.selection_heads == "per_kv_head" else 1
        """Lists per request in a plan (`ForwardPlan.heads`)."""
        self.videos = VideoRegistry(config, num_layers=num_layers, num_kv_heads=num_kv_heads, head_dim=head_dim,
                                    read_slot_keys=read_slot_keys, device=self.device)
        self._always_masks: Dict[int, torch.Tensor] = {}  # request index -> [covered] bool, this forward
        self._kept_always: Dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # rid -> always ranges it was kept with
        self._requests: Sequence[RequestLayout] = ()
        self._spans: Dict[int, tuple[int, int, int, int]] = {}  # due request -> (q start, q end, selected start, end)
        self._always_starts: Dict[int, int] = {}  # due request -> start of its list (its always part ends at selected start)
        self._anchors: list[Optional[int]] = []
        self._is_decode = False
        self._decode_steps: Dict[str, int] = {}
        self._prompt_ended: set = set()  # rids whose prompt's end regrouped the tail (`regroup_tail`) already
        self.selections = SelectionSlab(num_layers, self.device)
        """``req_to_selection``: each live request's selection per layer, kept for its decode steps."""
        self._records: Dict[str, RequestRecord] = {}
        self._dump = SelectionDump()
        self._dump.config(config.to_json())
        self._forward = 0  # forwards planned so far (numbers the dump's records)
        self.decision_log = None
        """``log(fmt, *args)`` with ``log.active()``: records a decision every tensor-parallel rank must take
        identically (index sizes, selections, offloads) while ``active()``; the serving path sets SGLang's
        rank-consensus checker here when it is enabled, which stops every rank on the first divergence.
        None: nothing recorded (no cost)."""

    # -- plan -------------------------------------------------------------------------------------------

    def plan(self, requests: Sequence[RequestLayout], is_decode: bool) -> ForwardPlan:
        self._requests, self._is_decode = requests, is_decode
        self._forward += 1
        self._dump.forward(self._forward, [req.rid for req in requests], is_decode)
        self._anchors = [self.videos.attach(req, is_decode=is_decode) for req in requests]
        if self.host is not None:
            self.host.begin_forward({self.videos[a].uid for a in self._anchors if a is not None})
        always, kept, counts = [], [], []
        self._always_masks = {}
        for i, req in enumerate(requests):
            self._begin_request(req, self._anchors[i], is_decode)
            a, row, f = self._plan_request(i, req)
            always.append(a)
            kept.append(row)
            counts.append(f)
        plan = build_plan(self.num_layers, [(r.prefix_len, r.seq_len) for r in requests], always, counts, kept=kept,
                          slab=self.selections, device=self.device,
                          padded=self.config.fill == "whole" or self.config.budget_mode == "mass", heads=self.heads)
        # host ints of each due request's query rows and selected span (a layer reads no tensor for them)
        q_bounds, kv_bounds, always_len = plan.q_indptr.tolist(), plan.kv_indptr.tolist(), plan.always_len.tolist()
        self._spans = {i: (q_bounds[i], q_bounds[i + 1], kv_bounds[i] + always_len[i], kv_bounds[i + 1])
                       for i in plan.select_due}
        self._always_starts = {i: kv_bounds[i] for i in plan.select_due}
        for i in plan.select_due:
            self._records[requests[i].rid].selections += 1
        due = set(plan.select_due) if plan.padded else set()  # their size is known once they select
        for i, (req, n) in enumerate(zip(requests, (plan.kv_indptr[1:] - plan.kv_indptr[:-1]).tolist())):
            if i not in due:
                self._records[req.rid].attended(n)
        return plan

    def _begin_request(self, req: RequestLayout, anchor: Optional[int], is_decode: bool) -> None:
        if is_decode:
            self._decode_steps[req.rid] = self._decode_steps.get(req.rid, 0) + 1
        else:
            self._decode_steps[req.rid] = 0
            self.selections.release(req.rid)
            self._kept_always.pop(req.rid, None)
        counts = req.row_counts  # kept by the backend's row copies: no rescan of the context per step
        self._records.setdefault(req.rid, RequestRecord(self.name)).begin_forward(
            context_tokens=req.seq_len,
            visual_tokens=counts.visual,
            frames=counts.frames,
            clusters=self.videos[anchor].index.num_clusters if anchor is not None else 0,
            device_tokens=counts.device,
            host_tokens=counts.host,
            host_store_used=self.host.used_tokens if self.host is not None else 0,
        )

    def _plan_request(self, i: int, req: RequestLayout) -> tuple[AlwaysPart, Optional[int], int]:
        """``(always part, slab row of the kept selection or None when due, f)`` of request ``i``.

        Always part: sinks, text and the recent window among the indexed positions (as ranges), plus
        everything the index does not cover. Selected part: ``f = min(budget, eligible)`` indexed visual
        positions (the kept selection's longest layer when it is reused)."""
        if self._dense(i):
            return AlwaysPart.dense(), None, 0
        index = self.videos[self._anchors[i]].index
        covered = min(index.num_tokens, req.seq_len)
        if self._needs_selection(i):
            cfg = self.config
            mask = always_attended_mask(req.frame_ids[:covered], cfg, seq_len=req.seq_len)  # [covered]
            self._always_masks[i] = mask.to(self.device)  # filters the selection where it is made
            self._kept_always[req.rid] = always_ranges(req.frame_ids[:covered], sink_tokens=cfg.sink_tokens,
                                                       recent_window=cfg.recent_window, seq_len=req.seq_len)
            f = min(cfg.budget, int(((req.frame_ids[:covered] >= 0) & ~mask).sum()))
            self.selections.reserve(req.rid, self.heads * f, index.num_tokens)  # per-KV-head parts side by side
            return AlwaysPart(*self._kept_always[req.rid], covered), None, f
        # a kept selection keeps the always part it was chosen against: indexed positions that were in the
        # recent window then stay attended while the window moves on (no token drops out)
        return (AlwaysPart(*self._kept_always[req.rid], covered), self.selections.row(req.rid),
                max(self.selections.counts(req.rid)) // self.heads)

    # -- run --------------------------------------------------------------------------------------------

    def layer_kv(self, plan: ForwardPlan, layer_id: int, queries: torch.Tensor,
                 read_keys: Optional[LayerKeyReader] = None) -> LayerKV:
        """The plan's lists at ``layer_id``; the selections due at this forward are scored in one batched
        call and written into the plan first (the only per-request work inside a layer). With the exact
        fill and token budgets every selected part has its planned length, and it is written on the
        device without a host synchronisation (`select_layer_into`); padded plans size theirs here.
        ``read_keys``: the scoring's always part (`_always_lses`)."""
        due = plan.select_due
        if not due:
            return plan.layer(layer_id)
        indexes = [self.videos[self._anchors[i]].index for i in due]
        qs = [queries[self._spans[i][0] : self._spans[i][1]] for i in due]
        seq_lens = [self._requests[i].seq_len for i in due]  # each request's own recent window
        lses = self._always_lses(plan, qs, read_keys)
        if plan.padded:
            self._select_padded(plan, layer_id, indexes, qs, seq_lens, lses)
            return plan.layer(layer_id)
        heads = plan.heads
        outs = [torch.empty(heads * (self._spans[i][3] - self._spans[i][2]) + 1, dtype=torch.int64,
                            device=index.device) for i, index in zip(due, indexes)]
        select_layer_into(indexes, layer_id, qs, seq_lens, outs, lses)
        for i, index, q, out, lse in zip(due, indexes, qs, outs, lses):
            req, (_, _, start, end) = self._requests[i], self._spans[i]
            selected = out[: heads * (end - start)]  # [H · f]: KV head h's part at [h · f, (h + 1) · f)
            plan.kv_positions[layer_id].view(heads, -1)[:, start:end] = selected.view(heads, end - start)
            self.selections.write(req.rid, layer_id, selected)
            if self._logging_decisions():
                self.decision_log("mosaic select rid=%s layer=%d %s", req.rid, layer_id, tensor_digest(selected))
            if self._dump.enabled:  # the attended positions inside the index, as `select_layer_batch` gives them
                always = self._always_masks[i].nonzero().flatten()
                positions = torch.stack([torch.cat([always, part]).sort().values
                                         for part in selected.view(heads, end - start)])
                self._dump.select(self._forward, req.rid, self._anchors[i], layer_id, q,
                                  positions[0] if heads == 1 else positions, index.num_tokens, req.seq_len,
                                  video=self.videos[self._anchors[i]].uid, always_lse=lse)
        return plan.layer(layer_id)

    def _always_lses(self, plan: ForwardPlan, qs, read_keys: Optional[LayerKeyReader]) -> list:
        """Per due request ``[1, H, Tq · group]`` `always_log_mass` of what its queries attend whatever is
        selected, from this layer's keys (one read for all due requests): exactly over the plan's always
        positions before the forward (sinks, text, recent window, anything not indexed), and over the
        forward's own tokens (the always part's last ``Tq`` entries) each query's last ``recent_window`` of
        them, causal (`banded_log_mass`): exact for a question or a decode step, O(Tq · window) for a long
        prefill chunk instead of the chunk's whole causal attention. None each when the rule reads no always
        part or no reader is given (the index then estimates it from its own keys). No host sync."""
        due = plan.select_due
        if read_keys is None or not self.config.weighs_always_part:
            return [None] * len(due)
        positions = [plan.kv_positions[0, self._always_starts[i] : self._spans[i][2]] for i in due]  # head 0's block
        out = []
        for q, keys in zip(qs, read_keys(due, positions)):
            tq = q.shape[0]
            earlier = always_log_mass(q[None], keys[None, : keys.shape[0] - tq])  # every one precedes the queries
            own = banded_log_mass(q[None], keys[None, keys.shape[0] - tq :], max(1, self.config.recent_window))
            out.append(torch.logaddexp(earlier, own))
        return out

    def _select_padded(self, plan: ForwardPlan, layer_id: int, indexes, qs, seq_lens, lses) -> None:
        """Whole-cluster fill or mass budgets: a layer may select fewer than planned (its size is read
        back: a host sync); what each layer attends is counted here (per KV head: the heads' mean). With
        ``heads > 1`` each head's part goes into its block of the plan and of the slab row (``H · f``
        entries, head ``h``'s at ``h · f``, ``-1`` after its own count)."""
        attended = select_layer_batch(indexes, layer_id, qs, seq_lens, lses)  # [n], or [H, n] rows ending in -1
        heads = plan.heads
        width = plan.kv_positions.shape[1] // heads
        for i, index, q, positions, lse in zip(plan.select_due, indexes, qs, attended, lses):
            req, (_, _, start, end) = self._requests[i], self._spans[i]
            rows = positions[None] if heads == 1 else positions
            parts, lengths = [], []
            for h, row in enumerate(rows):
                row = row if heads == 1 else row[row >= 0]  # per-head rows end in -1 (mass budgets)
                selected = row[~self._always_masks[i][row]]  # the always part is in the plan
                n = selected.numel()
                assert n <= end - start, f"{req.rid} layer {layer_id} head {h}: selected {n} > {end - start}"
                plan.kv_positions[layer_id, h * width + start : h * width + start + n] = selected
                parts.append(selected if heads == 1 else torch.cat([selected, selected.new_full((end - start - n,), -1)]))
                lengths.append(n)
            self._records[req.rid].attended(int(plan.always_len[i]) + round(sum(lengths) / heads))
            selected = torch.cat(parts)
            # per KV head: parts at a stride of the planned f; the layer counts as its longest part, so a
            # kept decode step plans (and copies) no more than the heads used
            self.selections.write(req.rid, layer_id, selected, count=None if heads == 1 else heads * max(lengths))
            if self._logging_decisions():
                self.decision_log("mosaic select rid=%s layer=%d %s", req.rid, layer_id, tensor_digest(selected))
            self._dump.select(self._forward, req.rid, self._anchors[i], layer_id, q, positions,
                              index.num_tokens, req.seq_len, video=self.videos[self._anchors[i]].uid, always_lse=lse)

    def _logging_decisions(self) -> bool:
        return self.decision_log is not None and self.decision_log.active()

    def _needs_selection(self, i: int) -> bool:
        req, anchor = self._requests[i], self._anchors[i]
        chosen_against = self.selections.index_size(req.rid)
        every = self.config.reselect_every
        return (
            not self._is_decode
            or chosen_against is None
            # the index changed since: it grew (the prompt's own video), or another request's divergent
            # prefix cut it, and a kept selection past the cut would list positions of the tail twice
            or chosen_against != self.videos[anchor].index.num_tokens
            or (every > 0 and self._decode_steps.get(req.rid, 0) % every == 0)
        )

    def _dense(self, i: int) -> bool:
        req = self._requests[i]
        prefill = not self._is_decode and req.extend_len > 1
        return self._anchors[i] is None or (prefill and not self.config.select_in_prefill)

    def read_host(self, request_index: int, layer: int, host_rows: torch.Tensor, device):
        """``(k [n, H, D], v [n, H, Dv])`` of a request's host-resident rows at ``layer``, through its
        video's device cluster cache; the read's cost goes to the request's and the process's stats.

        Cache bound per layer: ``ceil((budget · heads + sink_tokens + recent_window) × (1 + residency_slack))``
        tokens (``heads``: the KV heads with ``selection_heads='per_kv_head'``, whose lists together select
        up to that many distinct positions, else 1). The selected members are at most that, but the cache
        holds whole clusters (one extent each, all KV heads): the exact fill's boundary cluster and the
        members that are always attended (an offloaded window) come along, so the bound leaves room for
        sinks + window beyond the budget.
        """
        anchor = self._anchors[request_index]
        record = self._records[self._requests[request_index].rid]
        if anchor is None:
            read, cache_tokens = self.host.read(layer, host_rows, device), 0
        else:
            cfg = self.config
            capacity = ClusterResidency.capacity_for(cfg.budget * self.heads + cfg.always_attended, cfg.residency_slack)
            uid = self.videos[anchor].uid
            read = self.host.read_cached(uid, min(self.host.store.capacity, capacity), layer, host_rows, device,
                                         prefetch_next=cfg.prefetch)
            cache_tokens = self.host.resident_tokens(uid)
        record.add_read(read.counts, cache_tokens)
        self.counters.add_read(read.counts)
        return read.k, read.v

    def end_forward(self) -> None:
        """Index the forward's new video-span tokens; run deferred splits (extend forwards only); with
        ``regroup_tail``, regroup the tails of the videos whose requests' prompts ended here."""
        if self._is_decode:
            return
        ended = []
        for req, anchor in zip(self._requests, self._anchors):
            if anchor is None:
                continue
            appended = self.videos.index_new_tokens(anchor, req)
            if appended is not None:
                self._dump.append(anchor, *appended, video=self.videos[anchor].uid)
            index = self.videos[anchor].index
            if self.config.regroups_tail and req.prompt_done and req.rid not in self._prompt_ended:
                ended.append((req.rid, anchor))
            self._records[req.rid].clusters = index.num_clusters
            if self._logging_decisions():
                self.decision_log("mosaic index video=%s tokens=%d clusters=%d", self.videos[anchor].uid,
                                  index.num_tokens, index.num_clusters)
        if ended:
            self._regroup_tails(ended)

    def _regroup_tails(self, ended: list) -> None:
        """``ended``: ``(rid, anchor)`` of the requests whose prompt ended in this forward (each once: a decode
        row of a mixed forward also reaches its unchunked length). Each video's index regroups what it left
        online (`ClusterIndex.regroup_tail`); the selections those prompts made before are dropped when
        their video changed, so each first decode step selects against the coarse clusters (a selection,
        not maintenance, in that step)."""
        changed = set()
        for anchor in dict.fromkeys(anchor for _, anchor in ended):
            video = self.videos[anchor]
            replaced = video.index.regroup_tail()
            if replaced:
                changed.add(anchor)
                self._dump.regroup_tail(self._forward, anchor, replaced, video=video.uid)
        for rid, anchor in ended:
            self._prompt_ended.add(rid)
            if anchor in changed:
                self.selections.release(rid)
                self._kept_always.pop(rid, None)

    # -- offload ----------------------------------------------------------------------------------------

    def offload_prefix(self, path: torch.Tensor, node_id, offloader, read_kv, *, sealed_only: bool = False) -> int:
        """Move the clustered tokens of the video whose index matches ``path`` to the host tier.

        Called by the radix cache when a request ends (everything clustered moves) and after each extend
        chunk is checkpointed into the tree (``sealed_only``, see `clusters_to_offload`). Sinks stay on
        the device; one extent per cluster. A full host store leaves the remaining clusters on the device
        (counted as a full event).

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
        for anchor, video in self.videos.matching(path):
            if self.host.orders is None:
                groups = clusters_to_offload(video.index, path, sink_tokens=self.config.sink_tokens,
                                             sealed_only=sealed_only)
                moved += self._write_groups(video, path, node_id, offloader, read_kv, groups, None)[0]
            elif not self.config.regroup_tokens:
                groups, clusters = closed_groups(video.index, path, sink_tokens=self.config.sink_tokens,
                                                 sealed_only=sealed_only)
                moved += self._write_groups(video, path, node_id, offloader, read_kv, groups, clusters)[0]
            else:  # regrouped per-layer memberships: sealed frames move before their span is regrouped
                moved += self._offload_stream(video, path, node_id, offloader, read_kv, sealed_only)
            self.videos.rekey(anchor)  # its first visual token may have moved: filed under its new value
        self.counters.offloaded_tokens += moved
        return moved

    def _offload_stream(self, video, path: torch.Tensor, node_id, offloader, read_kv, sealed_only: bool) -> int:
        """`stream_groups`: the sealed frames' positions move at a chunk checkpoint even while their clusters
        wait for their span's regroup (provisional extents, online layout), so a streamed prefill holds only
        the tokens of clusters still open on the device; movable positions (at the request's end: settled
        ones), on the device or in a provisional extent, are written in the regrouped layout (the old rows
        released). A relayout cut short by a full host store moves nothing early: the room goes to the
        relayout at the next checkpoint. Returns the tokens that left the device."""
        n = video.index.num_tokens
        provisional = torch.zeros(n, dtype=torch.bool)
        on_host = path[:n] < 0
        if bool(on_host.any()):
            provisional[on_host] = self.host.provisional_rows(decode_host(path[:n][on_host]))
        final, early = stream_groups(video.index, path, provisional, sink_tokens=self.config.sink_tokens,
                                     sealed_only=sealed_only)
        moved, complete = self._write_groups(video, path, node_id, offloader, self._device_or_host(read_kv), *final)
        if not complete:
            return moved
        return moved + self._write_groups(video, path, node_id, offloader, read_kv, *early, provisional=True)[0]

    def _device_or_host(self, read_kv):
        """A `KVReader` over tree values: device slots (``> 0``) from the pool via ``read_kv``, host encodings
        from the host tier; ``(k [L, M, H, D], v [L, M, H, Dv])`` on the host when any value is a host row."""
        def read(values: torch.Tensor):
            on_device = values > 0
            if bool(on_device.all()):
                return read_kv(values)
            k_host, v_host = self.host.read_rows(decode_host(values[~on_device]))
            if not bool(on_device.any()):
                return k_host, v_host
            k_dev, v_dev = read_kv(values[on_device])
            k = k_host.new_empty((k_host.shape[0], values.numel()) + tuple(k_host.shape[2:]))
            v = v_host.new_empty((v_host.shape[0], values.numel()) + tuple(v_host.shape[2:]))
            k[:, on_device], v[:, on_device] = k_dev.to(k.device, k.dtype), v_dev.to(v.device, v.dtype)
            k[:, ~on_device], v[:, ~on_device] = k_host, v_host
            return k, v
        return read

    def _write_groups(self, video, path: torch.Tensor, node_id, offloader, read_kv, groups, clusters,
                      *, provisional: bool = False) -> tuple[int, bool]:
        """Write ``groups`` (``[M] int64`` path positions each; ``clusters``: their ``[L, M]`` cluster ids with
        per-layer orders, else None) to the host tier, one extent each, then point the tree at them: device
        positions give their slots back (`PrefixOffloader.offload`), host ones leave their old rows
        (`PrefixOffloader.rehost`, released here). A full host store keeps the rest where it is (a full
        event: on the device, or in its provisional extent). Returns the tokens that left the device and
        whether every group was written."""
        if not groups:
            return 0, True
        values = [path[g] for g in groups]
        sources = torch.cat(values)
        sources = decode_host(sources[sources < 0])  # a relayout's old rows: spilled for room only as a last resort
        host_rows = self.host.put_clusters(read_kv, values, clusters, provisional=provisional, sources=sources)
        if len(host_rows) < len(groups):
            self.counters.host_store_full_events += 1
            groups = groups[: len(host_rows)]
            if not groups:
                return 0, False
        positions, rows = torch.cat(groups), torch.cat(host_rows)
        order = torch.argsort(positions)
        positions, rows = positions[order], rows[order]
        if self._logging_decisions():
            self.decision_log("mosaic offload video=%s positions=%s rows=%s provisional=%s", video.uid,
                              tensor_digest(positions), tensor_digest(rows), provisional)
        on_device = path[positions] > 0
        if bool(on_device.any()):
            offloader.offload(node_id, positions[on_device], rows[on_device])
            self._dump.offload(self._forward, video.uid, positions[on_device])
        if not bool(on_device.all()):
            self.host.release(offloader.rehost(node_id, positions[~on_device], rows[~on_device]))
            self.counters.rehosted_tokens += int((~on_device).sum())
        video.slots[positions] = encode_host(rows)
        return int(on_device.sum()), len(host_rows) == len(values)

    # -- lifetime ---------------------------------------------------------------------------------------

    def release(self, rid: str) -> None:
        self.selections.release(rid)
        self.videos.forget(rid)
        self._kept_always.pop(rid, None)
        self._decode_steps.pop(rid, None)
        self._prompt_ended.discard(rid)
        self._records.pop(rid, None)

    def on_slots_freed(self, slots: torch.Tensor) -> None:
        for uid in self.videos.on_slots_freed(slots):
            if self.host is not None:
                self.host.drop_cache(uid)

    def on_slots_remapped(self, old: torch.Tensor, new: torch.Tensor) -> None:
        for uid in self.videos.remap(old, new):
            if self.host is not None:
                self.host.drop_cache(uid)

    def reset(self) -> None:
        self.videos.clear()

    def request_stats(self, rid: str) -> Optional[RequestStats]:
        record = self._records.get(rid)
        return None if record is None else record.snapshot()
