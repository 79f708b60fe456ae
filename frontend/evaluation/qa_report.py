"""From per-question results of several settings to the accuracy report: one row per setting.

Per setting: accuracy with its 95 % Wilson interval; against the baseline setting (dense, the first one
given) the paired difference with its bootstrap interval, the discordant counts and McNemar's exact p
(`paired_stats`); the mean attended fraction, TTFT (mean and median), device KV per request (mean and
peak), failed requests, and accuracy per category. Every setting must have answered the same questions.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Dict, List, Sequence

from .paired_stats import accuracy, compare_paired
from .qa_runner import ItemResult

__all__ = ["summarize", "format_table"]


def summarize(results: Dict[str, Sequence[ItemResult]], *, baseline: str, resamples: int = 10000,
              seed: int = 0) -> List[dict]:
    """One summary dict per setting, in the order of ``results`` (``baseline`` must be one of them)."""
    if baseline not in results:
        raise ValueError(f"baseline: expected one of {list(results)}, got {baseline!r}")
    order = [r.qid for r in results[baseline]]
    rows = []
    for setting, items in results.items():
        if [r.qid for r in items] != order:
            raise ValueError(f"setting {setting!r}: expected answers to the baseline's {len(order)} questions in "
                             f"order, got {len(items)} different ones")
        ok = [r.correct for r in items]
        acc = accuracy(ok)
        row = {"setting": setting, "questions": acc.total, "correct": acc.correct, "accuracy": acc.value,
               "accuracy_ci95": [acc.low, acc.high], "failed": sum(1 for r in items if r.error)}
        if setting != baseline:
            diff = compare_paired([r.correct for r in results[baseline]], ok, resamples=resamples, seed=seed)
            row.update(diff_vs_baseline=diff.difference, diff_ci95=[diff.low, diff.high],
                       baseline_only_correct=diff.baseline_only, setting_only_correct=diff.other_only,
                       mcnemar_p=diff.p_value)
        answered = [r for r in items if not r.error] or list(items)
        ttfts = [r.ttft_s for r in answered]
        kv = [r.device_kv_tokens for r in answered]
        row.update(attended_fraction=statistics.fmean(r.attended_fraction for r in answered),
                   mean_ttft_ms=1000 * statistics.fmean(ttfts), median_ttft_ms=1000 * statistics.median(ttfts),
                   mean_device_kv_tokens=statistics.fmean(kv), peak_device_kv_tokens=max(kv),
                   unparsed_answers=sum(1 for r in answered if not r.predicted))
        by_category = defaultdict(list)
        for r in items:
            by_category[r.category or "all"].append(r.correct)
        row["accuracy_by_category"] = {c: sum(v) / len(v) for c, v in sorted(by_category.items())}
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """The report as a Markdown table (percentages to one decimal)."""
    head = ("| setting | accuracy (95 % CI) | Δ vs baseline (95 % CI) | b / c | McNemar p | attended | TTFT ms "
            "(mean / p50) | device KV (mean / peak) | failed | unparsed |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        pct = lambda x: f"{100 * x:.1f}"
        acc = f"{pct(r['accuracy'])} % ({pct(r['accuracy_ci95'][0])}–{pct(r['accuracy_ci95'][1])})"
        if "diff_vs_baseline" in r:
            d = f"{100 * r['diff_vs_baseline']:+.1f} pt ({100 * r['diff_ci95'][0]:+.1f}…{100 * r['diff_ci95'][1]:+.1f})"
            bc, p = f"{r['baseline_only_correct']} / {r['setting_only_correct']}", f"{r['mcnemar_p']:.3g}"
        else:
            d, bc, p = "baseline", "—", "—"
        lines.append(f"| {r['setting']} | {acc} | {d} | {bc} | {p} | {pct(r['attended_fraction'])} % | "
                     f"{r['mean_ttft_ms']:.0f} / {r['median_ttft_ms']:.0f} | "
                     f"{r['mean_device_kv_tokens']:.0f} / {r['peak_device_kv_tokens']} | {r['failed']} | "
                     f"{r['unparsed_answers']} |")
    return "\n".join(lines)
