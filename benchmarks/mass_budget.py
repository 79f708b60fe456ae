"""Mass-targeted selection vs a fixed token budget: the recall each buys and the tokens each attends.

One command (``python benchmarks/mass_budget.py``; ``--quick`` for a CI smoke run). On both trace
families of `retrieval_quality.py` (synthetic video-like KV; the real SmolLM2-135M caption stream), one
`ClusterIndex` per trace is built frame by frame (the online baseline, `trace_families.ONLINE_BASELINE`:
online clusters, one membership, one cluster list per layer), then the question's queries select:

* ``tokens``: the fixed budget at 2, 5, 10 and 25 % of the context (``budget_mode='tokens'``);
* ``mass``: ``budget_mode='mass'`` at each ``--targets`` p with the 25 % budget as the cap: per layer the
  fewest clusters (in score order) whose estimated share of the clusters' attention mass reaches p;
* ``tokens-per-head`` (the 10 % budget) and ``mass-per-head`` (each target): the same with
  ``selection_heads='per_kv_head'``: each KV head ranks and fills on its own, quality measured per head on
  that head's attention, tokens per (layer, head) list (what each head attends).

Per row: attention-mass recall, top-10 recall and output error against exact attention (the same
`selection_quality` as `retrieval_quality.py`), selected tokens per layer beyond the always-attended set
(mean, and min–max over layers: a mass selection gives flat layers more), clusters per layer and tokens
per cluster. Then per trace the selected tokens the mass mode needs for the fixed 10 % budget's mass
recall (interpolated on its recall-vs-tokens curve) and the ratio (the goal: ≥ 1.5× fewer at equal recall).
The same comparison with the *true* masses (``oracle-tokens``: per layer the budget's tokens of highest
exact mass; ``oracle-mass``: per layer the fewest tokens reaching p of the exact mass) shows what a
per-layer mass target buys with a perfect estimator, and the *allocation ceiling* (one threshold on the
exact masses over all layers, the optimum for the mean over layers) what any split of tokens between
layers can buy at all.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mosaic_sglang.clusters import ClusterIndex  # noqa: E402
from mosaic_sglang.config import MosaicConfig  # noqa: E402
from mosaic_sglang.retrieval import Selection, always_attended_positions, selection_quality  # noqa: E402
from mosaic_sglang.traces import Trace  # noqa: E402
from per_head_selection import head_masks, quality_per_head  # noqa: E402
from trace_families import (ONLINE_BASELINE, add_trace_arguments, exact_mean_probs, ingest, load_traces,  # noqa: E402
                            write_json)

BUDGETS = (0.02, 0.05, 0.10, 0.25)
CAP = 0.25
"""The mass mode's token cap, as a share of the context (the largest fixed budget of the table)."""
TARGETS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975)
REFERENCE = 0.10
"""The fixed budget the mass mode is matched against (the issue's 10 %)."""


def _row(trace: Trace, index: ClusterIndex, config: MosaicConfig, always: int, mode: str, setting: str) -> dict:
    index.config = config  # a selection-time knob: ingest never reads the budget or the mode
    selection = index.select(trace.queries)
    quality = selection_quality(trace.queries, trace.keys, trace.values, selection,
                                query_positions=trace.query_positions).mean()
    extra = selection.sizes().float() - always
    units = selection.num_units.float()
    return {"mode": mode, "setting": setting, "budget": config.budget, "mass_recall": quality.mass_recall.item(),
            "top10_recall": quality.topk_recall.item(), "output_error": quality.output_error.item(),
            "selected_tokens": extra.mean().item(), "selected_min": extra.min().item(),
            "selected_max": extra.max().item(), "clusters": units.mean().item(),
            "tokens_per_cluster": (extra.sum() / units.sum().clamp(min=1)).item()}


def _per_head_row(trace: Trace, index: ClusterIndex, config: MosaicConfig, always: int, mode: str, setting: str) -> dict:
    """As `_row` with ``selection_heads='per_kv_head'``: quality per KV head on that head's attention
    (`quality_per_head`), selected tokens and clusters per (layer, head) list."""
    index.config = config
    selection = index.select(trace.queries)  # rows l · H + h
    num_layers, n, hkv, _ = trace.keys.shape
    heads = [Selection.from_mask(m, torch.zeros(num_layers)) for m in head_masks(selection, num_layers, hkv, n)]
    quality = quality_per_head(trace, heads, hkv)
    extra = selection.sizes().float() - always
    units = selection.num_units.float()
    return {"mode": mode, "setting": setting, "budget": config.budget, "mass_recall": quality["mass_recall"],
            "top10_recall": quality["top10_recall"], "output_error": quality["output_error"],
            "selected_tokens": extra.mean().item(), "selected_min": extra.min().item(),
            "selected_max": extra.max().item(), "clusters": units.mean().item(),
            "tokens_per_cluster": (extra.sum() / units.sum().clamp(min=1)).item()}


def _oracle_selection(probs: torch.Tensor, always: torch.Tensor, *, budget: int | None = None,
                      target: float | None = None) -> Selection:
    """Per layer: the always-attended positions plus the eligible tokens of highest true mass, ``budget``
    of them, or the fewest reaching ``target`` of the total mass (always part counted), capped by none."""
    mask = torch.zeros_like(probs, dtype=torch.bool)
    mask[:, always] = True
    eligible = probs.masked_fill(mask, -1.0)
    order = eligible.argsort(dim=1, descending=True)
    ranked = eligible.gather(1, order).clamp(min=0)
    if budget is not None:
        take = (torch.arange(probs.shape[1])[None, :] < budget).expand_as(probs)
    else:
        covered = probs[:, always].sum(1, keepdim=True)
        take = (covered + torch.cumsum(ranked, 1) - ranked) < target
    take = take & (eligible.gather(1, order) >= 0)
    chosen = torch.zeros_like(mask).scatter_(1, order, take) | mask
    return Selection.from_mask(chosen, take.sum(1))


def allocation_ceiling(probs: torch.Tensor, always: torch.Tensor, budget: int) -> dict:
    """The most any allocation of tokens across layers can save at the reference recall, with exact
    masses: per layer the ``budget`` best eligible tokens (uniform) against one threshold over all layers
    (every token above it, whatever its layer: the optimum for the mean over layers); returns the mean
    tokens per layer the global threshold needs for the uniform split's mean mass recall, and the ratio."""
    num_layers = probs.shape[0]
    eligible = probs.clone()
    eligible[:, always] = -1.0
    covered = probs[:, always].sum()
    uniform = (covered + eligible.topk(budget, dim=1).values.clamp(min=0).sum()) / num_layers
    ranked = torch.sort(eligible.flatten(), descending=True).values.clamp(min=0).cumsum(0)
    tokens = (int(((covered + ranked) / num_layers < uniform).sum()) + 1) / num_layers
    return {"uniform_recall": uniform.item(), "global_tokens": tokens, "budget": budget, "ratio": budget / tokens}


def _oracle_rows(trace: Trace, always: torch.Tensor, budget: int, targets, probs: torch.Tensor) -> list[dict]:
    """The same comparison with the true masses: a per-layer mass target, whatever the estimator."""
    settings = [(f"{100 * REFERENCE:g} %", dict(budget=budget))] + [(f"p={p:g}", dict(target=p)) for p in targets]
    rows = []
    for setting, how in settings:
        selection = _oracle_selection(probs, always, **how)
        quality = selection_quality(trace.queries, trace.keys, trace.values, selection,
                                    query_positions=trace.query_positions).mean()
        extra = selection.sizes().float() - always.numel()
        rows.append({"mode": "oracle-tokens" if "budget" in how else "oracle-mass", "setting": setting,
                     "budget": budget, "mass_recall": quality.mass_recall.item(),
                     "top10_recall": quality.topk_recall.item(), "output_error": quality.output_error.item(),
                     "selected_tokens": extra.mean().item(), "selected_min": extra.min().item(),
                     "selected_max": extra.max().item(), "clusters": extra.mean().item(), "tokens_per_cluster": 1.0})
    return rows


def trace_rows(name: str, trace: Trace, targets) -> list[dict]:
    num_layers, n, hkv, d = trace.keys.shape
    base = MosaicConfig(budget_mode="tokens", **ONLINE_BASELINE)  # the rows turn on what their names say
    index = ClusterIndex(base, num_layers=num_layers, num_kv_heads=hkv, head_dim=d)
    ingest(index, trace)
    always = always_attended_positions(trace.frame_ids.clone(), base).numel()
    rows = []
    for frac in BUDGETS:
        budget = max(1, round(frac * n))
        rows.append(_row(trace, index, base.replace(budget=budget), always, "tokens", f"{100 * frac:g} %"))
    cap = max(1, round(CAP * n))
    for p in targets:
        config = base.replace(budget=cap, budget_mode="mass", mass_target=p)
        rows.append(_row(trace, index, config, always, "mass", f"p={p:g}"))
    per_head = base.replace(selection_heads="per_kv_head")
    rows.append(_per_head_row(trace, index, per_head.replace(budget=max(1, round(REFERENCE * n))), always,
                              "tokens-per-head", f"{100 * REFERENCE:g} %"))
    for p in targets:
        config = per_head.replace(budget=cap, budget_mode="mass", mass_target=p)
        rows.append(_per_head_row(trace, index, config, always, "mass-per-head", f"p={p:g}"))
    index.config = base
    positions = always_attended_positions(trace.frame_ids.clone(), base)
    probs = exact_mean_probs(trace)
    rows += _oracle_rows(trace, positions, max(1, round(REFERENCE * n)), targets, probs)
    for row in rows:
        row["trace"] = name
    return rows, {"trace": name, **allocation_ceiling(probs, positions, max(1, round(REFERENCE * n)))}


def matched(rows: list[dict], fixed: str = "tokens", adaptive: str = "mass") -> dict:
    """Selected tokens the ``adaptive`` mode needs for the ``fixed`` mode's mass recall at the reference
    budget, read off its recall-vs-tokens curve (linear between the two targets that bracket it), and
    the ratio to the reference's tokens (> 1: the adaptive mode needs fewer)."""
    reference = next(r for r in rows if r["mode"] == fixed and r["setting"] == f"{100 * REFERENCE:g} %")
    goal = reference["mass_recall"]
    curve = [(r["selected_tokens"], r["mass_recall"], r["setting"]) for r in rows if r["mode"] == adaptive]
    out = {"trace": reference["trace"], "modes": f"{adaptive} vs {fixed}", "reference_recall": goal,
           "reference_tokens": reference["selected_tokens"], "tokens": None, "between": None, "token_ratio": None}
    for (t0, r0, s0), (t1, r1, s1) in zip([(0.0, 0.0, "none")] + curve, curve):
        if r0 < goal <= r1:
            tokens = t0 + (goal - r0) / (r1 - r0) * (t1 - t0)
            out.update(tokens=tokens, between=f"{s0}..{s1}", token_ratio=reference["selected_tokens"] / max(tokens, 1e-9))
            break
    return out


def print_table(rows: list[dict]) -> None:
    print("| trace | mode | setting | mass recall | top-10 recall | output error | selected tokens (min–max) "
          "| clusters | tokens / cluster |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['trace']} | {r['mode']} | {r['setting']} | {r['mass_recall']:.3f} | {r['top10_recall']:.3f} | "
              f"{r['output_error']:.3f} | {r['selected_tokens']:.0f} ({r['selected_min']:.0f}–{r['selected_max']:.0f}) | "
              f"{r['clusters']:.1f} | {r['tokens_per_cluster']:.1f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_trace_arguments(parser)
    parser.add_argument("--targets", type=float, nargs="*", default=list(TARGETS))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows, matches, ceilings = [], [], []
    for name, trace in load_traces(args):
        part, ceiling = trace_rows(name, trace, args.targets)
        rows += part
        ceilings.append(ceiling)
        matches += [matched(part), matched(part, "tokens", "mass-per-head"), matched(part, "oracle-tokens", "oracle-mass")]
    print_table(rows)
    print()
    for m in matches:
        if m["tokens"] is None:
            print(f"[{m['trace']}, {m['modes']}] no target reached the fixed {100 * REFERENCE:g} % budget's mass recall "
                  f"{m['reference_recall']:.3f} under the {100 * CAP:g} % cap")
        else:
            print(f"[{m['trace']}, {m['modes']}] mass recall {m['reference_recall']:.3f} (the {100 * REFERENCE:g} % "
                  f"budget's, {m['reference_tokens']:.0f} tokens): ~{m['tokens']:.0f} tokens ({m['between']}), "
                  f"{m['token_ratio']:.2f}x fewer")
    for c in ceilings:
        print(f"[{c['trace']}, allocation ceiling] exact masses, one threshold over all layers: "
              f"{c['global_tokens']:.0f} tokens per layer for the uniform {c['budget']}'s mean mass recall "
              f"{c['uniform_recall']:.3f}: at most {c['ratio']:.2f}x fewer from moving tokens between layers")
    print(f"total {time.perf_counter() - started:.0f} s")
    write_json(args.out, {"rows": rows, "matched": matches, "allocation_ceiling": ceilings})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
