"""Cluster selection: budget accounting, exact mode, monotone recall, hand-made obvious cases, and the
scoring / budget-fill functions on their own."""

from __future__ import annotations

import pytest
import torch
from cluster_trace import ONLINE, mass_recall, object_queries, video_stream

import mosaic_sglang.clusters.index as cluster_index_module
from mosaic_sglang import ClusterIndex, MosaicConfig
from mosaic_sglang.clusters import score_clusters
from mosaic_sglang.retrieval import fill_budget
from mosaic_sglang.retrieval import always_attended_positions

L, H, HQ, D = 3, 2, 4, 12
RULES = ("centroid", "centroid_radius", "size_weighted")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add contention on a loaded 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def indexed_stream(membership: str = "shared", *, seed: int = 0, **overrides):
    keys, frame_ids, objects = video_stream(seed=seed, num_layers=L, num_kv_heads=H, head_dim=D, num_frames=9,
                                            tokens_per_frame=63)
    options = dict(ONLINE, budget=60, sink_tokens=3, recent_window=7, max_cluster_size=9, join_threshold=0.3,
                   split_threshold=0.45, membership=membership)
    options.update(overrides)
    index = ClusterIndex(MosaicConfig(**options), num_layers=L, num_kv_heads=H, head_dim=D)
    index.append(keys, frame_ids)
    index.maintain(max_splits=100)
    return index, keys, frame_ids, objects


@pytest.mark.parametrize("membership", ["shared", "per_layer"])
@pytest.mark.parametrize("rule", RULES)
def test_full_budget_attends_every_position(membership: str, rule: str) -> None:
    index, keys, _, _ = indexed_stream(membership, score=rule, budget=10_000)
    sel = index.select(torch.randn(L, 2, HQ, D))
    for layer in range(L):
        assert torch.equal(sel.layer(layer), torch.arange(keys.shape[1]))
    assert sel.num_units.tolist() == [index.cluster_counts[0 if membership == "shared" else l] for l in range(L)]


@pytest.mark.parametrize("membership", ["shared", "per_layer"])
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("budget", [0, 1, 17, 100, 400])
@pytest.mark.parametrize("fill", ["exact", "whole"])
def test_budget_accounting(membership: str, rule: str, budget: int, fill: str) -> None:
    index, keys, frame_ids, _ = indexed_stream(membership, score=rule, budget=budget, query_reduce="max", fill=fill)
    always = always_attended_positions(frame_ids, index.config)
    eligible = int((frame_ids >= 0).sum()) - int((frame_ids[always] >= 0).sum())
    queries = torch.randn(L, 3, HQ, D, generator=torch.Generator().manual_seed(budget))
    sel = index.select(queries)
    choice = index.select_clusters(queries)
    assert torch.equal(sel.num_units, choice.indptr[1:] - choice.indptr[:-1])
    for layer in range(L):
        got = sel.layer(layer)
        assert torch.equal(got, got.unique())  # sorted, unique
        assert bool(torch.isin(always, got).all())  # always-attended are always in
        extra = got[~torch.isin(got, always)]
        if fill == "exact":  # every layer attends exactly min(budget, eligible) selected tokens
            assert extra.numel() == min(budget, eligible)
        else:
            assert extra.numel() <= budget  # whole clusters only: attended <= budget + |always|
        group = 0 if membership == "shared" else layer
        assign = index._assign[group, : keys.shape[1]]
        chosen = choice.cluster_ids[choice.indptr[layer] : choice.indptr[layer + 1]]
        members = torch.isin(assign, chosen).nonzero().flatten()
        members = members[~torch.isin(members, always)]
        assert bool(torch.isin(extra, members).all())  # the extra tokens come from the chosen clusters
        # all chosen clusters are whole, except (exact fill) one boundary cluster cut at its lowest positions
        partial = [c for c in chosen.tolist() if not bool(torch.isin(members[assign[members] == c], extra).all())]
        assert len(partial) <= (1 if fill == "exact" else 0)
        for c in partial:
            mine = members[assign[members] == c]
            kept = mine[torch.isin(mine, extra)]
            assert 0 < kept.numel() < mine.numel() and torch.equal(kept, mine[: kept.numel()])


def test_clusters_inside_the_window_cost_nothing_and_are_not_chosen() -> None:
    # Frame 0: groups A and C (4 tokens each); frame 1: group B, entirely inside the recent window.
    keys = torch.zeros(L, 16, H, D)
    keys[:, 0:4, :, 0] = 5.0  # A
    keys[:, 4:8, :, 2] = 5.0  # C
    keys[:, 8:16, :, 1] = 5.0  # B
    keys += 0.01 * torch.randn(L, 16, H, D, generator=torch.Generator().manual_seed(0))
    index = ClusterIndex(MosaicConfig(budget=8, sink_tokens=0, recent_window=8, join_threshold=0.3, split_threshold=0.45, **ONLINE),
                         num_layers=L, num_kv_heads=H, head_dim=D)
    index.append(keys, torch.tensor([0] * 8 + [1] * 8))
    assert index.num_clusters == 3
    q = torch.zeros(L, 1, HQ, D)
    q[..., 1] = 3.0  # aimed at B, which is attended anyway
    sel = index.select(q)
    for layer in range(L):
        assert sel.layer(layer).tolist() == list(range(16))  # A and C fill the budget exactly
    assert sel.num_units.tolist() == [2] * L  # B's cluster cost 0 and was not chosen


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("reduce", ["mean", "max"])
def test_two_separated_groups_query_picks_its_group(rule: str, reduce: str) -> None:
    g = torch.Generator().manual_seed(1)
    keys = 0.05 * torch.randn(L, 20, H, D, generator=g)
    group_a = torch.tensor([0, 1, 2, 3, 4, 10, 11, 12, 13, 14])  # both groups in both frames
    group_b = torch.tensor([5, 6, 7, 8, 9, 15, 16, 17, 18, 19])
    keys[:, group_a, :, 0] += 4.0
    keys[:, group_b, :, 0] -= 4.0
    frame_ids = torch.tensor([0] * 10 + [1] * 10)
    for target, expect in ((1.0, group_a.tolist()), (-1.0, group_b.tolist())):
        index = ClusterIndex(MosaicConfig(budget=10, sink_tokens=0, recent_window=0, score=rule, query_reduce=reduce,
                                          join_threshold=0.3, split_threshold=0.45, **ONLINE),
                             num_layers=L, num_kv_heads=H, head_dim=D)
        index.append(keys, frame_ids)
        assert index.num_clusters == 2
        q = torch.zeros(L, 2, HQ, D)
        q[..., 0] = 2.0 * target
        sel = index.select(q)
        for layer in range(L):
            assert sel.layer(layer).tolist() == list(expect)


@pytest.mark.parametrize("membership", ["shared", "per_layer"])
@pytest.mark.parametrize("rule", RULES)
def test_mass_recall_non_decreasing_in_budget(membership: str, rule: str) -> None:
    index, keys, frame_ids, objects = indexed_stream(membership, score=rule, query_reduce="mean")
    queries = object_queries(keys, objects, target=2, num_qo_heads=HQ)
    visual = int((frame_ids >= 0).sum())
    recalls, previous = [], None
    for budget in (0, 10, 30, 60, 120, 250, visual):
        index.config = index.config.replace(budget=budget)
        sel = index.select(queries)
        if previous is not None:  # same ranking, larger prefix: the chosen sets are nested
            for layer in range(L):
                assert bool(torch.isin(previous.layer(layer), sel.layer(layer)).all())
        recalls.append(mass_recall(queries, keys, sel))
        previous = sel
    assert all(b >= a - 1e-6 for a, b in zip(recalls, recalls[1:])), recalls
    assert recalls[-1] == pytest.approx(1.0, abs=1e-5)
    assert recalls[3] > recalls[0] + 0.2  # the budget buys real attention mass


def test_clusters_beat_random_tokens_at_the_same_budget() -> None:
    index, keys, frame_ids, objects = indexed_stream(budget=60)
    queries = object_queries(keys, objects, target=4, num_qo_heads=HQ)
    sel = index.select(queries)
    always = always_attended_positions(frame_ids, index.config)
    g = torch.Generator().manual_seed(0)
    candidates = (frame_ids >= 0).nonzero().flatten()
    candidates = candidates[~torch.isin(candidates, always)]
    random_sets = []
    for _ in range(5):
        pick = candidates[torch.randperm(candidates.numel(), generator=g)[:60]]
        random_sets.append(torch.cat([always, pick]).sort().values)
    random_recall = sum(mass_recall(queries, keys, _same_for_all_layers(s)) for s in random_sets) / 5
    assert mass_recall(queries, keys, sel) > random_recall + 0.2


def test_select_is_read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    index, _, _, _ = indexed_stream(join_threshold=0.6, split_threshold=0.6)
    monkeypatch.setattr(cluster_index_module, "two_means", lambda *a, **k: pytest.fail("split during select"))
    state = (index._assign.clone(), index._table.key_sum.clone(), index.num_marked, index.num_clusters)
    queries = torch.randn(L, 2, HQ, D)
    first, second = index.select(queries), index.select(queries)
    assert torch.equal(first.indices, second.indices)
    assert torch.equal(state[0], index._assign) and torch.equal(state[1], index._table.key_sum)
    assert state[2:] == (index.num_marked, index.num_clusters)


def test_empty_index_and_text_only_stream() -> None:
    index = ClusterIndex(MosaicConfig(budget=4, sink_tokens=1, recent_window=2, **ONLINE), num_layers=L, num_kv_heads=H, head_dim=D)
    sel = index.select(torch.randn(L, 1, HQ, D))
    assert sel.indices.numel() == 0 and sel.indptr.tolist() == [0] * (L + 1)
    index.append(torch.randn(L, 5, H, D), torch.full((5,), -1))
    sel = index.select(torch.randn(L, 1, HQ, D))
    assert sel.sizes().tolist() == [5] * L and sel.num_units.tolist() == [0] * L
    index.check_integrity()


# -- the pure functions -------------------------------------------------------------------------


def test_fill_budget_takes_a_prefix_of_the_ranking() -> None:
    scores = torch.tensor([[3.0, 1.0, 2.0, 0.5], [1.0, 2.0, float("-inf"), 3.0]])
    costs = torch.tensor([[4, 1, 2, 1], [2, 2, 1, 0]])
    chosen = fill_budget(scores, costs, torch.tensor([6, 3]))
    assert chosen.tolist() == [[True, False, True, False], [False, True, False, False]]
    # Row 0 at budget 5: cluster 2 (cost 2) no longer fits after cluster 0, so the walk stops there.
    assert fill_budget(scores[:1], costs[:1], 5).tolist() == [[True, False, False, False]]
    assert not fill_budget(scores, costs, 0).any()


def test_score_rules_on_hand_made_clusters() -> None:
    # One row, KV heads 2, Hq 4 (heads 0,1 read KV head 0; heads 2,3 read KV head 1).
    centroids = torch.zeros(1, 3, 2, 4)
    centroids[0, 0, 1, 0] = 1.0  # cluster 0 matches the query only through KV head 1
    centroids[0, 1, 0, 0] = 0.5  # cluster 1 is weakly aligned through KV head 0
    spreads = torch.zeros(1, 3, 2)
    costs = torch.tensor([[4, 4, 4]])
    q = torch.zeros(1, 1, 4, 4)
    q[0, 0, 2:, 0] = 4.0  # only the heads that read KV head 1 look along dim 0
    for rule in RULES:
        s = score_clusters(q, centroids, spreads, costs, rule=rule, reduce="max")
        assert int(s.argmax()) == 0, rule
    # Equal centroids: the radius bound prefers the wider cluster; size_weighted the one with more
    # mass per budget token (here: the wider one, its log-normal mass estimate is larger).
    centroids = torch.zeros(1, 2, 1, 4)
    spreads = torch.tensor([[[0.0], [4.0]]])
    q = torch.ones(1, 1, 1, 4)
    for rule in ("centroid_radius", "size_weighted"):
        s = score_clusters(q, centroids, spreads, torch.tensor([[3, 3]]), rule=rule, reduce="mean")
        assert s[0, 1] > s[0, 0], rule
    # Invalid clusters score -inf; bad rule names are rejected.
    s = score_clusters(q, centroids, spreads, torch.tensor([[0, 3]]), rule="size_weighted", reduce="mean")
    assert s[0, 0] == float("-inf") and torch.isfinite(s[0, 1])
    with pytest.raises(ValueError, match="score rule"):
        score_clusters(q, centroids, spreads, costs[:, :2], rule="nope", reduce="mean")


def _same_for_all_layers(positions: torch.Tensor):
    from mosaic_sglang.retrieval import Selection

    n = positions.numel()
    return Selection(torch.arange(L + 1) * n, positions.repeat(L), torch.zeros(L, dtype=torch.int64))


@pytest.mark.parametrize("membership", ["shared", "per_layer"])
def test_select_layer_matches_select(membership: str) -> None:
    index, _, _, _ = indexed_stream(membership, budget=50)
    queries = torch.randn(L, 3, HQ, D, generator=torch.Generator().manual_seed(5))
    sel = index.select(queries)
    for layer in range(L):
        assert torch.equal(index.select_layer(layer, queries[layer]), sel.layer(layer))
    with pytest.raises(ValueError, match="layer_id"):
        index.select_layer(L, queries[0])
    with pytest.raises(ValueError, match="queries"):
        index.select_layer(0, queries)


def test_batched_selection_over_sequences_equals_per_sequence():
    from mosaic_sglang.clusters import select_layer_batch

    g = torch.Generator().manual_seed(7)
    cfg = MosaicConfig(budget=40, sink_tokens=2, recent_window=8)
    indexes = []
    for n_frames, budget in ((9, 40), (5, 24), (12, 40), (1, 1000)):
        index = ClusterIndex(cfg.replace(budget=budget), num_layers=3, num_kv_heads=2, head_dim=12)
        frames = torch.arange(n_frames).repeat_interleave(21)
        index.append(torch.randn(3, frames.numel(), 2, 12, generator=g), torch.cat([torch.full((3,), -1), frames])[: frames.numel()])
        index.maintain()
        indexes.append(index)
    for layer in range(3):
        for tq in (1, 5):
            queries = [torch.randn(tq, 4, 12, generator=g) for _ in indexes]
            batched = select_layer_batch(indexes, layer, queries)
            for index, q, got in zip(indexes, queries, batched):
                assert torch.equal(got, index.select_layer(layer, q))
    mixed = [torch.randn(t, 4, 12, generator=g) for t in (1, 3, 1, 2)]
    for index, q, got in zip(indexes, mixed, select_layer_batch(indexes, 0, mixed)):
        assert torch.equal(got, index.select_layer(0, q))
