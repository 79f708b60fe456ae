"""Accuracy with a confidence interval, and the paired difference of two settings on the same questions.

Every setting of the accuracy harness answers the *same* questions, so a comparison is paired: per
question, both right, both wrong, or one right and the other wrong. Only the discordant questions say
anything about the difference:

* ``b`` = right with the baseline (dense) and wrong with the other setting, ``c`` = the reverse;
* **McNemar's exact test**: under "no difference" each discordant question is a fair coin, so
  ``p = min(1, 2 · P(X <= min(b, c)))`` with ``X ~ Binomial(b + c, 1/2)`` (two-sided; ``p = 1`` when
  ``b + c = 0``);
* **paired bootstrap** of the accuracy difference: resample questions (pairs kept together) and take
  the percentile interval of the mean of ``other − baseline``.

Single accuracies use the **Wilson score interval** (well-behaved at 0 %, 100 % and small n, unlike the
normal approximation). The binomial test and the interval are scipy's (``scipy.stats.binomtest``); the
bootstrap is a seeded numpy resampling so a report is reproducible.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

__all__ = ["Accuracy", "PairedDifference", "accuracy", "wilson_interval", "mcnemar_exact", "paired_bootstrap",
           "compare_paired"]


class Accuracy(NamedTuple):
    """Share of questions answered right, with its Wilson interval (``low``, ``high``)."""

    correct: int
    total: int
    value: float
    low: float
    high: float


class PairedDifference(NamedTuple):
    """``other − baseline`` on the same questions.

    Attributes:
        difference: accuracy difference (fraction, e.g. ``0.05`` = 5 points).
        low, high: its paired-bootstrap percentile interval.
        baseline_only: ``b`` questions right only with the baseline.
        other_only: ``c`` questions right only with the other setting.
        p_value: McNemar's exact two-sided p.
    """

    difference: float
    low: float
    high: float
    baseline_only: int
    other_only: int
    p_value: float


def _scipy_stats():
    try:
        from scipy import stats
    except ImportError as error:  # scipy comes with sglang; a bare client install may lack it
        raise ImportError("the accuracy statistics need scipy: pip install scipy") from error
    return stats


def wilson_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of ``correct / total`` (``(0, 1)`` when ``total == 0``)."""
    if not 0 <= correct <= total:
        raise ValueError(f"wilson_interval: expected 0 <= correct <= total, got correct={correct}, total={total}")
    if total == 0:
        return 0.0, 1.0
    ci = _scipy_stats().binomtest(correct, total).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def accuracy(correct: Sequence[bool], confidence: float = 0.95) -> Accuracy:
    """Accuracy of per-question outcomes, with its Wilson interval."""
    n, k = len(correct), int(sum(bool(c) for c in correct))
    low, high = wilson_interval(k, n, confidence)
    return Accuracy(k, n, k / n if n else 0.0, low, high)


def mcnemar_exact(baseline_only: int, other_only: int) -> float:
    """McNemar's exact two-sided p from the discordant counts ``b`` and ``c`` (see module docstring)."""
    if baseline_only < 0 or other_only < 0:
        raise ValueError(f"mcnemar_exact: expected counts >= 0, got b={baseline_only}, c={other_only}")
    n = baseline_only + other_only
    if n == 0:
        return 1.0
    return float(_scipy_stats().binomtest(min(baseline_only, other_only), n, 0.5, alternative="two-sided").pvalue)


def paired_bootstrap(baseline: Sequence[bool], other: Sequence[bool], *, confidence: float = 0.95,
                     resamples: int = 10000, seed: int = 0) -> tuple[float, float, float]:
    """``(difference, low, high)``: mean of ``other − baseline`` and its percentile bootstrap interval,
    resampling questions with replacement (``resamples`` draws, ``seed``-ed)."""
    a, b = np.asarray(baseline, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_bootstrap: expected two outcome lists of one length, got {a.shape} and {b.shape}")
    if a.size == 0:
        return 0.0, 0.0, 0.0
    diff = b - a
    draws = np.random.default_rng(seed).integers(0, diff.size, size=(resamples, diff.size))
    means = diff[draws].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(diff.mean()), float(low), float(high)


def compare_paired(baseline: Sequence[bool], other: Sequence[bool], *, confidence: float = 0.95,
                   resamples: int = 10000, seed: int = 0) -> PairedDifference:
    """The paired comparison of two settings' per-question outcomes (same questions, same order)."""
    if len(baseline) != len(other):
        raise ValueError(f"compare_paired: expected outcomes for the same questions, got {len(baseline)} "
                         f"and {len(other)}")
    b = sum(1 for x, y in zip(baseline, other) if x and not y)
    c = sum(1 for x, y in zip(baseline, other) if y and not x)
    difference, low, high = paired_bootstrap(baseline, other, confidence=confidence, resamples=resamples, seed=seed)
    return PairedDifference(difference, low, high, b, c, mcnemar_exact(b, c))
