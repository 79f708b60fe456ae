"""The accuracy report from known per-question results (no server)."""

from __future__ import annotations

import pytest

from mosaic_sglang.frontend.evaluation.paired_stats import mcnemar_exact, wilson_interval
from mosaic_sglang.frontend.evaluation.qa_report import format_table, summarize
from mosaic_sglang.frontend.evaluation.qa_runner import ItemResult


def _results(setting, outcomes, *, attended=1.0, kv=1000, ttft=0.5, errors=()):
    out = []
    for i, ok in enumerate(outcomes):
        err = "HTTP 400: bad" if i in errors else ""
        out.append(ItemResult(qid=f"q{i}", setting=setting, answer="A", predicted="A" if ok else ("" if err else "B"),
                              correct=bool(ok), response="A" if ok else "B", ttft_s=ttft * (i + 1), latency_s=1.0,
                              prompt_tokens=900, cached_tokens=0, attended_fraction=attended, device_kv_tokens=kv + i,
                              category="digit" if i % 2 else "shape", error=err))
    return out


def test_summary_numbers():
    dense = _results("dense", [1, 1, 1, 0, 0, 1, 0, 1, 1, 0])
    mosaic = _results("mosaic-2048", [1, 0, 1, 1, 1, 1, 1, 1, 0, 1], attended=0.25, kv=300, errors=(1,))
    base, other = summarize({"dense": dense, "mosaic-2048": mosaic}, baseline="dense", resamples=2000)
    assert (base["correct"], base["questions"], base["accuracy"]) == (6, 10, 0.6)
    assert base["accuracy_ci95"] == pytest.approx(list(wilson_interval(6, 10)))
    assert "diff_vs_baseline" not in base and base["attended_fraction"] == 1.0
    assert other["accuracy"] == 0.8 and other["diff_vs_baseline"] == pytest.approx(0.2)
    assert (other["baseline_only_correct"], other["setting_only_correct"]) == (2, 4)
    assert other["mcnemar_p"] == pytest.approx(mcnemar_exact(2, 4))
    assert other["failed"] == 1  # the failed request counts as wrong and is left out of the latency means
    assert other["mean_ttft_ms"] == pytest.approx(1000 * 0.5 * (55 - 2) / 9)
    assert other["peak_device_kv_tokens"] == 309 and other["mean_device_kv_tokens"] == pytest.approx(300 + (45 - 1) / 9)
    assert other["attended_fraction"] == 0.25
    assert base["accuracy_by_category"] == {"digit": 0.6, "shape": 0.6}
    table = format_table([base, other])
    assert "| dense | 60.0 % (" in table and "| mosaic-2048 | 80.0 % (" in table and "+20.0 pt" in table
    assert "| 2 / 4 |" in table and "25.0 %" in table


def test_settings_must_answer_the_same_questions():
    with pytest.raises(ValueError, match="setting 'mosaic': expected answers to the baseline's 3 questions"):
        summarize({"dense": _results("dense", [1, 0, 1]), "mosaic": _results("mosaic", [1, 0])}, baseline="dense")
    with pytest.raises(ValueError, match="baseline: expected one of"):
        summarize({"dense": _results("dense", [1])}, baseline="nope")
