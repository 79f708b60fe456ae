"""`select_layer_into`: the serving path's sync-free selection (exact fill) writes, per sequence, exactly the
selected part that `select_layer_batch` attends minus the always-attended positions — under a guard
that raises on every host synchronisation."""

from __future__ import annotations

import pytest
import torch
from cluster_trace import video_stream

from mosaic_sglang import ClusterIndex, MosaicConfig
from mosaic_sglang.clusters import select_layer_batch, select_layer_into
from mosaic_sglang.clusters.select import index_always_lse
from mosaic_sglang.retrieval.base import always_attended_mask
from mosaic_sglang.testing.host_sync import no_host_sync

L, H, HQ, D = 3, 2, 4, 12


def _indexes(membership: str, score: str):
    """Four sequences of different lengths and budgets: one partial budget, a small one, one covering
    every visual token (exact mode), and one whose text sits between frames."""
    out = []
    for seed, (frames, budget) in enumerate(((9, 60), (4, 7), (3, 10_000), (6, 33))):
        keys, frame_ids, _ = video_stream(seed=seed, num_layers=L, num_kv_heads=H, head_dim=D, num_frames=frames,
                                          tokens_per_frame=21)
        if seed == 3:
            frame_ids = frame_ids.clone()
            frame_ids[40:44] = -1  # a timestamp between frames
        rule, _, share = score.partition("/")  # 'size_weighted/clusters': shares among the clusters only
        cfg = MosaicConfig(budget=budget, sink_tokens=3, recent_window=7, max_cluster_size=9, join_threshold=0.3,
                           split_threshold=0.45, membership=membership, score=rule, share_of_total=share != "clusters",
                           selection_heads="shared")  # one list per layer (per KV head: test_per_head_selection.py)
        index = ClusterIndex(cfg, num_layers=L, num_kv_heads=H, head_dim=D)
        index.append(keys, frame_ids)
        index.maintain(max_splits=100)
        out.append(index)
    return out


@pytest.mark.parametrize("score", ["centroid", "size_weighted", "size_weighted/clusters"])
@pytest.mark.parametrize("membership", ["shared", "per_layer"])
def test_select_into_writes_the_selected_part_without_a_host_sync(membership, score):
    g = torch.Generator().manual_seed(3)
    indexes = _indexes(membership, score)
    seq_lens = [index.num_tokens + extra for index, extra in zip(indexes, (0, 5, 0, 12))]  # windows past the index
    moved = 0
    for layer in range(L):
        for tq in (1, 4):
            queries = [torch.randn(tq, HQ, D, generator=g) for _ in indexes]
            # what a server passes with share_of_total (its own, exact one; here the index's estimate)
            lses = [index_always_lse(index.view(), torch.tensor([layer]), q[None], n)
                    for index, q, n in zip(indexes, queries, seq_lens)]
            attended = select_layer_batch(indexes, layer, queries, seq_lens)
            for a, b in zip(select_layer_batch(indexes, layer, queries, seq_lens, lses), attended):
                assert torch.equal(a, b)  # the estimate is the default one
            if score == "size_weighted":  # ... and a given one is used: KV head 0's sinks take all its attention
                skewed = [lse.clone().index_fill_(1, torch.tensor([0]), 60.0) for lse in lses]
                moved += sum(not torch.equal(a, b) for a, b in
                             zip(select_layer_batch(indexes, layer, queries, seq_lens, skewed), attended))
            expected, outs = [], []
            for index, positions, n in zip(indexes, attended, seq_lens):
                always = always_attended_mask(index.frame_ids, index.config, seq_len=n)
                eligible = int(((index.frame_ids >= 0) & ~always).sum())
                f = min(index.config.budget, eligible)
                expected.append(positions[~always[positions]])
                assert expected[-1].numel() == f  # the exact fill selects exactly the planned length
                outs.append(torch.full((f + 1,), -7, dtype=torch.int64))
            with no_host_sync():
                select_layer_into(indexes, layer, queries, seq_lens, outs, lses)
            for want, out in zip(expected, outs):
                assert out[:-1].tolist() == want.tolist()
    assert moved > 0 or score != "size_weighted"


def test_select_into_refuses_fills_of_unknown_length():
    keys, frame_ids, _ = video_stream(seed=0, num_layers=L, num_kv_heads=H, head_dim=D, num_frames=3, tokens_per_frame=8)
    index = ClusterIndex(MosaicConfig(budget=4, fill="whole", selection_heads="shared"), num_layers=L, num_kv_heads=H, head_dim=D)
    index.append(keys, frame_ids)
    with pytest.raises(ValueError, match="fill='exact'"):
        select_layer_into([index], 0, [torch.randn(1, HQ, D)], [None], [torch.empty(5, dtype=torch.int64)])


def _expected_parts(indexes, layer, queries, seq_lens):
    attended = select_layer_batch(indexes, layer, queries, seq_lens)
    parts = []
    for index, positions, n in zip(indexes, attended, seq_lens):
        always = always_attended_mask(index.frame_ids, index.config, seq_len=n)
        parts.append(positions[~always[positions]])
    return parts


def test_batch_member_lists_follow_a_changed_index_and_a_changed_batch():
    """The batch's concatenated member lists are kept between calls; a membership change in one index (a new
    frame) or another batch composition must not reuse them."""
    g = torch.Generator().manual_seed(5)
    indexes = _indexes("shared", "centroid")
    more_keys, more_ids, _ = video_stream(seed=11, num_layers=L, num_kv_heads=H, head_dim=D, num_frames=2,
                                          tokens_per_frame=21)
    for step, batch in enumerate((indexes, indexes, indexes[1:], indexes[:1], indexes)):
        if step == 1:  # the first index grows by two frames after the batch's lists were built
            first = indexes[0]
            first.append(more_keys, torch.where(more_ids >= 0, more_ids + int(first.frame_ids.max()) + 1, -1))
        queries = [torch.randn(1, HQ, D, generator=g) for _ in batch]
        seq_lens = [index.num_tokens for index in batch]
        want = _expected_parts(batch, 1, queries, seq_lens)
        outs = [torch.full((w.numel() + 1,), -7, dtype=torch.int64) for w in want]
        with no_host_sync():
            select_layer_into(batch, 1, queries, seq_lens, outs)
        for w, out in zip(want, outs):
            assert out[:-1].tolist() == w.tolist(), f"step {step}"
