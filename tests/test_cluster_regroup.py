"""Regrouping sealed clusters (`MosaicConfig.regroup_tokens`, `clusters/regroup.py`): k-means groups under the
size cap, dense ids, integrity after every maintenance call, settled clusters never change again, offload
waits for them, exact mode unchanged."""

from __future__ import annotations

import pytest
import torch

from mosaic_sglang import ClusterIndex, MosaicConfig
from mosaic_sglang.clusters.regroup import regroup_kmeans
from mosaic_sglang.offload.planner import closed_groups, clusters_to_offload
from mosaic_sglang.traces import SyntheticTraceSpec, synthetic_trace


@pytest.fixture(scope="module")
def trace():
    return synthetic_trace(SyntheticTraceSpec(num_frames=40, num_scenes=3, seed=1))


def _index(trace, membership="shared", **options):
    num_layers, _, heads, dim = trace.keys.shape
    cfg = MosaicConfig(membership=membership, **{"budget": 64, "regroup_tokens": 12, "regroup_frames": 6, **options})
    return ClusterIndex(cfg, num_layers=num_layers, num_kv_heads=heads, head_dim=dim)


def _partition(assign: torch.Tensor) -> set[tuple[int, ...]]:
    """The clusters of ``assign [N]`` as sets of positions (ids do not matter)."""
    groups: dict[int, list[int]] = {}
    for pos, cid in enumerate(assign.tolist()):
        if cid >= 0:
            groups.setdefault(cid, []).append(pos)
    return {tuple(g) for g in groups.values()}


def test_regroup_kmeans_separates_blobs_densely_under_the_cap():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = torch.arange(90) // 30  # three scenes in position order (the initial centres are spread by position)
    feats = centres[truth] + 0.1 * torch.randn(90, 2, generator=gen)
    labels, count = regroup_kmeans(feats, tokens_per_cluster=30, max_cluster_size=64)
    assert count == 3 and labels[[0, 30, 60]].tolist() == [0, 1, 2]  # dense, numbered by first member
    for g in range(3):
        assert (truth[labels == g] == truth[labels == g][0]).all()  # one blob per group
    capped, count = regroup_kmeans(feats, tokens_per_cluster=30, max_cluster_size=8)
    sizes = torch.bincount(capped, minlength=count)
    assert count == 12 and int(sizes.max()) <= 8 and int(sizes.min()) >= 1  # 3 blobs of 30 -> 4 runs each
    for g in range(count):
        assert (truth[capped == g] == truth[capped == g][0]).all()  # a run stays inside its blob
    again, _ = regroup_kmeans(feats, tokens_per_cluster=30, max_cluster_size=8)
    assert torch.equal(again, capped)  # deterministic
    empty, none = regroup_kmeans(feats[:0], 4, 8)
    assert none == 0 and empty.numel() == 0


def _settled_partitions(index) -> list[set[tuple[int, ...]]]:
    """Per membership group, the settled clusters as sets of positions."""
    out = []
    for g in range(len(index.cluster_counts)):
        assign = index.view().assign[g]
        settled = index.settled_clusters(g)
        out.append({c for c in _partition(assign) if bool(settled[int(assign[c[0]])])})
    return out


def _check_settled_are_final(index) -> None:
    """No settled cluster is marked for a split or a candidate for joins."""
    view = index.view()
    for g in range(len(index.cluster_counts)):
        settled = index.settled_clusters(g)
        assert not bool((view.marked[g, : settled.numel()] & settled).any())
        active = view.active[g][view.active[g] >= 0]
        assert not bool(settled[active].any())


@pytest.mark.parametrize("membership, chunk, split", [("shared", None, 0.3), ("per_layer", None, 0.3),
                                                      ("shared", 37, 0.22), ("per_layer", 50, 0.22)])
def test_index_regroups_sealed_spans_and_keeps_every_invariant(trace, membership, chunk, split):
    """Frame by frame, and in odd-sized appends (a frame continues in the next call) with a tight split
    threshold (splits leave parents without recent members: they must leave the candidates)."""
    index = _index(trace, membership, split_threshold=split, active_frames=2 if chunk else 4)
    plain = _index(trace, membership, regroup_tokens=0, split_threshold=split, active_frames=2 if chunk else 4)
    n = trace.keys.shape[1]
    pieces = trace.frame_chunks() if chunk is None else [(a, min(a + chunk, n)) for a in range(0, n, chunk)]
    settled = [set() for _ in index.cluster_counts]
    for a, b in pieces:
        for ix in (index, plain):
            ix.append(trace.keys[:, a:b], trace.frame_ids[a:b])
            ix.maintain()
        index.check_integrity()
        _check_settled_are_final(index)
        _check_settled_are_final(plain)
        now = _settled_partitions(index)
        for g, (before, after) in enumerate(zip(settled, now)):
            assert before <= after, f"group {g}: a settled cluster changed"  # (later regroups renumber ids only)
        settled = now
    frames = int(index.view().frame_ord.max()) + 1
    sealed = frames - index.config.active_frames
    assert index.num_regroups == sealed // 6
    assert index.settled_frames == 6 * (sealed // 6)
    assert plain.settled_frames == sealed and plain.num_regroups == 0
    assert index.num_clusters < plain.num_clusters / 2  # coarser
    sizes = torch.tensor([len(c) for c in settled[0]])
    assert sizes.float().mean() >= 8 and int(sizes.max()) <= index.config.max_cluster_size
    index.truncate(index.num_tokens - 200)
    index.check_integrity()
    _check_settled_are_final(index)
    assert index.settled_frames <= sealed
    for a, b in pieces[-3:]:  # truncated into regrouped frames, then the stream goes on
        index.append(trace.keys[:, a:b], trace.frame_ids[a:b])
        index.maintain()
        index.check_integrity()


def test_one_large_append_is_regrouped_span_by_span(trace):
    """A prefill chunk can seal many frames at once: each span of regroup_frames is its own k-means."""
    index = _index(trace)
    index.append(trace.keys, trace.frame_ids)  # all 40 frames in one call
    index.maintain()
    index.check_integrity()
    assert index.num_regroups == (40 - 4) // 6 and index.settled_frames == 36
    settled = index.settled_clusters(0)
    last = index.view().table.last_ord[0, : settled.numel()]
    first_frame = index.view().frame_ord[index.view().table.first_pos[0, : settled.numel()].clamp(max=index.num_tokens - 1)]
    span_of_last = torch.div(last[settled], 6, rounding_mode="floor")
    span_of_first = torch.div(first_frame[settled], 6, rounding_mode="floor")
    assert bool((span_of_last - span_of_first <= 1).all())  # a cluster reaches at most into the span before


def test_regrouping_into_more_clusters_than_before_allocates_ids(trace):
    """regroup_tokens below the online clusters' size: k > the old count, fresh ids, still dense."""
    index = _index(trace, regroup_tokens=2, join_threshold=0.4, split_threshold=0.6)
    for a, b in trace.frame_chunks():
        index.append(trace.keys[:, a:b], trace.frame_ids[a:b])
        index.maintain()
        index.check_integrity()
    assert index.num_regroups > 0
    sizes = torch.tensor([len(c) for c in _settled_partitions(index)[0]])
    assert sizes.float().mean() <= 2.5  # ~2 tokens each: more, smaller clusters than online


def test_exact_mode_attends_everything_with_regrouping(trace):
    index = _index(trace, budget=10_000)
    for a, b in trace.frame_chunks():
        index.append(trace.keys[:, a:b], trace.frame_ids[a:b])
        index.maintain()
    assert index.num_regroups > 0
    selection = index.select(trace.queries)
    for layer in range(index.num_layers):
        assert torch.equal(selection.layer(layer), torch.arange(index.num_tokens))


def test_offload_moves_only_settled_clusters(trace):
    index = _index(trace)
    for a, b in trace.frame_chunks()[:20]:
        index.append(trace.keys[:, a:b], trace.frame_ids[a:b])
        index.maintain()
    path = torch.arange(1, index.num_tokens + 1)  # every position on the device
    groups = clusters_to_offload(index, path, sink_tokens=4, sealed_only=True)
    moved = torch.cat(groups)
    assign = index.view().assign[0]
    settled = index.settled_clusters(0)
    assert index.settled_frames == 12 and 0 < int(settled.sum()) < settled.numel()
    assert bool(settled[assign[moved]].all())  # only regrouped clusters move
    sealed = index.view().table.last_ord[0, : settled.numel()] < 20 - index.config.active_frames
    assert bool((sealed & ~settled).any())  # sealed but not yet regrouped clusters stay (they will change)
    assert torch.equal(torch.cat([g.new_full((g.numel(),), int(assign[g[0]])) for g in groups]), assign[moved])
    members = set(moved.tolist())
    for cid in settled.nonzero().flatten().tolist():  # every settled cluster moved whole (its non-sink members)
        pos = (assign == cid).nonzero().flatten()
        assert all(p in members for p in pos.tolist() if p >= 4)


@pytest.mark.parametrize("membership, chunk", [("shared", None), ("per_layer", None), ("shared", 37)])
def test_regroup_tail_regroups_the_active_frames_and_the_stream_goes_on(trace, membership, chunk):
    """`regroup_tail` (a pause in the stream, e.g. a question): every frame is regrouped, the active ones
    and the sealed ones short of a span included; appends afterwards (a continued frame with ``chunk``)
    start fresh clusters, settled clusters never change again, and a later tail takes them in."""
    index = _index(trace, membership)
    n = trace.keys.shape[1]
    pieces = trace.frame_chunks() if chunk is None else [(a, min(a + chunk, n)) for a in range(0, n, chunk)]
    half = len(pieces) // 2
    for a, b in pieces[:half]:
        index.append(trace.keys[:, a:b], trace.frame_ids[a:b])
        index.maintain()
    frames = int(index.view().frame_ord[: index.num_tokens].max()) + 1
    due = index.num_regroups
    assert 0 < index.settled_frames < frames  # the active frames (and a partial span) are still online
    online = index.num_clusters
    assert index.settled_frames == 6 * due  # complete spans only
    pending = sum(int((~index.settled_clusters(g)[:count]).sum()) for g, count in enumerate(index.cluster_counts))
    assert pending > 0 and index.regroup_tail() == pending  # the rest, in one more span
    index.check_integrity()
    _check_settled_are_final(index)
    assert index.settled_frames == frames and index.num_regroups == due + 1
    assert index.num_clusters < online
    for g in range(len(index.cluster_counts)):
        count = index.cluster_counts[g]
        assert bool(index.settled_clusters(g)[:count].all())  # every cluster is final
        assert int((index.view().active[g] >= 0).sum()) == 0  # none takes joins
    assert index.regroup_tail() == 0  # nothing pending
    settled = _settled_partitions(index)
    for a, b in pieces[half:]:
        index.append(trace.keys[:, a:b], trace.frame_ids[a:b])
        index.maintain()
        index.check_integrity()
        _check_settled_are_final(index)
        now = _settled_partitions(index)
        assert all(before <= after for before, after in zip(settled, now)), "a settled cluster changed"
        settled = now
    index.regroup_tail()
    index.check_integrity()
    assert all(bool(index.settled_clusters(g)[: index.cluster_counts[g]].all()) for g in range(len(index.cluster_counts)))
    index.config = index.config.replace(budget=10_000)  # exact mode still attends everything
    selection = index.select(trace.queries)
    assert torch.equal(selection.layer(0), torch.arange(index.num_tokens))


def test_regroup_tail_without_regrouping_changes_nothing(trace):
    index = _index(trace, regroup_tokens=0)
    for a, b in trace.frame_chunks()[:10]:
        index.append(trace.keys[:, a:b], trace.frame_ids[a:b])
        index.maintain()
    before = index.view().assign.clone()
    assert index.regroup_tail() == 0 and torch.equal(index.view().assign, before) and index.num_regroups == 0


def test_truncate_after_a_tail_regroup_keeps_the_tail_final(trace):
    """A cut inside the regrouped tail (a shorter cached prefix of the same video): the regrouped clusters
    stay final — not marked, not join candidates — and the re-appended tokens start fresh clusters."""
    index = _index(trace)
    pieces = trace.frame_chunks()[:20]
    for a, b in pieces:
        index.append(trace.keys[:, a:b], trace.frame_ids[a:b])
        index.maintain()
    index.regroup_tail()
    n = index.num_tokens
    before = [{tuple(p for p in c if p < n - 3) for c in part} - {()} for part in _settled_partitions(index)]
    index.truncate(n - 3)  # three tokens of the last frame
    index.check_integrity()
    _check_settled_are_final(index)
    assert not bool(index.view().marked.any())
    assert [_settled_partitions(index)[g] for g in range(len(before))] == before
    index.append(trace.keys[:, n - 3 : n], trace.frame_ids[n - 3 : n])  # the frame goes on
    index.maintain()
    index.check_integrity()
    _check_settled_are_final(index)
    assert all(b <= a for b, a in zip(before, _settled_partitions(index)))  # no settled cluster changed
    assert index.regroup_tail() > 0  # the re-appended piece was online: the next tail takes it in


def test_mid_prefill_offload_leaves_the_active_frames_after_a_tail_regroup(trace):
    """`regroup_tail` settles the active frames too, but a mid-prefill offload (``sealed_only``) keeps
    clusters reaching the last active_frames frames on the device: a question reads them most."""
    index = _index(trace)
    for a, b in trace.frame_chunks()[:20]:
        index.append(trace.keys[:, a:b], trace.frame_ids[a:b])
        index.maintain()
    index.regroup_tail()
    path = torch.arange(1, index.num_tokens + 1)
    moved = torch.cat(clusters_to_offload(index, path, sink_tokens=4, sealed_only=True))
    assign = index.view().assign[0]
    last = index.view().table.last_ord[0, : index.cluster_counts[0]]
    recent = last >= 20 - index.config.active_frames
    assert bool(recent.any()) and not bool(recent[assign[moved]].any())
    assert bool(index.movable_clusters(0).any()) and bool(index.settled_clusters(0).all())
    everything = torch.cat(clusters_to_offload(index, path, sink_tokens=4, sealed_only=False))
    assert bool(recent[assign[everything]].any())  # at the request's end they move too


@pytest.mark.parametrize("sealed_only", [True, False])
def test_per_layer_offload_groups_hold_whole_clusters_of_every_layer(trace, sealed_only):
    """`closed_groups` (one membership per layer): a group is a set of positions no layer's cluster crosses
    among those that move, so the host tier lays every layer's cluster out as one sub-range of one extent;
    mid-prefill only positions whose cluster is movable in every layer go, at the request's end every
    clustered one; a component past the size cap is cut into position runs."""
    index = _index(trace, membership="per_layer")
    for a, b in trace.frame_chunks()[:20]:
        index.append(trace.keys[:, a:b], trace.frame_ids[a:b])
        index.maintain()
    path = torch.arange(1, index.num_tokens + 1)
    groups, clusters = closed_groups(index, path, sink_tokens=4, sealed_only=sealed_only)
    moved = torch.cat(groups)
    view = index.view()
    assign = view.assign[view.group_of_layer][:, : index.num_tokens]  # [L, N]
    assert len(groups) > 1 and torch.equal(moved.sort().values, moved.unique()) and int(moved.min()) >= 4
    for g, c in zip(groups, clusters):
        assert torch.equal(g, g.sort().values) and torch.equal(c, assign[:, g])
    group_of = torch.full((index.num_tokens,), -1)
    for i, g in enumerate(groups):
        group_of[g] = i
    for layer in range(assign.shape[0]):  # no cluster is split between groups
        for cid in assign[layer, moved].unique().tolist():
            members = (assign[layer] == cid).nonzero().flatten()
            assert group_of[members][group_of[members] >= 0].unique().numel() == 1
    clustered = int((assign >= 0).all(0)[4:].sum())
    if sealed_only:
        for layer in range(assign.shape[0]):
            assert bool(index.movable_clusters(int(view.group_of_layer[layer]))[assign[layer, moved]].all())
        assert moved.numel() < clustered  # the unsettled tail stays
    else:
        assert moved.numel() == clustered  # every clustered position past the sinks
        capped, _ = closed_groups(index, path, sink_tokens=4, sealed_only=False, max_group_tokens=5)
        assert max(g.numel() for g in capped) <= 5 and torch.equal(torch.cat(capped).sort().values, moved.sort().values)
