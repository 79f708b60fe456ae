"""The table, the goals and the results file of `gpu_decode_step.py`, and its pool sizing (which (N, bs)
fit in the card's free memory). No kernels here: rows in, text and JSON out.

A row (one variant at one (N, bs, budget)) holds: ``n``, ``bs``, ``budget`` (None for dense rows),
``variant``, ``mode`` ('graph' / 'eager' / 'cpu'), ``ms`` (median per decode step, all layers), ``gb``
(bytes read / 1e9), ``tbps``, ``floor_ms`` (bytes / measured D2D copy bandwidth), ``x_floor``,
``speedup`` (fastest dense row's ms / ms), ``select_share`` (``mosaic_reselect`` only), ``err`` (layer 0
vs the fp32 reference; None when nothing is attended) and ``gpu_numbers`` (False on a CPU smoke run).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

import torch

GiB = 1 << 30
MARGIN_BYTES = 2 * GiB
"""Kept free beyond the estimate: CUDA context, cuBLAS / Triton workspaces, CUDA-graph pools."""
GOALS = {"keep_vs_dense": 10.0, "reselect_vs_dense": 3.0, "reselect_vs_topk": 2.0, "dense_x_floor": 2.0,
         "select_share": 0.10}
"""Issue 10's targets at 256K, batch 1: kept ≥ 10× faster than dense; re-selecting ≥ 3× faster than dense and
≥ 2× faster than token top-k; dense within 2× of the bytes/bandwidth floor; selection ≤ 10 % of a step."""
DENSE = ("dense_sdpa", "dense_k5", "flashinfer_dense")


def plan_pool(pairs, need_bytes: Callable[[int, int, int], int], device, max_pool_tokens=None):
    """The pool size (tokens) and the (N, bs) pairs left out, with why.

    ``need_bytes(n, bs, pool_tokens)``: device bytes (pool included) that measuring (n, bs) over a pool of
    ``pool_tokens`` takes. On CUDA the budget is ``torch.cuda.mem_get_info()``'s free bytes minus
    `MARGIN_BYTES`; the pool is the largest ``N·bs`` that fits, allocated once. On the CPU only
    ``max_pool_tokens`` limits it."""
    if device.type == "cuda":
        torch.cuda.empty_cache()  # cached blocks count as used in mem_get_info
        free = torch.cuda.mem_get_info()[0] - MARGIN_BYTES
    else:
        free = float("inf")
    cap = max_pool_tokens if max_pool_tokens is not None else float("inf")
    fitting = [n * bs for n, bs in pairs if n * bs <= cap and need_bytes(n, bs, n * bs) <= free]
    pool = max(fitting, default=0)
    skipped = {}
    for n, bs in pairs:
        if n * bs > cap:
            skipped[(n, bs)] = f"pool of {n * bs + 1:,} slots over --max-pool-tokens {max_pool_tokens}"
        elif n * bs > pool or need_bytes(n, bs, pool) > free:
            skipped[(n, bs)] = (f"needs ~{need_bytes(n, bs, n * bs) / 1e9:.1f} GB (pool of {n * bs + 1:,} slots, "
                                f"working set, {MARGIN_BYTES / 1e9:.1f} GB margin); "
                                f"{(free + MARGIN_BYTES) / 1e9:.1f} GB free (torch.cuda.mem_get_info)")
    return pool, skipped


class Report:
    """Collects rows, prints them in groups (derived columns need the whole group), the goals lines and
    skip lines; writes the results file; counts check failures."""

    def __init__(self, *, name: str, gpu: bool, copy_gbps: float, check_limit: float, config: dict):
        self.name, self.gpu, self.copy_gbps, self.check_limit = name, gpu, copy_gbps, check_limit
        self.config = config
        self.rows, self.pending, self.skipped, self.failures, self.goal_rows = [], [], [], [], []
        self.notes: list[str] = []

    def header(self, args) -> None:
        warn = "" if self.gpu else "  *** CPU smoke run: timings are NOT GPU numbers ***"
        print(f"device: {self.name}; torch {torch.__version__}; layers {args.layers}, {args.q_heads}q/"
              f"{args.kv_heads}kv x {args.head_dim}, {args.dtype}, budgets {args.budgets}; D2D copy "
              f"{self.copy_gbps:.0f} GB/s (read + write){warn}")
        print(f"{'N':>7} {'bs':>3} {'budget':>6} {'variant':>22} {'mode':>5} {'ms/step':>9} {'speedup':>8} "
              f"{'GB':>8} {'TB/s':>6} {'floor':>7} {'x floor':>7} {'sel %':>6} {'rel err':>8}")

    def note(self, text: str) -> None:
        """A line for the table and the results file (e.g. FlashInfer's plan() cost, or why it is absent)."""
        self.flush()  # after the rows it is about
        print(text)
        self.notes.append(text)

    def add(self, *, n, bs, budget, variant, mode, ms, nbytes, err) -> dict:
        floor_ms = nbytes / (self.copy_gbps * 1e9) * 1e3
        row = dict(n=n, bs=bs, budget=budget, variant=variant, mode=mode, ms=ms, gb=nbytes / 1e9,
                   tbps=nbytes / 1e9 / ms, floor_ms=floor_ms, x_floor=ms / floor_ms if floor_ms else None,
                   speedup=None, select_share=None, err=err, gpu_numbers=self.gpu)
        if err is not None and not err < self.check_limit:  # NaN fails too
            self.failures.append(f"{variant} at N={n} bs={bs} budget={budget}: rel err {err:.2e} over "
                                 f"{self.check_limit:.0e}")
        self.rows.append(row)
        self.pending.append(row)
        return row

    def _find(self, n, bs, budget, variant):
        return next((r for r in self.rows if (r["n"], r["bs"], r["budget"], r["variant"]) == (n, bs, budget, variant)),
                    None)

    def flush(self) -> None:
        """Fill the derived columns of the rows added since the last flush and print them."""
        for r in self.pending:
            dense = [d["ms"] for d in self.rows if (d["n"], d["bs"]) == (r["n"], r["bs"]) and d["variant"] in DENSE]
            r["speedup"] = min(dense) / r["ms"] if dense else None
            if r["variant"] == "mosaic_reselect":
                sel = self._find(r["n"], r["bs"], r["budget"], "mosaic_select_only")
                r["select_share"] = sel["ms"] / r["ms"] if sel else None
            fmt = (lambda v, spec, none="-": none if v is None else format(v, spec))  # noqa: E731
            print(f"{r['n']:>7} {r['bs']:>3} {fmt(r['budget'], 'd'):>6} {r['variant']:>22} {r['mode']:>5} "
                  f"{r['ms']:>9.3f} {fmt(r['speedup'], '.2f') + 'x':>8} {r['gb']:>8.3f} {r['tbps']:>6.2f} "
                  f"{r['floor_ms']:>7.3f} {fmt(r['x_floor'], '.2f'):>7} "
                  f"{fmt(None if r['select_share'] is None else 100 * r['select_share'], '.1f'):>6} "
                  f"{fmt(r['err'], '.1e'):>8}")
        self.pending = []

    def skip(self, n: int, bs: int, why: str) -> None:
        self.flush()
        print(f"{n:>7} {bs:>3}  skipped: {why}")
        self.skipped.append(dict(n=n, bs=bs, why=why))

    def goals(self, n: int, bs: int, budget: int) -> None:
        """One line: the measured ratios of (n, bs, budget) next to issue 10's targets (judged on CUDA only)."""
        self.flush()
        ms = {r["variant"]: r for r in self.rows if (r["n"], r["bs"]) == (n, bs) and r["budget"] in (None, budget)}
        dense = min((ms[v] for v in DENSE if v in ms), key=lambda r: r["ms"], default=None)
        need = ("mosaic_keep", "mosaic_reselect", "mosaic_select_only", "token_topk")
        if dense is None or any(v not in ms for v in need):
            return
        got = {"keep_vs_dense": dense["ms"] / ms["mosaic_keep"]["ms"],
               "reselect_vs_dense": dense["ms"] / ms["mosaic_reselect"]["ms"],
               "reselect_vs_topk": ms["token_topk"]["ms"] / ms["mosaic_reselect"]["ms"],
               "dense_x_floor": dense["x_floor"],
               "select_share": ms["mosaic_select_only"]["ms"] / ms["mosaic_reselect"]["ms"]}
        met = {k: (got[k] <= GOALS[k]) if k in ("dense_x_floor", "select_share") else (got[k] >= GOALS[k])
               for k in GOALS}
        verdict = (lambda k: (" met" if met[k] else " MISSED") if self.gpu else "")  # noqa: E731
        print(f"  goals N={n} bs={bs} budget={budget} (dense = {dense['variant']}): "
              f"keep {got['keep_vs_dense']:.2f}x dense (>= 10x{verdict('keep_vs_dense')}) | "
              f"reselect {got['reselect_vs_dense']:.2f}x dense (>= 3x{verdict('reselect_vs_dense')}), "
              f"{got['reselect_vs_topk']:.2f}x token_topk (>= 2x{verdict('reselect_vs_topk')}) | "
              f"dense {got['dense_x_floor']:.2f}x floor (<= 2x{verdict('dense_x_floor')}) | "
              f"selection {100 * got['select_share']:.1f}% of reselect (<= 10%{verdict('select_share')})"
              + ("" if self.gpu else "  [CPU: not GPU numbers, not judged]"))
        self.goal_rows.append(dict(n=n, bs=bs, budget=budget, dense_variant=dense["variant"], **got,
                                   met={k: met[k] for k in GOALS} if self.gpu else None, gpu_numbers=self.gpu))

    def finish(self, out: str | None) -> None:
        """Print the check failures, write ``out`` (JSON), and exit 1 if any check failed."""
        self.flush()
        for failure in self.failures:
            print(f"CHECK FAILED: {failure}", file=sys.stderr)
        if out:
            config = {k: v for k, v in self.config.items() if isinstance(v, (int, float, str, list, bool, type(None)))}
            Path(out).write_text(json.dumps(dict(
                device=self.name, gpu_numbers=self.gpu, copy_gbps=self.copy_gbps, config=config, rows=self.rows,
                goals=self.goal_rows, skipped=self.skipped, notes=self.notes, failures=self.failures), indent=1) + "\n")
        if self.failures:
            raise SystemExit(1)
