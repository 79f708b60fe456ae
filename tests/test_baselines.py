"""Baselines: shared budget accounting, exact cases, hand-made cases where the right unit is obvious."""

from __future__ import annotations

import pytest
import torch

from functools import partial

from mosaic_sglang.retrieval.baselines import (ClusterKVRetriever, DenseRetriever, FrameBlockRetriever,
                                               InfLLMBlockRetriever, OracleTokenTopK, QuestPageRetriever)
from mosaic_sglang.config import MosaicConfig
from mosaic_sglang.retrieval import selection_quality
from mosaic_sglang.retrieval import always_attended_positions

L, HKV, HQ, D = 3, 2, 4, 8
# units of 16 tokens (the defaults, 128-token blocks and ~16-token clusters, exceed these small streams)
INFLLM16 = partial(InfLLMBlockRetriever, block_size=16, representatives=4)
CLUSTERKV16 = partial(ClusterKVRetriever, tokens_per_cluster=16)
ALL = [DenseRetriever, OracleTokenTopK, FrameBlockRetriever, QuestPageRetriever, INFLLM16, CLUSTERKV16]
BUDGETED = [OracleTokenTopK, FrameBlockRetriever, QuestPageRetriever, INFLLM16, CLUSTERKV16]


def _stream(seed: int = 0, frames: int = 12, per_frame: int = 10, text_every: int = 3):
    """Random keys for `frames` frames with 1 timestamp text token before every `text_every`-th frame."""
    g = torch.Generator().manual_seed(seed)
    fids = []
    for f in range(frames):
        if f % text_every == 0:
            fids.append(-1)
        fids += [f] * per_frame
    fids = torch.tensor([-1, -1] + fids)  # a 2-token text prefix
    keys = torch.randn(L, fids.numel(), HKV, D, generator=g)
    queries = torch.randn(L, 3, HQ, D, generator=g)
    return keys, fids, queries


def _make(cls, budget, **kw):
    cfg = MosaicConfig(budget=budget, sink_tokens=kw.pop("sink_tokens", 2), recent_window=kw.pop("recent_window", 5))
    return cls(cfg, num_layers=L, num_kv_heads=HKV, head_dim=D, **kw)


def _check_accounting(sel, fids, cfg, *, exact: bool, slack: int = 1):
    always = always_attended_positions(fids.clone(), cfg)
    n_cand = fids.numel() - always.numel()
    for layer in range(L):
        pos = sel.layer(layer)
        assert torch.equal(pos, pos.unique()), f"{layer=}: not sorted/unique"
        assert int(pos.min()) >= 0 and int(pos.max()) < fids.numel()
        assert torch.isin(always, pos).all(), f"{layer=}: always-attended positions missing"
        extra = pos.numel() - always.numel()
        expected = min(cfg.budget, n_cand)
        assert extra == expected if exact else extra <= expected, f"{layer=} {extra=} {expected=}"
        assert extra > expected - slack, f"{layer=}: {extra=} leaves more than one unit ({slack}) unused"


@pytest.mark.parametrize("cls", BUDGETED)
@pytest.mark.parametrize("budget", [0, 1, 7, 30, 64])
def test_budget_accounting(cls, budget):
    keys, fids, q = _stream()
    r = _make(cls, budget)
    r.append(keys, fids)
    sel = r.select(q)
    # Whole units only: the oracle's unit is a token (exact), a frame costs <= 10, a page <= 16.
    if cls is CLUSTERKV16:  # a cluster's size is whatever k-means made it: the unused rest is below the largest
        slack = int(torch.bincount(r._assign[r._assign >= 0]).max()) if budget else 1
    else:
        slack = {OracleTokenTopK: 1, FrameBlockRetriever: 10, QuestPageRetriever: 16, INFLLM16: 16}[cls]
    _check_accounting(sel, fids, r.config, exact=cls is OracleTokenTopK, slack=slack)
    assert sel.num_units.shape == (L,)
    assert (sel.num_units >= 0).all() and (sel.num_units <= max(budget, 0)).all()
    if budget == 0:
        assert (sel.num_units == 0).all()


@pytest.mark.parametrize("cls", ALL)
def test_full_budget_attends_everything(cls):
    keys, fids, q = _stream(1)
    r = _make(cls, budget=fids.numel())
    r.append(keys, fids)
    sel = r.select(q)
    assert torch.equal(sel.sizes(), torch.full((L,), fids.numel()))
    m = selection_quality(q, keys, torch.randn_like(keys), sel)
    torch.testing.assert_close(m.mass_recall, torch.ones(L))


@pytest.mark.parametrize("cls", ALL)
def test_streaming_appends_match_one_append(cls):
    keys, fids, q = _stream(2)
    whole = _make(cls, budget=25)
    whole.append(keys, fids)
    parts = _make(cls, budget=25)
    for lo, hi in [(0, 7), (7, 8), (8, 51), (51, fids.numel())]:  # cuts inside frames and pages
        parts.append(keys[:, lo:hi], fids[lo:hi])
    a, b = whole.select(q), parts.select(q)
    assert torch.equal(a.indptr, b.indptr) and torch.equal(a.indices, b.indices)
    assert torch.equal(a.num_units, b.num_units)


@pytest.mark.parametrize("cls", ALL)
def test_deterministic(cls):
    keys, fids, q = _stream(3)
    sels = []
    for _ in range(2):
        r = _make(cls, budget=17)
        r.append(keys, fids)
        sels.append(r.select(q))
    assert torch.equal(sels[0].indices, sels[1].indices) and torch.equal(sels[0].indptr, sels[1].indptr)


def _planted(per_frame: int = 8, frames: int = 6, target: int = 3):
    """Frame `target` holds keys aligned with the query direction e0; everything else is orthogonal noise."""
    g = torch.Generator().manual_seed(4)
    n = per_frame * frames
    keys = torch.randn(L, n, HKV, D, generator=g) * 0.1
    keys[..., 0] = 0.0
    keys[:, target * per_frame : (target + 1) * per_frame, :, 0] = 5.0
    fids = torch.arange(frames).repeat_interleave(per_frame)
    q = torch.zeros(L, 2, HQ, D)
    q[..., 0] = 1.0
    return keys, fids, q, torch.arange(target * per_frame, (target + 1) * per_frame)


@pytest.mark.parametrize("cls", [c for c in BUDGETED if c is not CLUSTERKV16])  # k-means: stray noise keys may
def test_obvious_frame_is_found(cls):  # join the planted cluster (see test_clusterkv_groups_keys_by_direction...)
    keys, fids, q, want = _planted(per_frame=16)  # frames = pages: every unit type can hit it exactly
    r = _make(cls, budget=16, sink_tokens=0, recent_window=0)
    r.append(keys, fids)
    sel = r.select(q)
    for layer in range(L):
        assert torch.equal(sel.layer(layer), want)
    if cls is FrameBlockRetriever:
        assert sel.num_units.tolist() == [1] * L


def test_frame_blocks_pick_frame_not_its_neighbour_page():
    # A 16-token page straddles two 8-token frames: at an 8-token budget the frame block fits exactly,
    # the page that holds the target does not fit at all (whole units only); at 16 it drags in the neighbour.
    keys, fids, q, want = _planted(per_frame=8, target=3)
    for budget, frame_want, page_want in [(8, want, want[:0]), (16, None, torch.arange(16, 32))]:
        frames, pages = (_make(c, budget=budget, sink_tokens=0, recent_window=0) for c in (FrameBlockRetriever, QuestPageRetriever))
        frames.append(keys, fids)
        pages.append(keys, fids)
        if frame_want is not None:
            assert torch.equal(frames.select(q).layer(0), frame_want)
        assert torch.equal(pages.select(q).layer(0), page_want)


def test_unit_fill_is_the_greedy_prefix_walk():
    # fill_units (baselines) is fill_budget (also ClusterIndex's) over unit costs: check it against a
    # plain loop that walks units best-first, skips costless ones and stops at the first that does not fit.
    from mosaic_sglang.retrieval.baselines.stream import fill_units

    g = torch.Generator().manual_seed(10)
    sizes = torch.randint(1, 9, (30,), generator=g)
    unit_of = torch.arange(30).repeat_interleave(sizes)
    candidate = torch.rand(unit_of.numel(), generator=g) > 0.2
    candidate[unit_of == 7] = False  # one unit with no candidate: never chosen
    scores = torch.randn(4, 30, generator=g)
    cost = torch.bincount(unit_of[candidate], minlength=30)
    for budget in [0, 5, 40, 1000]:
        chosen, n = fill_units(scores, unit_of, candidate, budget)
        for layer in range(4):
            taken, used = set(), 0
            for u in sorted(range(30), key=lambda u: -float(scores[layer, u])):
                if cost[u] == 0:
                    continue
                if used + int(cost[u]) > budget:
                    break
                taken.add(u)
                used += int(cost[u])
            want = candidate & torch.tensor([int(u) in taken for u in unit_of])
            assert torch.equal(chosen[layer], want), (budget, layer)
            assert int(n[layer]) == len(taken) and 7 not in taken


def test_quest_bound_picks_page_with_one_strong_channel():
    # Page 2 has one token with a huge key channel 1; its mean is diluted, but the max bound sees it.
    g = torch.Generator().manual_seed(5)
    keys = torch.randn(L, 64, HKV, D, generator=g) * 0.1
    keys[:, 40, :, 1] = 20.0
    fids = torch.arange(64) // 16  # one frame per page
    q = torch.zeros(L, 1, HQ, D)
    q[..., 1] = 1.0
    r = _make(QuestPageRetriever, budget=16, sink_tokens=0, recent_window=0)
    r.append(keys, fids)
    sel = r.select(q)
    assert torch.equal(sel.layer(1), torch.arange(32, 48))
    assert sel.num_units.tolist() == [1] * L


@pytest.mark.parametrize("reduce", ["mean", "max"])
def test_single_token_units_equal_the_oracle(reduce):
    # Page size 1 makes Quest's bound exact, one token per frame makes a frame mean the key itself.
    g = torch.Generator().manual_seed(6)
    n = 40
    keys, q = torch.randn(L, n, HKV, D, generator=g), torch.randn(L, 2, HQ, D, generator=g)
    fids = torch.arange(n)
    cfg = MosaicConfig(budget=9, sink_tokens=1, recent_window=3, query_reduce=reduce)
    sels = []
    for cls, kw in [(OracleTokenTopK, {}), (QuestPageRetriever, {"page_size": 1}), (FrameBlockRetriever, {})]:
        r = cls(cfg, num_layers=L, num_kv_heads=HKV, head_dim=D, **kw)
        r.append(keys, fids)
        sels.append(r.select(q))
    for s in sels[1:]:
        assert torch.equal(s.indices, sels[0].indices)


def test_probability_oracle_is_mass_optimal():
    keys, fids, q = _stream(7)
    values = torch.randn_like(keys)
    cfg = MosaicConfig(budget=20, sink_tokens=2, recent_window=5, query_reduce="mean")
    best = OracleTokenTopK(cfg, num_layers=L, num_kv_heads=HKV, head_dim=D, use_probabilities=True)
    best.append(keys, fids)
    top = selection_quality(q, keys, values, best.select(q)).mass_recall
    for cls in BUDGETED:
        for reduce in ("mean", "max"):
            r = cls(cfg.replace(query_reduce=reduce), num_layers=L, num_kv_heads=HKV, head_dim=D)
            r.append(keys, fids)
            other = selection_quality(q, keys, values, r.select(q)).mass_recall
            assert (top >= other - 1e-6).all(), f"{cls.__name__} {reduce}: {other} > optimum {top}"


def test_oracle_chunking_matches(monkeypatch):
    import mosaic_sglang.retrieval.baselines.oracle_topk as oracle

    keys, fids, q = _stream(8)
    r = _make(OracleTokenTopK, budget=13)
    r.append(keys, fids)
    a = r.select(q)
    monkeypatch.setattr(oracle, "_CHUNK_ELEMENTS", 1)
    assert torch.equal(a.indices, r.select(q).indices)


def test_recall_non_decreasing_in_budget_for_oracle():
    keys, fids, q = _stream(9)
    values = torch.randn_like(keys)
    last = torch.zeros(L)
    for budget in [0, 5, 20, 60, 200]:
        r = _make(OracleTokenTopK, budget=budget)
        r.append(keys, fids)
        m = selection_quality(q, keys, values, r.select(q)).mass_recall
        assert (m >= last - 1e-6).all()
        last = m


@pytest.mark.parametrize("cls", ALL)
def test_rejects_bad_inputs(cls):
    r = _make(cls, budget=4)
    with pytest.raises(ValueError, match="nothing appended"):
        r.select(torch.zeros(L, 1, HQ, D))
    with pytest.raises(ValueError, match="keys"):
        r.append(torch.zeros(L, 5, HKV + 1, D), torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ValueError, match="frame_ids"):
        r.append(torch.zeros(L, 5, HKV, D), torch.zeros(4, dtype=torch.int64))
    r.append(torch.zeros(L, 5, HKV, D), torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ValueError, match="num_qo_heads"):
        r.select(torch.zeros(L, 1, HKV + 1, D))


def test_frame_blocks_reject_decreasing_frames():
    r = _make(FrameBlockRetriever, budget=4)
    r.append(torch.zeros(L, 3, HKV, D), torch.tensor([2, 2, 3]))
    with pytest.raises(ValueError, match="non-decreasing"):
        r.append(torch.zeros(L, 2, HKV, D), torch.tensor([1, 1]))


def test_infllm_representatives_are_the_most_attended_keys_of_their_block():
    # one block of 4 tokens: three near-identical keys attend each other, the outlier is attended by nobody
    r = InfLLMBlockRetriever(MosaicConfig(budget=4, sink_tokens=0, recent_window=0), num_layers=1, num_kv_heads=1,
                             head_dim=2, block_size=4, representatives=2)
    keys = torch.tensor([[3.0, 0.0], [3.0, 0.1], [-3.0, 0.0], [3.0, -0.1]]).reshape(1, 4, 1, 2)
    r.append(keys, torch.zeros(4, dtype=torch.int64))
    reps = r._reps[0, 0, 0]  # [2, D]
    assert all(float(rep[0]) == 3.0 for rep in reps)  # two of the three agreeing keys, not the outlier
    with pytest.raises(ValueError, match="representatives <= block_size"):
        InfLLMBlockRetriever(MosaicConfig(), num_layers=1, num_kv_heads=1, head_dim=2, block_size=2, representatives=3)


def test_clusterkv_groups_keys_by_direction_not_position():
    # two interleaved directions: k-means must put every other token together, whatever its frame
    keys = torch.zeros(1, 32, 1, 4)
    keys[0, 0::2, 0, 0] = 1.0
    keys[0, 1::2, 0, 1] = 1.0
    keys += 0.01 * torch.randn(keys.shape, generator=torch.Generator().manual_seed(0))
    r = ClusterKVRetriever(MosaicConfig(budget=16, sink_tokens=0, recent_window=0), num_layers=1, num_kv_heads=1,
                           head_dim=4, tokens_per_cluster=16)
    r.append(keys, torch.arange(32) // 8)
    q = torch.zeros(1, 1, 1, 4)
    q[..., 1] = 1.0
    assert r.select(q).indices.tolist() == list(range(1, 32, 2))
