"""Regrouping sealed clusters (`MosaicConfig.regroup_tokens`, `clusters/regroup.py`): k-means groups under the
size cap, dense ids, integrity after every maintenance call, settled clusters never change again, offload
waits for them, exact mode unchanged."""

from __future__ import annotations

import pytest
import torch

from mosaic_sglang import ClusterIndex, MosaicConfig
from mosaic_sglang.clusters.regroup import regroup_kmeans
from mosaic_sglang.offload.planner import clusters_to_offload
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


@pytest.mark.parametrize("membership", ["shared", "per_layer"])
def test_index_regroups_sealed_spans_and_keeps_every_invariant(trace, membership):
    index = _index(trace, membership)
    plain = _index(trace, membership, regroup_tokens=0)
    settled: set[tuple[int, ...]] = set()
    for a, b in trace.frame_chunks():
        for ix in (index, plain):
            ix.append(trace.keys[:, a:b], trace.frame_ids[a:b])
            ix.maintain()
        index.check_integrity()
        end = index.settled_end()
        now = {c for c in _partition(index.view().assign[0]) if c[-1] < end}
        assert settled <= now  # a settled cluster never changes again (later regroups renumber ids only)
        settled = now
    frames = int(index.view().frame_ord.max()) + 1
    sealed = frames - index.config.active_frames
    assert index.num_regroups == sealed // 6
    assert index.settled_frames == 6 * (sealed // 6)
    assert plain.settled_frames == sealed and plain.num_regroups == 0
    assert index.num_clusters < plain.num_clusters / 2  # coarser
    sizes = torch.tensor([len(c) for c in settled])
    assert sizes.float().mean() >= 8 and int(sizes.max()) <= index.config.max_cluster_size
    assert not bool(index.view().marked.any()) or index.num_marked > 0
    index.truncate(index.num_tokens - 200)
    index.check_integrity()
    assert index.settled_frames <= sealed


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
    end = index.settled_end()
    assert index.settled_frames == 12 and 0 < end < index.num_tokens
    assert int(moved.max()) < end  # nothing past the last regrouped frame
    sealed_end = int((index.view().frame_ord >= 20 - index.config.active_frames).nonzero()[0])
    assert end < sealed_end  # sealed but not yet regrouped frames stay (they would be regrouped after moving)
    assigned = index.view().assign[0, moved]
    assert torch.equal(torch.cat([g.new_full((g.numel(),), int(index.view().assign[0, g[0]])) for g in groups]), assigned)
