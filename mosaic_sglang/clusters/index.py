"""`ClusterIndex`: Mosaic's cluster-driven KV index over one sequence (pure torch, CPU or GPU).

Visual-token keys are grouped into clusters as they arrive (cohesion-aware assignment against the
clusters active in the last few frames); over-spread clusters are only *marked* during `append` and
split later by `maintain` (bounded work, off the decode path); `select` scores cluster summaries
against the query and fills the token budget with whole clusters (the read side is in ``select.py``,
over the `IndexView` this index hands out). The maths is in ``README.md``.

Example:
    >>> import torch
    >>> from mosaic_sglang import MosaicConfig, ClusterIndex
    >>> index = ClusterIndex(MosaicConfig(budget=8, sink_tokens=0, recent_window=0),
    ...                      num_layers=2, num_kv_heads=1, head_dim=4)
    >>> index.append(torch.randn(2, 16, 1, 4), torch.arange(16) // 8)
    >>> sel = index.select(torch.randn(2, 1, 2, 4))
    >>> bool((sel.sizes() <= 8).all())
    True
"""

from __future__ import annotations

from typing import Callable

import torch

from mosaic_sglang.kernels.assign_tokens import admit_by_capacity, assign_tokens

from ..config import MosaicConfig
from ..csr import indptr_from_ids
from ..retrieval.base import Retriever, Selection
from . import select as selection
from .inputs import check_append, check_queries, describe
from .integrity import check_integrity, recompute_summaries
from .layer_batch import select_layer_batch
from .members import MemberLists, build_member_lists
from .scoring import LayerSummaries
from .select import ClusterChoice
from .regroup import RegroupSealed
from .split import two_means
from .table import ClusterTable, add_rows, grow
from .view import IndexView

__all__ = ["ClusterIndex", "ClusterChoice"]

ASSIGN_ROUNDS = 4
"""Rounds of join-then-seed per frame beyond ``ceil(n / max_cluster_size)`` (the rounds the size cap
alone may need: a new cluster takes at most that many joiners per round); tokens still unplaced after
the last round open singleton clusters. Each round places at least the first pending token of every
group; see README.md for the measured share of singleton fallbacks."""

ASSIGN_IMPL: str | None = None
"""How `_join` runs K6 (`mosaic_sglang.kernels.assign_tokens`): None = by device (Triton for CUDA tensors,
the torch reference elsewhere); the interpreter tests set ``'triton'``."""

_VAR_FLOOR = 1e-6
"""Relative floor on the running key variance (share of E|k|^2), so a constant stream cannot divide by 0."""

KeyReader = Callable[[torch.Tensor], torch.Tensor]
"""``positions [M] int64 -> keys [L, M, H, D]``: where the index reads keys it did not keep."""


class ClusterIndex(RegroupSealed, Retriever):
    """Cluster index of one sequence's visual-token keys; implements `Retriever`.

    Keys for splitting and integrity checks: by default the index keeps a copy of every appended key
    (``[L, N, H, D]``, the dtype given to the first `append`), which is what offline use and the
    benchmarks need. A server that already holds the keys (SGLang's KV pool) passes ``key_reader``
    instead and the index stores no keys. Summaries are float32.

    Args:
        config: the knobs (`MosaicConfig`).
        num_layers, num_kv_heads, head_dim: the key shape ``[L, ., H, D]``.
        device: where all state lives (default CPU).
        key_reader: optional `KeyReader`; if given, no key copy is kept.
    """

    def __init__(
        self,
        config: MosaicConfig,
        *,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        device: torch.device | str | None = None,
        key_reader: KeyReader | None = None,
    ) -> None:
        if not isinstance(config, MosaicConfig):
            raise ValueError(f"ClusterIndex: config: expected a MosaicConfig, got {type(config).__name__}")
        for name, value in (("num_layers", num_layers), ("num_kv_heads", num_kv_heads), ("head_dim", head_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ClusterIndex: {name}: expected an integer >= 1, got {value!r}")
        self.config = config
        self.num_layers, self.num_kv_heads, self.head_dim = num_layers, num_kv_heads, head_dim
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._key_reader = key_reader
        layers = torch.arange(num_layers, device=self.device)
        per_layer = config.membership == "per_layer"
        self._layers_of_group = layers[:, None] if per_layer else layers[None, :]  # [G, Lg]
        self._group_of_layer = layers if per_layer else torch.zeros_like(layers)  # [L]
        self.num_splits = 0
        """Clusters split so far (by `maintain`)."""
        self.num_regroups = 0
        """Spans of sealed frames regrouped so far (by `maintain`, with ``config.regroup_tokens``)."""
        self._split_rounds = 0  # maintenance calls that split: seeds each call's 2-means draw
        self._reset()

    # -- state ---------------------------------------------------------------------------------

    def _reset(self) -> None:
        groups, lg = self._layers_of_group.shape
        dev = self.device
        self._n = 0
        self._frame_ids = torch.empty(0, dtype=torch.int64, device=dev)  # [cap] -1 = text
        self._frame_ord = torch.empty(0, dtype=torch.int64, device=dev)  # [cap] frame ordinal, -1 text
        self._assign = torch.empty(groups, 0, dtype=torch.int64, device=dev)  # [G, cap] cluster, -1 none
        self._keys: torch.Tensor | None = None  # [L, cap, H, D] when no key_reader
        self._table = ClusterTable(self._layers_of_group, self.num_kv_heads, self.head_dim)
        self._marked = torch.zeros(groups, 0, dtype=torch.bool, device=dev)
        self._num_clusters = [0] * groups  # host copy: ids are allocated on the host side
        self._num_marked = 0  # host copy: lets `maintain` return without a device sync
        self._active = torch.empty(groups, 0, dtype=torch.int64, device=dev)  # [G, A] ids, -1 padding
        self._active_ord = -1
        self._key_sum = torch.zeros(self.num_layers, self.num_kv_heads, self.head_dim, dtype=torch.float64, device=dev)
        self._key_sq = torch.zeros(self.num_layers, self.num_kv_heads, dtype=torch.float64, device=dev)
        self._num_visual = 0
        self._last_frame_id = -1
        self._num_frames = 0
        self._regrouped_ord = 0  # frames below this ordinal were regrouped (clusters there are final)
        self._regrouped = torch.zeros(groups, 0, dtype=torch.bool, device=dev)  # [G, cap] a k-means cluster
        self._members: MemberLists | None = None  # built on demand, dropped when membership changes

    @property
    def num_tokens(self) -> int:
        """Positions appended so far (visual and text)."""
        return self._n

    @property
    def num_visual_tokens(self) -> int:
        return self._num_visual

    @property
    def num_clusters(self) -> int:
        """Clusters over all membership groups (shared membership: the cluster count)."""
        return sum(self._num_clusters)

    @property
    def cluster_counts(self) -> list[int]:
        """Clusters per membership group (one group when shared, one per layer otherwise)."""
        return list(self._num_clusters)

    @property
    def num_marked(self) -> int:
        """Clusters waiting for `maintain` to split them."""
        return self._num_marked

    def cluster_sizes(self, group: int = 0) -> torch.Tensor:
        """``[C_g] int64`` member count of every cluster of membership group ``group``."""
        return self._table.size[group, : self._num_clusters[group]].clone()

    # -- ingest ----------------------------------------------------------------------------------

    def append(self, keys: torch.Tensor, frame_ids: torch.Tensor) -> None:
        """Observe new tokens; assign their visual tokens to clusters. Never splits (only marks).

        Args:
            keys: ``[L, T, H, D]`` float keys (as cached, post-RoPE).
            frame_ids: ``[T]`` int64 (int32 accepted) frame per token, non-decreasing over visual
                tokens across calls; ``-1`` marks text. A frame may continue in the next call.

        Raises:
            ValueError: wrong shape, dtype or decreasing frame ids.
        """
        keys, frame_ids = check_append(keys, frame_ids, self.num_layers, self.num_kv_heads, self.head_dim, self.device)
        t = keys.shape[1]
        if t == 0:
            return
        start = self._n
        visual = frame_ids >= 0
        local = visual.nonzero().flatten()  # [V]
        frames, counts = torch.unique_consecutive(frame_ids[local], return_counts=True)
        frames, counts = frames.tolist(), counts.tolist()  # one host sync per call: frames drive a loop
        if frames and frames[0] < self._last_frame_id:
            raise ValueError(
                f"ClusterIndex.append: frame_ids: expected visual frame ids >= the last one seen "
                f"({self._last_frame_id}), got {frames[0]}"
            )
        ords, ordinal, last = [], self._num_frames - 1, self._last_frame_id
        for f in frames:
            ordinal += f != last
            last = f
            ords.append(ordinal)
        self._reserve_tokens(start + t)
        self._frame_ids[start : start + t] = frame_ids
        frame_ord = torch.full((t,), -1, dtype=torch.int64, device=self.device)
        frame_ord[local] = torch.repeat_interleave(
            torch.tensor(ords, dtype=torch.int64, device=self.device), torch.tensor(counts, dtype=torch.int64, device=self.device)
        )
        self._frame_ord[start : start + t] = frame_ord
        if self._key_reader is None:
            if self._keys is None:
                self._keys = torch.zeros(self.num_layers, 0, self.num_kv_heads, self.head_dim, dtype=keys.dtype, device=self.device)
                self._reserve_tokens(start + t)
            self._keys[:, start : start + t] = keys
        self._n = start + t
        for rows, ordinal in zip(torch.split(local, counts), ords):
            self._ingest_frame(start + rows, keys[:, rows].float(), ordinal)
        if frames:
            self._last_frame_id, self._num_frames = frames[-1], ords[-1] + 1

    def _ingest_frame(self, positions: torch.Tensor, keys: torch.Tensor, ordinal: int) -> None:
        """Assign one frame's tokens (``positions [n]``, ``keys [L, n, H, D]`` float32)."""
        n = positions.numel()
        self._key_sum += keys.double().sum(1)
        self._key_sq += keys.double().square().sum((1, 3))
        self._num_visual += n
        if ordinal != self._active_ord:
            self._refresh_active(ordinal)
        mean, inv_std = self._key_scale()
        x = self._features(keys - mean[:, None], inv_std)  # [G, n, F]
        frame_ord = torch.full((n,), ordinal, dtype=torch.int64, device=self.device)
        pending = torch.ones(x.shape[0], n, dtype=torch.bool, device=self.device)
        rounds = ASSIGN_ROUNDS + -(-n // self.config.max_cluster_size)
        close = None  # [G, n, n] pairs within the join radius, computed once per frame if needed
        for r in range(rounds):
            if self._active.shape[1] > 0:
                pending = self._join(x, pending, positions, keys, frame_ord, mean, inv_std)
            if not bool(pending.any()):
                break
            if close is None:
                close = self._close_pairs(x)
            seeds = pending if r == rounds - 1 else pending & ~(close & pending[:, None, :]).any(-1)
            self._open(seeds, positions, keys, frame_ord)
            pending = pending & ~seeds
        self._mark(self._active, mean, inv_std)

    def _join(self, x, pending, positions, keys, frame_ord, mean, inv_std) -> torch.Tensor:
        """One join round: each pending token joins the nearest active cluster that stays cohesive
        (relative spread after the join <= join_threshold) and under the size cap.

        Returns the still-pending mask ``[G, n] bool``.
        """
        cfg = self.config
        ids = self._active
        centre, spread, size = self._cluster_stats(ids.clamp(min=0), mean, inv_std)  # [G,A,F], [G,A], [G,A]
        size = torch.where(ids >= 0, size.long(), cfg.max_cluster_size)  # padding never admits
        # K6: the nearest candidate that admits each token (relative spread after the join <= threshold,
        # size < cap); Triton for CUDA tensors, the torch reference elsewhere
        best, best_d2 = assign_tokens(x, centre, spread, size, num_pairs=self._lh, join_threshold=cfg.join_threshold,
                                      max_cluster_size=cfg.max_cluster_size, impl=ASSIGN_IMPL)
        # size cap holds exactly: per cluster, only the `cap - size` nearest joiners of this round get in
        ok = admit_by_capacity(best, best_d2, size, cfg.max_cluster_size, pending=pending)
        g, tok = ok.nonzero(as_tuple=True)
        self._add(g, ids[g, best[g, tok]], positions[tok], frame_ord[tok], keys, tok)
        return pending & ~ok

    def _close_pairs(self, x: torch.Tensor) -> torch.Tensor:
        """``[G, n, n] bool``: ``[g, i, j]`` iff token ``j < i`` lies within the join radius of ``i``.

        Seeds of a round are the pending tokens with no earlier pending token within the radius, so
        seeds are pairwise farther apart than it; the others retry against them next round. Radius: a
        2-token cluster has spread d²/4, so joining a seed passes iff d² <= 4·Lg·H·join_threshold.
        """
        n = x.shape[1]
        d2 = torch.cdist(x, x).square()  # [G, n, n]
        earlier = torch.ones(n, n, dtype=torch.bool, device=self.device).tril(-1)  # [i, j]: j < i
        return (d2 <= 4 * self._lh * self.config.join_threshold) & earlier

    def _open(self, seeds: torch.Tensor, positions, keys, frame_ord) -> None:
        """Open one new cluster per seed token ``seeds [G, n] bool``; they become active."""
        g, tok = seeds.nonzero(as_tuple=True)  # sorted by group
        new_ids = self._allocate(g)
        self._add(g, new_ids, positions[tok], frame_ord[tok], keys, tok)
        self._append_active(g, new_ids)

    def _allocate(self, g: torch.Tensor) -> torch.Tensor:
        """Fresh cluster ids for ``g [P] int64`` (ascending group order); grows capacity."""
        per_group = torch.bincount(g, minlength=len(self._num_clusters)).tolist()
        base = torch.tensor(self._num_clusters, device=self.device)
        counts = torch.tensor(per_group, device=self.device)
        rank = torch.arange(g.numel(), device=self.device) - (torch.cumsum(counts, 0) - counts)[g]
        self._num_clusters = [c + p for c, p in zip(self._num_clusters, per_group)]
        self._reserve_clusters(max(self._num_clusters))
        return base[g] + rank

    def _add(self, g, cluster, positions, frame_ord, keys, key_row) -> None:
        self._table.add(g, cluster, positions, frame_ord, keys, key_row)
        self._assign[g, positions] = cluster
        self._members = None

    def _append_active(self, g: torch.Tensor, ids: torch.Tensor) -> None:
        """Add clusters ``ids [P]`` of groups ``g [P]`` (ascending) to the active set."""
        if g.numel():
            self._active = torch.cat([self._active, self._pad_by_group(g, ids)], 1)

    def _pad_by_group(self, g: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``[G, A] int64`` ids laid out per group (``g [P]`` ascending), ``-1`` padding."""
        groups = self._layers_of_group.shape[0]
        counts = torch.bincount(g, minlength=groups)
        col = torch.arange(g.numel(), device=self.device) - (torch.cumsum(counts, 0) - counts)[g]
        width = int(counts.max()) if g.numel() else 0
        out = torch.full((groups, width), -1, dtype=torch.int64, device=self.device)
        out[g, col] = ids
        return out

    def _refresh_active(self, ordinal: int) -> None:
        """Keep the active clusters that received a token in the last ``active_frames`` frames."""
        ids = self._active
        keep = (ids >= 0) & (self._table.last_ord.gather(1, ids.clamp(min=0)) > ordinal - self.config.active_frames)
        width = int(keep.sum(1).max()) if ids.numel() else 0
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
        self._active = torch.where(keep.gather(1, order), ids.gather(1, order), -1)[:, :width]
        self._active_ord = ordinal

    def _mark(self, ids: torch.Tensor, mean, inv_std) -> None:
        """Mark clusters among ``ids [G, A]`` whose relative spread or size is past the limits."""
        if ids.numel() == 0:
            return
        valid = ids >= 0
        ids = ids.clamp(min=0)
        _, spread, size = self._cluster_stats(ids, mean, inv_std, with_centres=False)
        over = valid & ((spread / self._lh > self.config.split_threshold) | (size > self.config.max_cluster_size))
        newly = over & ~self._marked.gather(1, ids)
        g, a = newly.nonzero(as_tuple=True)
        self._marked[g, ids[g, a]] = True
        self._num_marked += g.numel()

    # -- read side (select.py over `view`) ---------------------------------------------------------

    def view(self) -> IndexView:
        """The live state as an `IndexView` (references, no copies; valid until the next write)."""
        n = self._n
        return IndexView(
            self.config, n, self._num_visual, self._frame_ids[:n], self._frame_ord[:n], self._assign[:, :n],
            self._num_clusters, self._layers_of_group, self._group_of_layer, self._table, self._marked,
            self._num_marked, self._active, self._key_sum, self._key_sq, self._read_keys, self.member_lists,
            self.num_kv_heads, self.head_dim,
        )

    @property
    def frame_ids(self) -> torch.Tensor:
        """``[num_tokens] int64`` frame id of every appended position (``-1`` for text); a view."""
        return self._frame_ids[: self._n]

    def select(self, queries: torch.Tensor, *, seq_len: int | None = None,
               always_lse: torch.Tensor | None = None) -> Selection:
        """The attended set: always-attended positions ∪ the taken members of the chosen clusters.

        Args:
            queries: ``[L, Tq, Hq, D]`` float, ``Hq`` a multiple of ``num_kv_heads``.
            seq_len: end of the sequence the selection serves (where its recent window ends); default
                the index's own end. Costs and members count only positions not always attended.
            always_lse: optional ``[L, H, Tq · group]`` float32 `mass.always_log_mass` of what the queries
                attend anyway (``share_of_total`` and mass budgets); default: from the index's own
                always-attended keys (`select.index_always_lse`).

        Returns:
            `Selection` (CSR over layers, sorted unique positions); ``num_units`` = clusters used per
            layer. Per layer: exactly ``min(budget, eligible)`` selected tokens beyond the always-attended
            ones with ``fill='exact'`` (at most ``budget`` with ``'whole'``); everything when ``budget >=
            num_visual_tokens``. Never splits or re-assigns (pure read of the index). Per KV head
            (``selection_heads='per_kv_head'``) the rows are ``L · H``, row ``l · H + h``.
        """
        layers = torch.arange(self.num_layers, device=self.device)
        view = self.view()
        queries = check_queries(queries, self.num_layers, self.num_kv_heads, self.head_dim, self.device)
        (take,) = selection.choose_clusters([view], [layers], [queries], [seq_len], [always_lse])  # [L, C] (or [L·H, C])
        rows = selection.row_layers(view, layers)
        return Selection.from_mask(selection.attended_mask(view, rows, take, seq_len), (take > 0).sum(1))

    def select_layer(self, layer_id: int, queries: torch.Tensor, *, seq_len: int | None = None,
                     always_lse: torch.Tensor | None = None) -> torch.Tensor:
        """One layer of `select`: ``queries [Tq, Hq, D]`` (``always_lse [1, H, Tq · group]`` or None) → ``[n]
        int64`` sorted attended positions (``[H, n]`` with ``selection_heads='per_kv_head'``)."""
        if not isinstance(layer_id, int) or not 0 <= layer_id < self.num_layers:
            raise ValueError(f"ClusterIndex.select_layer: layer_id: expected 0 <= id < {self.num_layers}, got {layer_id!r}")
        if not isinstance(queries, torch.Tensor) or queries.dim() != 3:
            raise ValueError(f"ClusterIndex.select_layer: queries: expected [Tq, Hq, D], got {describe(queries)}")
        return select_layer_batch([self], layer_id, [queries], [seq_len], [always_lse])[0]

    def select_clusters(self, queries: torch.Tensor, *, seq_len: int | None = None,
                        always_lse: torch.Tensor | None = None) -> ClusterChoice:
        """The clusters used per layer (per (layer, KV head), rows ``l · H + h``, with
        ``selection_heads='per_kv_head'``; what a transfer engine moves; the exact fill's boundary cluster
        included), as `ClusterChoice`."""
        layers = torch.arange(self.num_layers, device=self.device)
        queries = check_queries(queries, self.num_layers, self.num_kv_heads, self.head_dim, self.device)
        (take,) = selection.choose_clusters([self.view()], [layers], [queries], [seq_len], [always_lse])
        layer_ids, cluster_ids = (take > 0).nonzero(as_tuple=True)  # rows: layers (or layer · H + head)
        return ClusterChoice(indptr_from_ids(layer_ids, take.shape[0]), cluster_ids)

    def layer_summaries(self, layers: torch.Tensor) -> LayerSummaries:
        """What scoring needs for ``layers [R] int64`` (see `select.layer_summaries`)."""
        return selection.layer_summaries(self.view(), layers)

    def cluster_members(self, group: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """``(indptr [C + 1], positions [V])``: members of every cluster of ``group``, CSR by cluster id."""
        return self.member_lists().group(group)

    def member_lists(self) -> MemberLists:
        """Members of every cluster of every group as CSR (`members.MemberLists`): built on the first call
        after membership changed (one sort of G·N keys), then reused (text appends keep it)."""
        if self._members is None:
            self._members = build_member_lists(self._assign[:, : self._n], self._num_clusters, self._num_visual)
        return self._members

    # -- deferred splitting ----------------------------------------------------------------------

    def maintain(self, max_splits: int | None = None) -> int:
        """With ``config.regroup_tokens``, regroup the sealed frames (``config.regroup_frames`` at a time)
        first; then split up to ``max_splits`` (default ``config.split_work_per_step``) marked clusters.

        Run at frame boundaries or idle time, never in a decode step. Each split is 2-means on the
        cluster's members (membership features, deterministic given ``config.seed``); the new child
        gets a fresh id and both children's summaries are recomputed exactly from their keys.
        O(1) when nothing is marked and no span is due; otherwise reads the members' keys.

        Returns:
            Clusters split (a marked cluster whose members coincide is unmarked without a split).
        """
        limit = self.config.split_work_per_step if max_splits is None else max_splits
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise ValueError(f"ClusterIndex.maintain: max_splits: expected an integer >= 0, got {limit!r}")
        if self.config.regroup_tokens:  # first: marked clusters it replaces need no split
            self._regroup_due()
        return self._split_marked(limit) if self._num_marked and limit else 0

    def _split_marked(self, limit: int) -> int:
        """Split up to ``limit`` marked clusters (oldest ids first); returns the clusters split."""
        g_sel, c_sel = self._marked.nonzero(as_tuple=True)
        g_sel, c_sel = g_sel[:limit], c_sel[:limit]  # oldest ids first, group by group
        num_seg = g_sel.numel()
        self._marked[g_sel, c_sel] = False
        self._num_marked -= num_seg
        # Members of the chosen clusters: scan only from the earliest first member on.
        lo = int(self._table.first_pos[g_sel, c_sel].min())
        seg_of = torch.full_like(self._marked, -1, dtype=torch.int64)
        seg_of[g_sel, c_sel] = torch.arange(num_seg, device=self.device)
        assign = self._assign[:, lo : self._n]
        seg = torch.where(assign >= 0, seg_of.gather(1, assign.clamp(min=0)), -1)
        mg, mp = (seg >= 0).nonzero(as_tuple=True)
        mseg, mpos = seg[mg, mp], mp + lo
        keys = self._read_keys(mpos)  # [L, M, H, D]
        mean, inv_std = self._key_scale()
        feats = self._features(keys - mean[:, None], inv_std)[mg, torch.arange(mg.numel(), device=self.device)]
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self._split_rounds)
        self._split_rounds += 1  # a fresh, reproducible draw per maintenance call
        right, ok = two_means(feats, mseg, num_seg, generator)
        g_ok, c_ok = g_sel[ok], c_sel[ok]
        if g_ok.numel() == 0:
            return 0
        child = torch.full((num_seg,), -1, dtype=torch.int64, device=self.device)
        child[ok] = self._allocate(g_ok)
        moved = ok[mseg]
        new_cluster = torch.where(right & moved, child[mseg], c_sel[mseg])
        self._table.clear(g_ok, c_ok)
        self._add(mg[moved], new_cluster[moved], mpos[moved], self._frame_ord[mpos[moved]], keys, moved.nonzero().flatten())
        both_g = torch.cat([g_ok, g_ok])
        order = torch.argsort(both_g, stable=True)
        both_g, both_c = both_g[order], torch.cat([c_ok, child[ok]])[order]
        # Children join the active set if recent; a parent left with no recent member leaves it (it could
        # otherwise take tokens of a frame continued in the next append after being sealed, even offloaded).
        g_new, c_new = g_ok, child[ok]
        oldest_active = self._num_frames - self.config.active_frames
        recent = self._table.last_ord[g_new, c_new] >= oldest_active
        self._append_active(g_new[recent], c_new[recent])
        active = self._active
        stale = (active >= 0) & (self._table.last_ord.gather(1, active.clamp(min=0)) < oldest_active)
        self._active = torch.where(stale, -1, active)
        self._mark(self._pad_by_group(both_g, both_c), mean, inv_std)
        self.num_splits += g_ok.numel()
        return g_ok.numel()

    # -- integrity and truncation ----------------------------------------------------------------

    def check_integrity(self) -> None:
        """Verify the invariants (see `integrity.check_integrity`); raise ``AssertionError``
        naming the first broken one. O(N): reads every key."""
        if not bool((self._assign[:, self._n :] == -1).all()):
            raise AssertionError("ClusterIndex integrity: positions beyond num_tokens must be unassigned")
        check_integrity(self.view())
        if self._members is not None:  # the kept member lists must still describe the assignment
            fresh = build_member_lists(self._assign[:, : self._n], self._num_clusters, self._num_visual)
            if not all(torch.equal(a, b) for a, b in zip(self._members, fresh)):
                raise AssertionError("ClusterIndex integrity: the kept member lists must equal the assignment's")

    def truncate(self, num_tokens: int) -> None:
        """Drop positions ``>= num_tokens``; the survivors keep their clusters (ids compacted,
        summaries, statistics, marks and active set rebuilt from the keys: O(N), meant to be rare)."""
        if not isinstance(num_tokens, int) or isinstance(num_tokens, bool) or not 0 <= num_tokens <= self._n:
            raise ValueError(f"ClusterIndex.truncate: num_tokens: expected an integer in [0, {self._n}], got {num_tokens!r}")
        if num_tokens == self._n:
            return
        groups = self._layers_of_group.shape[0]
        self._assign[:, num_tokens : self._n] = -1
        self._members = None
        self._frame_ids[num_tokens : self._n] = -1
        self._frame_ord[num_tokens : self._n] = -1
        self._n = num_tokens
        assign = self._assign[:, :num_tokens]
        cap = self._table.capacity
        present = torch.zeros(groups, cap + 1, dtype=torch.int64, device=self.device)
        present = present.scatter_add_(1, torch.where(assign >= 0, assign, cap), torch.ones_like(assign))[:, :cap] > 0
        new_id = torch.cumsum(present, 1) - 1
        assign.copy_(torch.where(assign >= 0, new_id.gather(1, assign.clamp(min=0)), -1))
        self._num_clusters = present.sum(1).tolist()
        self._table, _, self._key_sum, self._key_sq = recompute_summaries(self.view(), cap, torch.float32)
        self._key_sum, self._key_sq = self._key_sum.double(), self._key_sq.double()
        visual = (self._frame_ids[:num_tokens] >= 0).nonzero().flatten()
        self._num_visual = visual.numel()
        last = int(visual[-1]) if visual.numel() else -1
        self._last_frame_id = int(self._frame_ids[last]) if last >= 0 else -1
        self._num_frames = int(self._frame_ord[last]) + 1 if last >= 0 else 0
        self._marked = torch.zeros(groups, cap, dtype=torch.bool, device=self.device)
        self._num_marked = 0
        live = torch.arange(cap, device=self.device)[None, :] < torch.tensor(self._num_clusters, device=self.device)[:, None]
        # frames regrouped before stay regrouped (`regroup_tail` may have settled the active ones): ids were
        # compacted, so flags are rebuilt from the frames (every cluster ending before the regrouped ones'
        # end counts as regrouped; an online piece there stays online, a quality loss only)
        self._regrouped_ord = min(self._regrouped_ord, self._num_frames)
        self._regrouped = live & (self._table.last_ord < self._regrouped_ord) & bool(self.config.regroup_tokens)
        # join candidates: the recent clusters that are not final (a re-appended piece of a cut, regrouped
        # frame starts fresh clusters, as after `regroup_tail`)
        recent = self._table.last_ord > self._num_frames - 1 - self.config.active_frames
        g, c = (live & recent & ~self._regrouped).nonzero(as_tuple=True)
        self._active = self._pad_by_group(g, c)
        self._active_ord = self._num_frames - 1
        mean, inv_std = self._key_scale()
        # regrouped clusters are k-means groups, not spread-bounded: marking them would split them back
        g, c = (live & ~self._regrouped).nonzero(as_tuple=True)
        self._mark(self._pad_by_group(g, c), mean, inv_std)

    # -- geometry --------------------------------------------------------------------------------

    @property
    def _lh(self) -> int:
        """(layer, head) pairs in one membership group: spreads are averaged over them."""
        return self._layers_of_group.shape[1] * self.num_kv_heads

    def _key_scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Running visual-key mean ``[L, H, D]`` and 1/std ``[L, H]`` (total variance), float32."""
        count = max(self._num_visual, 1)
        mean = self._key_sum / count
        second = self._key_sq / count
        var = (second - mean.square().sum(-1)).clamp(min=0)
        var = torch.maximum(var, _VAR_FLOOR * second + 1e-30)
        return mean.float(), var.rsqrt().float()

    def _features(self, centred: torch.Tensor, inv_std: torch.Tensor) -> torch.Tensor:
        """``[L, n, H, D]`` centred keys -> ``[G, n, F]`` membership features (each (layer, head)
        scaled to unit total variance, concatenated over the heads and layers of the group)."""
        z = centred * inv_std[:, None, :, None]
        num_layers, n = z.shape[:2]
        if self._layers_of_group.shape[0] > 1:  # per layer
            return z.reshape(num_layers, n, -1)
        return z.permute(1, 0, 2, 3).reshape(1, n, -1)

    def _cluster_stats(self, ids, mean, inv_std, *, with_centres: bool = True):
        """Centre features ``[G, A, F]``, normalised spread ``[G, A]`` (summed over the group's (layer,
        head) pairs; divide by `_lh` for the relative spread) and size ``[G, A]`` of clusters ``ids``."""
        key_sum, sq_sum, size_l = self._table.gather(ids)  # [L, A, H, D], [L, A, H], [L, A]
        n = size_l.clamp(min=1)
        centre = key_sum / n[..., None, None]
        spread_lh = (sq_sum / n[..., None] - centre.square().sum(-1)).clamp(min=0) * inv_std.square()[:, None, :]
        group_of_layer = self._group_of_layer
        groups = self._layers_of_group.shape[0]
        spread = add_rows(torch.zeros(groups, ids.shape[1], device=self.device), group_of_layer, spread_lh.sum(-1))
        size = self._table.size.gather(1, ids).float()
        feats = self._features(centre - mean[:, None], inv_std) if with_centres else None
        return feats, spread, size

    # -- storage ---------------------------------------------------------------------------------

    def _reserve_tokens(self, needed: int) -> None:
        cap = self._frame_ids.numel()
        if needed > cap or (self._keys is not None and self._keys.shape[1] < needed):
            cap = max(needed, 2 * cap, 256)  # 256: a frame or two, so short streams never reallocate
            self._frame_ids = grow(self._frame_ids, 0, cap, -1)
            self._frame_ord = grow(self._frame_ord, 0, cap, -1)
            self._assign = grow(self._assign, 1, cap, -1)
            if self._keys is not None:
                self._keys = grow(self._keys, 1, cap, 0)

    def _reserve_clusters(self, needed: int) -> None:
        self._table.reserve(needed)
        if self._marked.shape[1] < self._table.capacity:
            self._marked = grow(self._marked, 1, self._table.capacity, False)
            self._regrouped = grow(self._regrouped, 1, self._table.capacity, False)

    def _read_keys(self, positions: torch.Tensor) -> torch.Tensor:
        """``[L, M, H, D]`` float32 keys at ``positions [M]``."""
        if self._key_reader is None:
            assert self._keys is not None or positions.numel() == 0, "no keys stored"
            if self._keys is None:
                return torch.zeros(self.num_layers, 0, self.num_kv_heads, self.head_dim, device=self.device)
            return self._keys[:, positions].float()
        keys = self._key_reader(positions)
        expected = (self.num_layers, positions.numel(), self.num_kv_heads, self.head_dim)
        assert tuple(keys.shape) == expected, f"key_reader returned {tuple(keys.shape)}, expected {expected}"
        return keys.to(self.device, torch.float32)

