"""Mass-targeted selection (``budget_mode='mass'``): the budget rule on known numbers, and the cluster
index choosing the fewest clusters whose estimated mass reaches the target."""

from __future__ import annotations

import pytest
import torch
from cluster_trace import ONLINE

from mosaic_sglang import ClusterIndex, MosaicConfig
from mosaic_sglang.config import MosaicConfigError
from mosaic_sglang.clusters.mass import always_log_mass, banded_log_mass, mass_shares
from mosaic_sglang.clusters.scoring import score_clusters
from mosaic_sglang.retrieval.budget import fill_budget_exact, mass_budget

NEG = float("-inf")


def test_mass_budget_by_hand():
    scores = torch.tensor([[0.05, 0.25, 0.05]])  # shares of the total per token: masses 0.2, 0.5, 0.2
    costs = torch.tensor([[4, 2, 4]])
    covered = torch.tensor([0.1])  # attended anyway: 0.1 + 0.9 = 1; order: unit 1, then units 0, 2 (stable)
    assert mass_budget(scores, costs, 0.5, 100, covered).tolist() == [2]  # 0.1 + 0.5 crosses 0.5
    assert mass_budget(scores, costs, 0.7, 100, covered).tolist() == [6]  # + 0.2 of unit 0 crosses 0.7
    assert mass_budget(scores, costs, 1.0, 100, covered).tolist() == [10]
    assert mass_budget(scores, costs, 0.7, 3, covered).tolist() == [3]  # the token budget caps it
    take = fill_budget_exact(scores, costs, mass_budget(scores, costs, 0.7, 100, covered))
    assert take.tolist() == [[4, 2, 0]]


def test_mass_budget_counts_what_is_attended_anyway():
    scores = torch.tensor([[0.05, 0.15, 0.025]])  # shares of the total per token: masses 0.2, 0.3, 0.05
    costs = torch.tensor([[4, 2, 2]])
    covered = torch.tensor([0.45])  # the always-attended part: 0.45 + 0.55 = 1
    assert mass_budget(scores, costs, 0.7, 100, covered=covered).tolist() == [2]  # 0.45 + 0.3 crosses 0.7
    assert mass_budget(scores, costs, 0.9, 100, covered=covered).tolist() == [6]  # + 0.2 = 0.95
    assert mass_budget(scores, costs, 0.4, 100, covered=covered).tolist() == [0]  # reached without clusters


def test_mass_shares_are_exact_for_clusters_of_identical_keys():
    # spread 0: the log-normal estimate is exact, so the shares are the true softmax mass per cluster
    g = torch.Generator().manual_seed(1)
    rows, heads, group, dim, clusters = 2, 2, 3, 8, 5
    centroids = torch.randn(rows, clusters, heads, dim, generator=g)
    sizes = torch.tensor([[3, 1, 4, 2, 0], [2, 2, 2, 2, 2]])
    always = torch.randn(rows, 6, heads, dim, generator=g)
    queries = torch.randn(rows, 2, heads * group, dim, generator=g)
    shares = mass_shares(queries, centroids, torch.zeros(rows, clusters, heads), sizes, always_log_mass(queries, always))
    for r in range(rows):
        keys = torch.cat([always[r]] + [centroids[r, c:c + 1].expand(int(sizes[r, c]), -1, -1) for c in range(clusters)])
        owner = torch.cat([torch.full((6,), -1)] + [torch.full((int(sizes[r, c]),), c) for c in range(clusters)])
        kv = keys.repeat_interleave(group, 1)  # [N, Hq, D] as repeat_kv
        p = torch.softmax(torch.einsum("thd,nhd->thn", queries[r], kv) / dim ** 0.5, -1).mean((0, 1))  # [N]
        assert shares.covered[r].item() == pytest.approx(p[owner == -1].sum().item(), abs=1e-5)
        for c in range(clusters):
            if sizes[r, c] == 0:
                assert shares.per_token[r, c] == float("-inf")
            else:
                assert (shares.per_token[r, c] * sizes[r, c]).item() == pytest.approx(p[owner == c].sum().item(), abs=1e-5)


def test_mass_budget_ignores_units_that_cannot_be_taken():
    scores = torch.tensor([[0.2, NEG, 0.1, 0.0], [NEG, NEG, NEG, NEG]])
    costs = torch.tensor([[3, 5, 0, 4], [1, 1, 1, 1]])
    # row 0: only unit 0 is takeable with mass > 0 (unit 2 costs nothing, unit 3 has no mass)
    assert mass_budget(scores, costs, 1.0, torch.tensor([10, 10]), torch.zeros(2)).tolist() == [3, 0]


def _index(config, seed=0, frames=12, per_frame=16, layers=2, heads=2, dim=16):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(frames // 3, heads, dim, generator=g) * 0.5  # scenes close enough to share the mass
    keys = centres.repeat_interleave(3 * per_frame, 0)[None].expand(layers, -1, -1, -1)
    keys = keys + 0.3 * torch.randn(layers, frames * per_frame, heads, dim, generator=g)
    index = ClusterIndex(config, num_layers=layers, num_kv_heads=heads, head_dim=dim)
    index.append(keys.contiguous(), torch.arange(frames * per_frame) // per_frame)
    index.maintain()
    query = 0.5 * torch.randn(layers, 1, 4 * heads, dim, generator=g) + 2 * centres[1].repeat_interleave(4, 0)[None, None]
    return index, query


def _estimated_mass(index, query, selection):
    """Per layer: the estimated share of the clusters' mass in the clusters the selection took."""
    summaries = index.layer_summaries(torch.arange(index.num_layers))
    config = index.config
    scores = score_clusters(query, summaries.centroid, summaries.spread, summaries.cost, rule=config.score,
                            reduce=config.query_reduce)
    mass = torch.where(torch.isfinite(scores), scores * summaries.cost, 0.0)
    members = index.view().assign[index.view().group_of_layer]  # [L, N] cluster of each position
    out = []
    for layer in range(index.num_layers):
        taken = members[layer, selection.layer(layer)]
        chosen = torch.unique(taken[taken >= 0])
        out.append(float(mass[layer, chosen].sum() / mass[layer].sum()))
    return out


@pytest.mark.parametrize("target", [0.5, 0.8, 0.95])
def test_mass_mode_reaches_the_target_with_fewer_tokens(target):
    tokens = MosaicConfig(budget=96, sink_tokens=0, recent_window=0, **ONLINE)  # one list per layer
    index, query = _index(tokens)
    fixed = index.select(query)
    mass_index, _ = _index(tokens.replace(budget_mode="mass", mass_target=target))
    chosen = mass_index.select(query)
    reached = _estimated_mass(mass_index, query, chosen)
    if target < 0.9:  # (measured on this index: 0.5 -> ~31 tokens, 0.8 -> ~70 of the 96 budget)
        assert torch.all(chosen.sizes() < fixed.sizes())
        assert all(target - 1e-6 <= r < target + 0.1 for r in reached), reached
    else:  # the budget binds before 0.95 is reached: the token budget is the cap
        assert torch.equal(chosen.sizes(), fixed.sizes()) and all(r < target for r in reached), reached


def test_mass_mode_is_monotone_and_target_one_is_the_token_mode():
    base = MosaicConfig(budget=80, sink_tokens=2, recent_window=8)
    index, query = _index(base)
    sizes = []
    for target in (0.3, 0.6, 0.9):
        mass_index, _ = _index(base.replace(budget_mode="mass", mass_target=target))
        sizes.append(mass_index.select(query).sizes())
    assert torch.all(sizes[0] <= sizes[1]) and torch.all(sizes[1] <= sizes[2])
    full_mass, _ = _index(base.replace(budget_mode="mass", mass_target=1.0))
    same = full_mass.select(query)
    fixed = index.select(query)
    assert torch.equal(same.indptr, fixed.indptr) and torch.equal(same.indices, fixed.indices)


def test_a_budget_covering_the_video_is_exact_only_at_target_one():
    config = MosaicConfig(budget=10_000, sink_tokens=0, recent_window=0, budget_mode="mass", **ONLINE)
    index, query = _index(config.replace(mass_target=1.0))
    assert index.select(query).sizes().tolist() == [index.num_tokens] * index.num_layers
    partial, _ = _index(config.replace(mass_target=0.5))
    assert all(n < partial.num_tokens for n in partial.select(query).sizes().tolist())


@pytest.mark.parametrize("options, message", [
    ({"mass_target": 0.0}, "'mass_target': expected a number in (0, 1], got 0.0"),
    ({"mass_target": 1.5}, "'mass_target': expected a number in (0, 1], got 1.5"),
    ({"budget_mode": "mass", "score": "centroid"}, "'score': expected 'size_weighted' with budget_mode='mass'"),
    ({"budget_mode": "probability"}, "'budget_mode': expected one of ['tokens', 'mass'], got 'probability'"),
])
def test_mass_options_are_checked(options, message):
    with pytest.raises(MosaicConfigError) as caught:
        MosaicConfig.from_dict(options)
    assert message in str(caught.value)


def test_always_log_mass_takes_long_queries_in_chunks(monkeypatch):
    """A prefill chunk's always part holds the chunk itself: the logits are taken a few query tokens at a time
    (same result), causality per token included."""
    import math

    from mosaic_sglang.clusters import mass

    g = torch.Generator().manual_seed(2)
    queries, keys = torch.randn(1, 9, 4, 8, generator=g), torch.randn(1, 11, 2, 8, generator=g)
    visible = torch.arange(11)[None, :] <= torch.arange(2, 11)[:, None]  # query t sees keys up to 2 + t
    whole = always_log_mass(queries, keys, visible[None])
    monkeypatch.setattr(mass, "_LOGIT_ELEMENTS", 4 * 11 * 2)  # two query tokens per chunk
    torch.testing.assert_close(always_log_mass(queries, keys, visible[None]), whole)
    for t in (0, 8):  # query 0 sees 3 keys, query 8 all 11; head 1's group of query heads 2-3
        logits = keys[0, :, 1] @ queries[0, t, 3] / math.sqrt(8)
        assert whole[0, 1, t * 2 + 1].item() == pytest.approx(torch.logsumexp(logits[: 3 + t], 0).item(), abs=1e-5)
    assert torch.equal(always_log_mass(queries, keys[:, :0]), torch.full((1, 2, 18), float("-inf")))


@pytest.mark.parametrize("band", [1, 3, 20])
def test_banded_log_mass_is_each_querys_last_band_of_keys(band):
    g = torch.Generator().manual_seed(4)
    queries, keys = torch.randn(2, 10, 4, 8, generator=g), torch.randn(2, 10, 2, 8, generator=g)
    got = banded_log_mass(queries, keys, band)
    t, s = torch.arange(10)[:, None], torch.arange(10)[None, :]
    want = always_log_mass(queries, keys, ((s <= t) & (s > t - band))[None])  # the same band, all at once
    torch.testing.assert_close(got, want)
    if band >= 10:  # a band as long as the chunk: plain causal attention's log-sum-exp
        torch.testing.assert_close(got, always_log_mass(queries, keys, (s <= t)[None]))
