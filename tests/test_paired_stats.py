"""The accuracy statistics against values computed by hand."""

from __future__ import annotations

import math

import pytest

from mosaic_sglang.frontend.evaluation.paired_stats import (accuracy, compare_paired, mcnemar_exact, paired_bootstrap,
                                                   wilson_interval)

Z95 = 1.959963984540054


def _wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    p, z2 = k / n, Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(8, 10), (0, 12), (12, 12), (37, 50)])
def test_wilson_interval_matches_the_formula(k, n):
    low, high = wilson_interval(k, n)
    assert (low, high) == pytest.approx(_wilson_by_hand(k, n), abs=1e-9)


def test_wilson_8_of_10_is_the_textbook_interval():
    # (0.8 + 0.19207) / 1.38415 ± 1.95996 · sqrt(0.016 + 0.0096037) / 1.38415
    low, high = wilson_interval(8, 10)
    assert round(low, 4) == 0.4902 and round(high, 4) == 0.9433


def test_mcnemar_exact_by_hand():
    # b=2, c=8: P(X <= 2 | n=10, 1/2) = (1 + 10 + 45) / 1024, two-sided doubles it
    assert mcnemar_exact(2, 8) == pytest.approx(112 / 1024, abs=1e-12)
    assert mcnemar_exact(8, 2) == pytest.approx(112 / 1024, abs=1e-12)
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32, abs=1e-12)  # 2 · (1/2)^5
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0


def test_paired_comparison_counts_discordant_questions():
    dense = [1, 1, 1, 0, 0, 1, 0, 1, 1, 0]
    mosaic = [1, 0, 1, 1, 1, 1, 1, 1, 0, 1]  # b = 2 (q1, q8), c = 4 (q3, q4, q6, q9)
    result = compare_paired(dense, mosaic)
    assert (result.baseline_only, result.other_only) == (2, 4)
    assert result.difference == pytest.approx(0.2)
    assert result.p_value == pytest.approx(2 * (1 + 6 + 15) / 64)  # P(X <= 2 | n=6) doubled = 0.6875
    assert result.low < 0.2 < result.high and -1 <= result.low and result.high <= 1


def test_bootstrap_of_a_constant_difference_is_that_difference():
    diff, low, high = paired_bootstrap([0] * 20, [1] * 20)
    assert (diff, low, high) == (1.0, 1.0, 1.0)


def test_bootstrap_interval_has_the_right_width():
    # 100 pairs, 30 gains, 10 losses: diff 0.2, sd of per-question diff = sqrt(0.4 - 0.04) = 0.6,
    # so the 95 % interval is about 0.2 ± 1.96 · 0.06
    base = [0] * 30 + [1] * 10 + [1] * 60
    other = [1] * 30 + [0] * 10 + [1] * 60
    diff, low, high = paired_bootstrap(base, other, resamples=20000, seed=1)
    assert diff == pytest.approx(0.2)
    assert low == pytest.approx(0.2 - Z95 * 0.06, abs=0.012) and high == pytest.approx(0.2 + Z95 * 0.06, abs=0.012)
    assert paired_bootstrap(base, other, resamples=20000, seed=1) == (diff, low, high)  # seeded


def test_accuracy_and_bad_inputs():
    acc = accuracy([True, False, True, True])
    assert (acc.correct, acc.total, acc.value) == (3, 4, 0.75)
    assert (acc.low, acc.high) == pytest.approx(_wilson_by_hand(3, 4))
    with pytest.raises(ValueError, match="same questions"):
        compare_paired([1, 0], [1])
    with pytest.raises(ValueError, match="correct <= total"):
        wilson_interval(5, 4)
