"""ClusterAttendedSet without SGLang: a fake KV pool, hand-built request layouts.

Checks the serving rules: sharing one index across requests through the anchor slot, the attended-set
composition and budget, exact mode, divergence/eviction cutting the index, decode never splitting."""

from __future__ import annotations

import pytest
import torch

from mosaic_sglang import MosaicConfig
from mosaic_sglang.cluster_attended_set import ClusterAttendedSet
from mosaic_sglang.integration.request_layout import RequestLayout

L, H, D, HQ = 2, 2, 8, 4
SLOTS = 400


@pytest.fixture
def pool():
    g = torch.Generator().manual_seed(0)
    # keys with frame structure: each 8-token frame shares a direction
    keys = torch.randn(L, SLOTS, H, D, generator=g) * 0.3
    keys += torch.randn(L, SLOTS // 8, 1, H, D, generator=g).repeat_interleave(8, 1).reshape(L, SLOTS, H, D)
    return keys


def _policy(pool, **options):
    cfg = MosaicConfig.from_dict({"sink_tokens": 2, "recent_window": 4, "max_cluster_size": 8, **options})
    return ClusterAttendedSet(cfg, num_layers=L, num_kv_heads=H, head_dim=D, read_slot_keys=lambda s: pool[:, s])


def _layout(rid, slots, frame_ids, prefix_len, extend_len):
    n = prefix_len + extend_len
    return RequestLayout(rid, 1, prefix_len, extend_len, torch.as_tensor(frame_ids[:n]), torch.as_tensor(slots[:n]))


def _video_prompt(num_frames=6, tokens_per_frame=8, text_before=3, text_after=5):
    frames = [-1] * text_before + [f for f in range(num_frames) for _ in range(tokens_per_frame)] + [-1] * text_after
    return torch.tensor(frames)


def _forward(policy, layouts, is_decode=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    policy.begin_forward(layouts, is_decode)
    out = [[policy.attended_positions(l, i, torch.randn(r.extend_len, HQ, D, generator=g)) for l in range(L)] for i, r in enumerate(layouts)]
    policy.end_forward()
    return out


def test_first_question_is_dense_then_indexed_and_second_question_selects(pool):
    policy = _policy(pool, budget=16)
    frames = _video_prompt()
    slots = torch.arange(10, 10 + frames.numel())
    first = _layout("a", slots, frames, 0, frames.numel())
    (attended,) = _forward(policy, [first])
    assert all(torch.equal(p, torch.arange(frames.numel())) for p in attended)  # nothing indexed yet
    (video,) = policy.videos.values()
    assert video.index.num_tokens == 3 + 48  # the video span only, not the question after it
    video.index.check_integrity()

    # second question: same video slots cached, a new question computed
    question = torch.tensor([-1] * 7)
    frames2 = torch.cat([frames[:51], question])
    slots2 = torch.cat([slots[:51], torch.arange(300, 307)])
    second = _layout("b", slots2, frames2, 51, 7)
    (attended,) = _forward(policy, [second])
    assert len(policy.videos) == 1
    for positions in attended:
        visual = positions[(positions >= 3) & (positions < 51)]
        always = set(range(2)) | set(range(58 - 4, 58))
        assert (len(set(visual.tolist()) - always)) <= 16
        assert set(range(51, 58)) <= set(positions.tolist()) and {0, 1, 2} <= set(positions.tolist())
    stats = policy.request_stats("b")
    assert stats["clusters"] == policy.videos[int(slots[3])].index.num_clusters > 1
    assert stats["attended_tokens"] < stats["context_tokens"]


def test_full_budget_attends_everything(pool):
    policy = _policy(pool, budget=10_000)
    frames = _video_prompt()
    slots = torch.arange(10, 10 + frames.numel())
    _forward(policy, [_layout("a", slots, frames, 0, frames.numel())])
    second = _layout("b", slots, frames, frames.numel() - 1, 1)
    (attended,) = _forward(policy, [second])
    assert all(torch.equal(p, torch.arange(frames.numel())) for p in attended)


def test_decode_never_runs_maintenance_and_keeps_the_question_selection(pool, monkeypatch):
    policy = _policy(pool, budget=16, join_threshold=0.05, split_threshold=0.05)
    frames = _video_prompt()
    slots = torch.arange(10, 10 + frames.numel())
    _forward(policy, [_layout("a", slots, frames, 0, frames.numel())])
    index = next(iter(policy.videos.values())).index
    question = _layout("b", slots, frames, 51, frames.numel() - 51)
    selected = _forward(policy, [question])[0]

    def forbidden(*args, **kwargs):
        raise AssertionError("maintenance inside a decode step")

    monkeypatch.setattr(index, "maintain", forbidden)
    monkeypatch.setattr(index, "select_layer", forbidden)  # reselect_every=0: keep the question's choice
    frames_d = torch.cat([frames, torch.tensor([-1, -1])])
    slots_d = torch.cat([slots, torch.tensor([390, 391])])
    for step in range(2):
        n = frames.numel() + step + 1
        (attended,) = _forward(policy, [_layout("b", slots_d, frames_d, n - 1, 1)], is_decode=True, seed=step)
        for l in range(L):
            assert set(selected[l].tolist()) <= set(attended[l].tolist())


def test_eviction_and_divergence_cut_the_index(pool):
    policy = _policy(pool, budget=16)
    frames = _video_prompt()
    slots = torch.arange(10, 10 + frames.numel())
    _forward(policy, [_layout("a", slots, frames, 0, frames.numel())])
    anchor = int(slots[3])
    index = policy.videos[anchor].index
    policy.on_slots_freed(slots[40:45])  # tail of the video evicted
    assert index.num_tokens == 40
    index.check_integrity()
    # a request re-computes from position 30 with new slots: the index is cut at 30, then re-grown
    slots_b = torch.cat([slots[:30], torch.arange(200, 200 + frames.numel() - 30)])
    _forward(policy, [_layout("b", slots_b, frames, 30, frames.numel() - 30)])
    assert policy.videos[anchor].index.num_tokens == 51
    assert torch.equal(policy.videos[anchor].slots[:51], slots_b[:51])
    policy.videos[anchor].index.check_integrity()
    policy.on_slots_freed(torch.tensor([anchor]))
    assert policy.videos == {}


def test_release_drops_request_state(pool):
    policy = _policy(pool)
    frames = _video_prompt()
    slots = torch.arange(10, 10 + frames.numel())
    _forward(policy, [_layout("a", slots, frames, 0, frames.numel())])
    assert policy.request_stats("a")
    policy.release("a")
    assert policy.request_stats("a") == {} and "a" not in policy._kept


def test_groups_to_move_keeps_cluster_order_and_drops_empty_clusters():
    from mosaic_sglang.cluster_attended_set import _groups_to_move

    indptr = torch.tensor([0, 3, 3, 5, 7])  # cluster 1 is empty
    members = torch.tensor([1, 4, 9, 2, 3, 5, 6])
    move = torch.tensor([True, False, True, False, False, True, True])
    groups = _groups_to_move(indptr, members, move)
    assert [g.tolist() for g in groups] == [[1, 9], [5, 6]]
    assert _groups_to_move(indptr, members, torch.zeros(7, dtype=torch.bool)) == []
