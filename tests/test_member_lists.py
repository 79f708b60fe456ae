"""Cluster members as CSR (`clusters/members.py`, `ClusterIndex.member_lists`): equal to a plain loop over
the assignment, kept across text appends and decode-time reads, rebuilt after every membership change
(joins, splits, regroups, truncation — `check_integrity` compares the kept lists with a fresh build), and
the eligibility rule the emission reads (`eligible_range`) matching the always-attended mask."""

from __future__ import annotations

import pytest
import torch
from cluster_trace import video_stream  # tests/ is on the path (its conftest.py)

from mosaic_sglang import ClusterIndex, MosaicConfig
from mosaic_sglang.clusters.members import build_member_lists
from mosaic_sglang.clusters.select import _covered_counts, eligible_range
from mosaic_sglang.retrieval.base import always_attended_mask
from mosaic_sglang.testing.host_sync import no_host_sync


def _loop_lists(index: ClusterIndex, group: int) -> list[list[int]]:
    """Per cluster id of ``group``, its member positions in ascending order (the obvious loop)."""
    out = [[] for _ in range(index.cluster_counts[group])]
    for pos, cid in enumerate(index.view().assign[group].tolist()):
        if cid >= 0:
            out[cid].append(pos)
    return out


def _csr_lists(index: ClusterIndex, group: int) -> list[list[int]]:
    indptr, positions = index.cluster_members(group)
    return [positions[int(a) : int(b)].tolist() for a, b in zip(indptr[:-1], indptr[1:])]


def _index(membership: str, **options) -> ClusterIndex:
    cfg = MosaicConfig(budget=16, sink_tokens=3, recent_window=10, max_cluster_size=9, join_threshold=0.3,
                       split_threshold=0.45, membership=membership, **options)
    return ClusterIndex(cfg, num_layers=3, num_kv_heads=2, head_dim=12)


@pytest.mark.parametrize("membership", ["shared", "per_layer"])
def test_member_lists_follow_every_membership_change(membership):
    keys, frame_ids, _ = video_stream(seed=3, num_frames=12, tokens_per_frame=25)
    index = _index(membership, regroup_tokens=6, regroup_frames=3)
    ends = [0, 40, 41, 90, 160, keys.shape[1]]
    for a, b in zip(ends[:-1], ends[1:]):
        index.append(keys[:, a:b], frame_ids[a:b])
        index.member_lists()  # kept from here: the next change must drop it
        index.check_integrity()
        for g in range(len(index.cluster_counts)):
            assert _csr_lists(index, g) == _loop_lists(index, g)
        assert index.maintain(max_splits=100) >= 0  # splits and regroups
        index.check_integrity()
    assert index.num_splits + index.num_regroups > 0, "the trace must exercise splits or regroups"
    index.member_lists()
    index.truncate(index.num_tokens - 37)  # cuts clusters, renumbers ids
    index.check_integrity()
    for g in range(len(index.cluster_counts)):
        assert _csr_lists(index, g) == _loop_lists(index, g)


def test_text_appends_keep_the_lists_and_the_build_needs_no_host_sync():
    keys, frame_ids, _ = video_stream(seed=4, num_frames=6)
    index = _index("shared")
    index.append(keys, frame_ids)
    view = index.view()
    with no_host_sync():  # a re-select decode step may be the first to ask for them
        built = build_member_lists(view.assign, view.num_clusters, view.num_visual)
    kept = index.member_lists()
    assert all(torch.equal(a, b) for a, b in zip(built, kept))
    index.append(torch.randn(3, 5, 2, 12), torch.full((5,), -1))  # generated text: no member changes
    assert index.member_lists() is kept
    index.append(keys[:, :4], torch.full((4,), int(frame_ids.max()) + 1))  # a new frame: rebuilt
    assert index.member_lists() is not kept
    index.check_integrity()


@pytest.mark.parametrize("extra", [0, 7, -30])
def test_eligibility_is_the_complement_of_the_always_mask_among_members(extra):
    """`_covered_counts` reads only the sinks and the window; it counts exactly the members the always
    mask keeps (and, for a served prefix shorter than the index, the members past its end)."""
    keys, frame_ids, _ = video_stream(seed=5, num_frames=8)
    index = _index("per_layer")
    index.append(keys, frame_ids)
    view = index.view()
    seq_len = view.num_tokens + extra
    lo, hi = eligible_range(view, seq_len)
    always = always_attended_mask(view.frame_ids, view.config, seq_len=seq_len)
    position = torch.arange(view.num_tokens)
    outside = always | (position >= seq_len)
    visual = view.frame_ids >= 0
    assert torch.equal(visual & ((position < lo) | (position >= hi)), visual & outside)
    num_c = max(view.num_clusters)
    want = torch.zeros(view.assign.shape[0], num_c, dtype=torch.int64)
    for g in range(view.assign.shape[0]):
        members = view.assign[g] >= 0
        want[g] = torch.bincount(view.assign[g][members & outside], minlength=num_c)
    assert torch.equal(_covered_counts(view, num_c, seq_len), want)


@pytest.mark.parametrize("heads", ["shared", "per_kv_head"])
def test_a_served_prefix_shorter_than_the_index_attends_no_member_past_its_end(heads):
    """No recent window, ``seq_len < num_tokens``: members past the prefix cost nothing and are never
    attended (a whole chosen cluster used to bring them in); the selected part stays within the budget."""
    from mosaic_sglang.clusters import select_layer_batch

    keys, frame_ids, _ = video_stream(seed=6, num_frames=5)
    cfg = MosaicConfig(budget=30, sink_tokens=2, recent_window=0, max_cluster_size=9, join_threshold=0.3,
                       selection_heads=heads)
    index = ClusterIndex(cfg, num_layers=3, num_kv_heads=2, head_dim=12)
    index.append(keys, frame_ids)
    seq_len = index.num_tokens - 20
    for seed in range(10):
        q = torch.randn(1, 4, 12, generator=torch.Generator().manual_seed(seed))
        attended = select_layer_batch([index], 1, [q], [seq_len])[0]
        assert attended.dim() == (2 if heads == "per_kv_head" else 1)
        for row in attended.reshape(-1, attended.shape[-1]):  # one list, or one per KV head
            visual = index.frame_ids[row] >= 0
            assert int((row[visual] >= seq_len).sum()) == 0, f"seed {seed}"
            assert int((visual & (row >= cfg.sink_tokens)).sum()) <= cfg.budget
