"""Mass-targeted selection vs a fixed token budget: the recall each buys and the tokens each attends.

One command (``python benchmarks/mass_budget.py``; ``--quick`` for a CI smoke run). On both trace
families of `retrieval_quality.py` (synthetic video-like KV; the real SmolLM2-135M caption stream), two
`ClusterIndex` per trace are built frame by frame (`CLUSTER_SETS`): the online baseline
(`trace_families.ONLINE_BASELINE`: online clusters, one membership, one list per layer) and the shipped
defaults (per-layer memberships of regrouped spans, the tail regrouped when the question arrives). On
each, the question's queries select:

* ``tokens``: the fixed budget at 2, 5, 10 and 25 % of the context, one list per layer;
* ``mass``: ``budget_mode='mass'`` at each ``--targets`` p with the 25 % budget as the cap: per layer the
  fewest clusters (in score order) whose estimated share of the total attention mass reaches p;
* ``tokens-per-head`` and ``mass-per-head``: the same with ``selection_heads='per_kv_head'`` (the
  defaults' lists): each KV head ranks and fills on its own, quality measured per head on that head's
  attention, tokens per (layer, head) list (what each head attends).

Per row: attention-mass recall, top-10 recall and output error against exact attention (the same
`selection_quality` as `retrieval_quality.py`), selected tokens per list beyond the always-attended set
(mean, and min–max over lists: a mass selection gives flat lists more), clusters per list and tokens per
cluster. Then per cluster set the selected tokens a mass mode needs for a fixed mode's 10 % mass recall
(interpolated on its recall-vs-tokens curve) and the ratio (the issue's goal: ≥ 1.5× fewer at equal
recall). The same comparison with the *true* masses (``oracle-tokens``: per layer the budget's tokens of
highest exact mass; ``oracle-mass``: per layer the fewest tokens reaching p) shows what a per-layer target
buys with a perfect estimator. Two kinds of *allocation ceiling*, over layers and over (layer, KV head)
lists, at the recall each fixed 10 % budget reached:

* `scorer_ceiling` ("Mosaic's order"): the bound on every rule that keeps Mosaic's ranking and only sets how
  many tokens each list attends, as a mass budget does: exact per-list recall curves on that ranking (best
  first between the measured budgets, so never below the truth), the best split of counts on them;
* `allocation_ceiling` (on single tokens, or on a cluster set's members): the same split question for the
  *exact* ranking, one threshold over all lists against the same count per list.
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
from trace_families import (ONLINE_BASELINE, add_trace_arguments, exact_head_probs, ingest, load_traces,  # noqa: E402
                            write_json)

CLUSTER_SETS = {"online": ONLINE_BASELINE, "defaults": {}}
"""The clusters each trace is selected from: the online baseline (`trace_families.ONLINE_BASELINE`) and the
shipped defaults (per-layer memberships of regrouped spans, the tail regrouped at the question)."""
BUDGETS = (0.02, 0.05, 0.10, 0.25)
CAP = 0.25
"""The mass mode's token cap, as a share of the context (the largest fixed budget of the table)."""
TARGETS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975)
SCORER_GRID = tuple(k / 100 for k in range(1, 26))
"""Budgets (shares of the context, up to the mass mode's cap) at which `scorer_ceiling` measures each list."""
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


def allocation_ceiling(mass: torch.Tensor, always: torch.Tensor, budget: int, recall: float | None = None) -> dict:
    """The most a split of tokens between lists can save at a mean mass recall, with exact masses *and* the
    exact order (each list's best positions first): uniform vs global splits of the same ideal ranking.

    ``always [M] int64``: always-attended positions (counted as covered, never as tokens). ``mass [G, N]
    float32``: each list's mass per position (G = layers, or layer · KV head lists; the exact
    probabilities, or a membership's cluster masses spread evenly over members: the fractional fill of
    whole clusters ranked by exact mass per token). Uniform: every list takes its best eligible positions,
    the same count for all (a fixed budget); global: one threshold over all lists (every position above it,
    whatever its list: the optimum for the mean over lists). ``recall``: the mean recall to reach (None:
    the uniform ``budget``'s). Returns both counts per list and their ratio (> 1: the global split needs
    fewer).
    """
    num_lists = mass.shape[0]
    eligible = mass.clone()
    eligible[:, always] = 0.0
    covered = mass[:, always].sum(1).mean().reshape(1)
    ranked = torch.sort(eligible, dim=1, descending=True).values
    uniform_curve = torch.cat([covered, covered + ranked.cumsum(1).mean(0)])  # [N + 1]: after b tokens per list
    global_curve = torch.cat([covered, covered + torch.sort(eligible.flatten(), descending=True).values.cumsum(0)
                              / num_lists])  # [G · N + 1]: after b tokens in all
    if recall is None:
        recall = uniform_curve[budget].item()
    uniform = int((uniform_curve < recall - 1e-7).sum())
    tokens = int((global_curve < recall - 1e-7).sum()) / num_lists
    return {"recall": recall, "uniform_tokens": uniform, "global_tokens": tokens,
            "ratio": uniform / tokens if tokens else None}


def cluster_spread(mass: torch.Tensor, assign: torch.Tensor) -> torch.Tensor:
    """``[G, N]``: each position's share of its cluster's exact mass (cluster mass / members), for lists
    ``mass [G, N]`` over layer memberships ``assign [L, N]`` (``-1``: always attended, kept as is); G is L
    or L · Hkv (lists l · Hkv + h share layer l's membership)."""
    per_layer = mass.shape[0] // assign.shape[0]
    assign = assign.repeat_interleave(per_layer, 0)
    member = assign >= 0
    safe = assign.clamp(min=0)
    num_c = int(assign.max()) + 1
    total = torch.zeros(mass.shape[0], num_c).scatter_add_(1, safe, torch.where(member, mass, 0.0))
    size = torch.zeros(mass.shape[0], num_c).scatter_add_(1, safe, member.float())
    return torch.where(member, (total / size.clamp(min=1)).gather(1, safe), mass)


def _attended_masks(selection: Selection, num_tokens: int) -> torch.Tensor:
    """``[G, N] bool``: each list's attended positions (rows as the selection's: layers, or l · Hkv + h)."""
    rows = torch.repeat_interleave(torch.arange(selection.num_layers), selection.sizes())
    mask = torch.zeros(selection.num_layers, num_tokens, dtype=torch.bool)
    mask[rows, selection.indices] = True
    return mask


def _upper_hull(t: torch.Tensor, r: torch.Tensor) -> list[tuple[float, float]]:
    """The upper concave hull of the points ``(t[k], r[k])`` (``t`` nondecreasing), from the first point."""
    hull: list[tuple[float, float]] = []
    for x, y in zip(t.tolist(), r.tolist()):
        if hull and x <= hull[-1][0]:
            if y <= hull[-1][1]:
                continue
            hull.pop()  # the same count, more recall: this point replaces it
        while len(hull) >= 2 and (hull[-1][1] - hull[-2][1]) * (x - hull[-2][0]) <= (y - hull[-2][1]) * (hull[-1][0] - hull[-2][0]):
            hull.pop()
        hull.append((x, y))
    return hull


def count_ceiling(curves: list[torch.Tensor], recall: float) -> float | None:
    """Fewest tokens per list (mean over lists) any choice of per-list counts needs for mean recall ``recall``,
    given each list's recall after t tokens (``curves[g] [T_g + 1]``, t = 0..T_g): the steepest segments of
    every list's concave hull first (the Lagrangian optimum; a fractional last segment). None: unreachable."""
    segments = []
    for curve in curves:
        hull = _upper_hull(torch.arange(len(curve), dtype=torch.float64), curve.double())
        segments += [((y1 - y0) / (x1 - x0), x1 - x0, y1 - y0) for (x0, y0), (x1, y1) in zip(hull, hull[1:])]
    lists = len(curves)
    got, spent = sum(float(c[0]) for c in curves) / lists, 0.0
    if got >= recall:
        return 0.0
    for _, dt, dr in sorted(segments, reverse=True):
        if got + dr / lists >= recall:
            return spent + (recall - got) / (dr / lists) * dt / lists
        got, spent = got + dr / lists, spent + dt / lists
    return None


def scorer_ceiling(trace: Trace, index: ClusterIndex, config: MosaicConfig, always: torch.Tensor,
                   mass: torch.Tensor, recall: float) -> dict:
    """The allocation ceiling on Mosaic's own ranking: an upper bound on what any rule that only sets each
    list's token count (a mass budget is one) can save at mean recall ``recall``, under the mass mode's cap.

    ``mass [G, N] float32``: exact masses, rows as ``config``'s lists (layers, or l · Hkv + h); ``always
    [M] int64``: the always-attended positions. Each list's selection is taken at every `SCORER_GRID`
    budget; the selections are nested prefixes of Mosaic's order (checked). Between two grid budgets the
    order of the added positions is not observed, so they are counted best first: each list's curve is
    exact at the grid and never below the true one between, and `count_ceiling` on those curves bounds
    every count rule. Uniform: the same budget for every list, on the exact grid points.
    """
    n = trace.keys.shape[1]
    masks = [torch.zeros(mass.shape[0], n, dtype=torch.bool)]
    masks[0][:, always] = True
    for frac in SCORER_GRID:
        index.config = config.replace(budget=max(1, round(frac * n)))
        masks.append(_attended_masks(index.select(trace.queries), n))
        if (masks[-2] & ~masks[-1]).any():
            raise RuntimeError(f"scorer_ceiling: the selection at {100 * frac:g} % drops positions of a smaller budget's")
    tokens = torch.stack([m.sum(1) for m in masks], 1).float() - always.numel()  # [G, K + 1]
    recalls = torch.stack([(mass * m).sum(1) for m in masks], 1)  # [G, K + 1]
    mean_t, mean_r = tokens.mean(0), recalls.mean(0)
    out = {"recall": recall, "uniform_tokens": None, "global_tokens": None, "ratio": None}
    above = (mean_r >= recall - 1e-6).nonzero()
    if not len(above):
        return out
    k = int(above[0])
    out["uniform_tokens"] = 0.0 if k == 0 else (mean_t[k - 1] + (recall - mean_r[k - 1]).clamp(min=0)
                                                / (mean_r[k] - mean_r[k - 1]) * (mean_t[k] - mean_t[k - 1])).item()
    curves = []
    for g in range(mass.shape[0]):
        steps = [mass[g, masks[k][g] & ~masks[k - 1][g]].sort(descending=True).values for k in range(1, len(masks))]
        curves.append(torch.cat([recalls[g, :1], torch.cat(steps)]).cumsum(0))
    out["global_tokens"] = count_ceiling(curves, recall)
    if out["global_tokens"]:
        out["ratio"] = out["uniform_tokens"] / out["global_tokens"]
    return out


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


def _cluster_rows(trace: Trace, label: str, options: dict, targets) -> tuple[list[dict], ClusterIndex, MosaicConfig]:
    """Every selection row on one cluster set: ``options`` over `MosaicConfig`'s defaults, ingested frame by
    frame, the tail regrouped when the question arrives where the options regroup it (as the server does)."""
    num_layers, n, hkv, d = trace.keys.shape
    base = MosaicConfig(**{"budget_mode": "tokens", "selection_heads": "shared", **options})
    index = ClusterIndex(base, num_layers=num_layers, num_kv_heads=hkv, head_dim=d)
    ingest(index, trace)
    if base.regroups_tail:
        index.regroup_tail()
    always = always_attended_positions(trace.frame_ids.clone(), base).numel()
    cap = max(1, round(CAP * n))
    per_head = base.replace(selection_heads="per_kv_head")
    rows = [_row(trace, index, base.replace(budget=max(1, round(f * n))), always, "tokens", f"{100 * f:g} %")
            for f in BUDGETS]
    rows += [_row(trace, index, base.replace(budget=cap, budget_mode="mass", mass_target=p), always, "mass", f"p={p:g}")
             for p in targets]
    rows += [_per_head_row(trace, index, per_head.replace(budget=max(1, round(f * n))), always, "tokens-per-head",
                           f"{100 * f:g} %") for f in BUDGETS]
    rows += [_per_head_row(trace, index, per_head.replace(budget=cap, budget_mode="mass", mass_target=p), always,
                           "mass-per-head", f"p={p:g}") for p in targets]
    index.config = base
    for row in rows:
        row["clusters_set"] = label
    return rows, index, base


def _ceilings(name: str, label: str, rows: list[dict], mass: dict, always: torch.Tensor, budget: int,
              assign: torch.Tensor | None, at_own_top: bool = True) -> list[dict]:
    """`allocation_ceiling` over layers (``mass["layers"] [L, N]``, one list per layer: the shared rows) and
    over (layer, KV head) lists (``mass["heads"] [L · Hkv, N]``: the per-head rows), at the recall the fixed
    10 % budget reached on ``label``'s clusters and (``at_own_top``) at the table's own top-``budget``
    recall; on single tokens (``assign`` None) or on the memberships ``assign [L, N]`` (`cluster_spread`).
    ``always [M]``: the always-attended positions."""
    out = []
    for lists, fixed, table in (("layers", "tokens", mass["layers"]), ("layer x head", "tokens-per-head", mass["heads"])):
        if assign is not None:
            table = cluster_spread(table, assign)
        reached = next(r["mass_recall"] for r in rows if r["mode"] == fixed and r["setting"] == f"{100 * REFERENCE:g} %")
        for at, recall in (("own top-budget", None), (f"{label} {fixed} 10 %", reached))[1 - at_own_top:]:
            c = allocation_ceiling(table, always, budget, recall)
            out.append({"trace": name, "units": "tokens" if assign is None else f"{label} clusters", "lists": lists,
                        "at": at, **c})
    return out


def trace_rows(name: str, trace: Trace, targets) -> tuple[list[dict], list[dict]]:
    """Rows of both cluster sets (`CLUSTER_SETS`) and the exact oracle; the allocation ceilings."""
    n = trace.keys.shape[1]
    budget = max(1, round(REFERENCE * n))
    mass = {"heads": exact_head_probs(trace)}  # [L, Hkv, N]
    mass["layers"] = mass["heads"].mean(1)
    mass["heads"] = mass["heads"].flatten(0, 1)  # lists l · Hkv + h, as per-head selections
    rows, ceilings = [], []
    positions = always_attended_positions(trace.frame_ids.clone(), MosaicConfig())  # sinks, window, text: every set's
    for label, options in CLUSTER_SETS.items():
        part, index, base = _cluster_rows(trace, label, options, targets)
        assert torch.equal(positions, always_attended_positions(trace.frame_ids.clone(), base))
        view = index.view()
        assign = view.assign[view.group_of_layer].clone()  # [L, N] each layer's membership
        assign[:, positions] = -1
        ceilings += _ceilings(name, label, part, mass, positions, budget, None, at_own_top=not ceilings)
        ceilings += _ceilings(name, label, part, mass, positions, budget, assign)
        for lists, fixed, heads in (("layers", "tokens", "shared"), ("layer x head", "tokens-per-head", "per_kv_head")):
            reached = next(r["mass_recall"] for r in part if r["mode"] == fixed and r["setting"] == f"{100 * REFERENCE:g} %")
            c = scorer_ceiling(trace, index, base.replace(selection_heads=heads), positions,
                               mass["layers" if heads == "shared" else "heads"], reached)
            ceilings.append({"trace": name, "units": f"{label} clusters, Mosaic's order", "lists": lists,
                             "at": f"{label} {fixed} 10 %", **c})
        index.config = base
        rows += part
    rows += [dict(r, clusters_set="exact tokens") for r in _oracle_rows(trace, positions, budget, targets, mass["layers"])]
    for row in rows:
        row["trace"] = name
    return rows, ceilings


def matched(rows: list[dict], fixed: str = "tokens", adaptive: str = "mass") -> dict:
    """Selected tokens the ``adaptive`` mode needs for the ``fixed`` mode's mass recall at the reference
    budget, read off its recall-vs-tokens curve (linear between the two targets that bracket it), and
    the ratio to the reference's tokens (> 1: the adaptive mode needs fewer). ``rows``: one cluster set's."""
    reference = next(r for r in rows if r["mode"] == fixed and r["setting"] == f"{100 * REFERENCE:g} %")
    goal = reference["mass_recall"]
    curve = [(r["selected_tokens"], r["mass_recall"], r["setting"]) for r in rows if r["mode"] == adaptive]
    out = {"trace": reference["trace"], "clusters_set": reference["clusters_set"], "modes": f"{adaptive} vs {fixed}",
           "reference_recall": goal, "reference_tokens": reference["selected_tokens"], "tokens": None,
           "between": None, "token_ratio": None}
    for (t0, r0, s0), (t1, r1, s1) in zip([(0.0, 0.0, "none")] + curve, curve):
        if r0 < goal <= r1:
            tokens = t0 + (goal - r0) / (r1 - r0) * (t1 - t0)
            out.update(tokens=tokens, between=f"{s0}..{s1}", token_ratio=reference["selected_tokens"] / max(tokens, 1e-9))
            break
    return out


PAIRS = (("tokens", "mass"), ("tokens", "mass-per-head"), ("tokens-per-head", "mass-per-head"))
"""(fixed, adaptive) modes matched on each cluster set; the oracle's pair is matched on the exact tokens."""


def print_table(rows: list[dict]) -> None:
    print("| trace | clusters | mode | setting | mass recall | top-10 recall | output error | selected tokens (min–max) "
          "| clusters / list | tokens / cluster |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['trace']} | {r['clusters_set']} | {r['mode']} | {r['setting']} | {r['mass_recall']:.3f} | "
              f"{r['top10_recall']:.3f} | {r['output_error']:.3f} | {r['selected_tokens']:.0f} "
              f"({r['selected_min']:.0f}–{r['selected_max']:.0f}) | {r['clusters']:.1f} | {r['tokens_per_cluster']:.1f} |")


def print_matches(matches: list[dict], ceilings: list[dict]) -> None:
    for m in matches:
        head = f"[{m['trace']}, {m['clusters_set']}, {m['modes']}]"
        if m["tokens"] is None:
            print(f"{head} no target reached the fixed {100 * REFERENCE:g} % budget's mass recall "
                  f"{m['reference_recall']:.3f} under the {100 * CAP:g} % cap")
        else:
            print(f"{head} mass recall {m['reference_recall']:.3f} (the {100 * REFERENCE:g} % budget's, "
                  f"{m['reference_tokens']:.0f} tokens): ~{m['tokens']:.0f} tokens ({m['between']}), "
                  f"{m['token_ratio']:.2f}x fewer")
    print()
    print("Allocation ceilings (exact masses: one threshold over all lists vs the same count per list)")
    print("| trace | units | lists | at the recall of | recall | uniform tokens / list | global tokens / list | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for c in ceilings:
        if c["ratio"] is None:
            print(f"| {c['trace']} | {c['units']} | {c['lists']} | {c['at']} | {c['recall']:.3f} | not reached | - | - |")
            continue
        print(f"| {c['trace']} | {c['units']} | {c['lists']} | {c['at']} | {c['recall']:.3f} | {c['uniform_tokens']:.0f} | "
              f"{c['global_tokens']:.0f} | {c['ratio']:.2f}x |")


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
        ceilings += ceiling
        for label in CLUSTER_SETS:
            mine = [r for r in part if r["clusters_set"] == label]
            matches += [matched(mine, fixed, adaptive) for fixed, adaptive in PAIRS]
        matches.append(matched([r for r in part if r["clusters_set"] == "exact tokens"], "oracle-tokens", "oracle-mass"))
    print_table(rows)
    print()
    print_matches(matches, ceilings)
    print(f"total {time.perf_counter() - started:.0f} s")
    write_json(args.out, {"rows": rows, "matched": matches, "allocation_ceiling": ceilings})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
