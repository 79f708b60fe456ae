"""`selection_quality` on hand-made cases whose answers are known in closed form."""

from __future__ import annotations

import math

import pytest
import torch

from mosaic_sglang.retrieval import selection_quality
from mosaic_sglang.retrieval import Selection


def _sel(per_layer: list[list[int]]) -> Selection:
    """A `Selection` from explicit per-layer position lists."""
    sizes = torch.tensor([len(p) for p in per_layer], dtype=torch.int64)
    indptr = torch.zeros(len(per_layer) + 1, dtype=torch.int64)
    indptr[1:] = sizes.cumsum(0)
    indices = torch.tensor([i for p in per_layer for i in sorted(p)], dtype=torch.int64)
    return Selection(indptr, indices, sizes)


def _dominant(n: int = 8, pos: int = 3, hq: int = 1, hkv: int = 1, d: int = 4):
    """Queries/keys where every query head puts ~all its weight on position `pos`."""
    k = torch.zeros(1, n, hkv, d)
    k[0, pos, :, 0] = 60.0  # logit 30 vs 0 elsewhere: weight 1 - ~7e-13
    q = torch.zeros(1, 2, hq, d)
    q[..., 0] = 1.0
    v = torch.randn(1, n, hkv, d, generator=torch.Generator().manual_seed(0))
    return q, k, v


def test_dominant_key_attended_gives_full_recall_and_no_error():
    q, k, v = _dominant()
    m = selection_quality(q, k, v, _sel([[3]]))
    assert m.mass_recall.item() == pytest.approx(1.0, abs=1e-6)
    assert m.output_error.item() == pytest.approx(0.0, abs=1e-5)
    assert m.topk_recall.item() == pytest.approx(1 / 8)  # 8 visible < top-10: 1 of the 8 "top" positions


def test_dominant_key_missed_gives_zero_mass_recall():
    q, k, v = _dominant()
    m = selection_quality(q, k, v, _sel([[0, 1, 2, 4, 5]]))
    assert m.mass_recall.item() == pytest.approx(0.0, abs=1e-6)
    assert m.output_error.item() > 0.1


def test_full_set_is_exact():
    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(3, 5, 4, 8, generator=g), torch.randn(3, 40, 2, 8, generator=g), torch.randn(3, 40, 2, 8, generator=g)
    m = selection_quality(q, k, v, _sel([list(range(40))] * 3))
    torch.testing.assert_close(m.mass_recall, torch.ones(3))
    torch.testing.assert_close(m.topk_recall, torch.ones(3))
    assert m.output_error.max().item() < 1e-5


def test_uniform_attention_mass_is_fraction_attended():
    n = 20
    q, k, v = torch.zeros(1, 1, 1, 4), torch.zeros(1, n, 1, 4), torch.randn(1, n, 1, 4)
    m = selection_quality(q, k, v, _sel([list(range(5))]))
    assert m.mass_recall.item() == pytest.approx(5 / n)


def test_gqa_maps_query_head_to_its_kv_head():
    # 4 query heads, 2 KV heads: q heads 0,1 read KV head 0 (dominant at 2); q heads 2,3 read KV head 1 (at 6).
    n, d = 8, 4
    k = torch.zeros(1, n, 2, d)
    k[0, 2, 0, 0] = 60.0
    k[0, 6, 1, 0] = 60.0
    q = torch.zeros(1, 1, 4, d)
    q[..., 0] = 1.0
    v = torch.randn(1, n, 2, d)
    assert selection_quality(q, k, v, _sel([[2]])).mass_recall.item() == pytest.approx(0.5, abs=1e-6)
    assert selection_quality(q, k, v, _sel([[2, 6]])).mass_recall.item() == pytest.approx(1.0, abs=1e-6)
    # The repeat_interleave order, not tiling: KV head 1 must not serve query head 1.
    q2 = q.clone()
    q2[0, 0, 2:] = 0.0  # heads 2,3 uniform over 8 positions
    got = selection_quality(q2, k, v, _sel([[2]])).mass_recall.item()
    assert got == pytest.approx((1 + 1 + 1 / n + 1 / n) / 4, abs=1e-6)


def test_causal_visibility_and_top10():
    # 12 positions, logits increasing with position; query 0 sees 0..5, query 1 sees all.
    n = 12
    k = torch.zeros(1, n, 1, 2)
    k[0, :, 0, 0] = torch.arange(n, dtype=torch.float32)
    q = torch.zeros(1, 2, 1, 2)
    q[..., 0] = 1.0
    v = torch.randn(1, n, 1, 2)
    sel = _sel([list(range(6, 12))])  # only positions the first query cannot see
    m = selection_quality(q, k, v, sel, query_positions=torch.tensor([5, 11]), scale=1.0)
    w = torch.softmax(torch.arange(n, dtype=torch.float32), 0)
    assert m.mass_recall.item() == pytest.approx((0.0 + w[6:].sum().item()) / 2, abs=1e-6)
    # Top-10 of query 1 = positions 2..11, of which 6 attended; query 0 (6 visible) hits none.
    assert m.topk_recall.item() == pytest.approx((0 + 6 / 10) / 2)
    # Query 0 sees nothing attended: its output is taken as 0, error exactly 1.
    assert m.output_error.item() > 0.5


def test_output_error_matches_closed_form():
    # Two positions, values e0 and e1, equal weights; attend only position 0.
    k = torch.zeros(1, 2, 1, 2)
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 2, 1, 2)
    q = torch.zeros(1, 1, 1, 2)
    m = selection_quality(q, k, v, _sel([[0]]))
    # o = (0.5, 0.5), o_S = (1, 0): |(0.5, -0.5)| / |(0.5, 0.5)| = 1.
    assert m.output_error.item() == pytest.approx(1.0, abs=1e-6)
    assert m.mass_recall.item() == pytest.approx(0.5)


def test_layer_chunking_does_not_change_results(monkeypatch):
    g = torch.Generator().manual_seed(2)
    q, k, v = torch.randn(5, 3, 4, 8, generator=g), torch.randn(5, 30, 2, 8, generator=g), torch.randn(5, 30, 2, 8, generator=g)
    sel = _sel([list(range(0, 30, s + 2)) for s in range(5)])
    whole = selection_quality(q, k, v, sel)
    import mosaic_sglang.retrieval.quality as metrics

    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 1)  # one layer per chunk
    for a, b in zip(whole, selection_quality(q, k, v, sel)):
        torch.testing.assert_close(a, b)


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="num_qo_heads"):
        selection_quality(torch.zeros(1, 1, 3, 4), torch.zeros(1, 5, 2, 4), torch.zeros(1, 5, 2, 4), _sel([[0]]))
    with pytest.raises(ValueError, match="keys"):
        selection_quality(torch.zeros(1, 1, 2, 4), torch.zeros(2, 5, 2, 4), torch.zeros(2, 5, 2, 4), _sel([[0]]))
    with pytest.raises(ValueError, match="indices"):
        selection_quality(torch.zeros(1, 1, 2, 4), torch.zeros(1, 5, 2, 4), torch.zeros(1, 5, 2, 4), _sel([[7]]))


def test_mass_recall_is_log_sum_exp_share():
    g = torch.Generator().manual_seed(3)
    q, k, v = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 50, 1, 16, generator=g), torch.randn(1, 50, 1, 16, generator=g)
    logits = (k[0, :, 0] @ q[0, 0, 0]) / math.sqrt(16)
    chosen = [1, 7, 8, 30]
    expect = torch.softmax(logits, 0)[chosen].sum().item()
    assert selection_quality(q, k, v, _sel([chosen])).mass_recall.item() == pytest.approx(expect, rel=1e-5)
