"""Every Triton kernel against its pure-torch reference, without pytest (a GPU box may have none): one line
per (kernel, dtype, shape) with the max abs error, the relative error and pass / FAIL; exit 1 on any FAIL.

Kernels: ``sparse_decode`` (K5), ``cluster_scoring`` (K1), ``exact_fill`` (K2), ``emit_members`` (K3),
``assemble_always`` (K4), ``assign_tokens`` (K6), ``extent_copy`` (K7 gather and scatter) and
``sparse_extend`` (SGLang's Triton extend kernel: skipped, saying so, when ``sglang`` is not importable).
Float outputs: ``max abs`` = max |got - ref|, ``rel`` = ‖got - ref‖ / ‖ref‖, pass = within the tolerance
the kernel tests use (``tests/kernels``; for SGLang's extend kernel, whose fp32 ``tl.dot`` is TF32 on a GPU,
the GPU value). Index and
copy outputs must be exact: ``max abs`` = max |got - ref|, ``rel`` = the share of entries that differ.
Outputs are poisoned first (NaN or -7), so an entry a kernel forgot to write fails. Shapes include
Qwen2.5-VL-7B's attention (28 query / 4 KV heads × 128) on a GPU; smaller ones under the interpreter.

dtypes: fp32, fp16 and bf16 on CUDA; under ``TRITON_INTERPRET=1`` on the CPU, fp32 and fp16 only for kernels
with a ``tl.dot`` (the interpreter's bf16 ``tl.dot`` is broken: those bf16 lines say "skipped").

    python benchmarks/gpu_kernel_check.py --out kernel_check.json         # a CUDA machine: torch + Triton
    TRITON_INTERPRET=1 python benchmarks/gpu_kernel_check.py --quick      # CPU smoke run of the checks
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import NamedTuple

import torch

if __package__ in (None, ""):  # run as a file, possibly on a machine where the project is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_kernels_import import load_kernels  # noqa: E402

K = load_kernels()
POISON = -7


class Check(NamedTuple):
    """One line of the report; ``ok`` None = skipped (``note`` says why)."""

    kernel: str
    dtype: str
    shape: str
    max_abs: float | None
    rel: float | None
    ok: bool | None
    note: str = ""


class Env(NamedTuple):
    device: torch.device
    interpret: bool
    quick: bool


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _op(name: str):
    return importlib.import_module(f"mosaic_sglang.kernels.{name}")


def _float_check(kernel, dtype, shape, got, want, tol) -> Check:
    """allclose with ``atol = rtol = tol`` on finite entries; the non-finite pattern must match exactly."""
    got, want = got.detach().float().cpu(), want.detach().float().cpu()
    same_pattern = torch.equal(torch.isfinite(got), torch.isfinite(want)) and \
        bool((got[~torch.isfinite(want)] == want[~torch.isfinite(want)]).all())
    fin = torch.isfinite(want)
    diff = (got[fin] - want[fin]).abs()
    max_abs = float(diff.max()) if diff.numel() else 0.0
    rel = float(diff.norm() / want[fin].norm().clamp(min=1e-30)) if diff.numel() else 0.0
    ok = same_pattern and bool(torch.allclose(got[fin], want[fin], atol=tol, rtol=tol))
    return Check(kernel, dtype, shape, max_abs, rel, ok, f"tol {tol:.0e}")


def _exact_check(kernel, dtype, shape, got, want) -> Check:
    got, want = got.detach().cpu(), want.detach().cpu()
    if got.shape != want.shape:
        return Check(kernel, dtype, shape, None, None, False, f"shape {tuple(got.shape)} != {tuple(want.shape)}")
    differ = got != want
    if got.is_floating_point():
        differ = differ & ~(got.isnan() & want.isnan())
    diff = (got.double() - want.double()).abs().nan_to_num(nan=float("inf"))
    max_abs = float(diff[differ].max()) if bool(differ.any()) else 0.0
    return Check(kernel, dtype, shape, max_abs, float(differ.float().mean()) if got.numel() else 0.0,
                 not bool(differ.any()), "exact")


def _dot_dtypes(env: Env) -> list[str]:
    """Input dtypes of kernels with a ``tl.dot``: bf16 only on a GPU."""
    return ["fp32", "fp16"] if env.interpret else ["fp32", "fp16", "bf16"]


def _bf16_skipped(kernel: str, env: Env) -> list[Check]:
    note = "skipped: the Triton interpreter's bf16 tl.dot is broken; runs on a GPU"
    return [Check(kernel, "bf16", "-", None, None, None, note)] if env.interpret else []


def check_sparse_decode(env: Env) -> list[Check]:
    """K5 over CSR lists of random slots, an empty list included; Dv != D in one case."""
    op = _op("sparse_decode")
    # (lengths per sequence, kv heads, head dim, V head dim, GQA group)
    shapes = [((63, 0, 37), 2, 64, 67, 4), ((257,), 2, 128, 128, 7)]
    if not env.interpret:
        shapes.append(((4228, 4228), 4, 128, 128, 7))  # Qwen2.5-VL-7B, always + 4K budget
    tol = {"fp32": 2e-5, "fp16": 2e-3, "bf16": 2e-2}  # K5 runs fp32 dots in IEEE precision (no TF32)
    out = []
    for lengths, h, d, dv, g in shapes:
        gen = torch.Generator().manual_seed(len(lengths) * 100 + d)
        slots_total = max(600, 2 * sum(lengths))
        indptr = torch.tensor([0, *lengths]).cumsum(0)
        slots = torch.cat([torch.randperm(slots_total - 1, generator=gen)[:n] + 1 for n in lengths])
        for name in _dot_dtypes(env):
            dt = DTYPES[name]
            k = torch.randn(slots_total, h, d, generator=gen).to(dt)
            v = torch.randn(slots_total, h, dv, generator=gen).to(dt)
            q = torch.randn(len(lengths), h * g, d, generator=gen).to(dt)
            want = op.sparse_decode_reference(q, k, v, indptr, slots)
            got = torch.full((len(lengths), h * g, dv), float("nan"), dtype=dt, device=env.device)
            dev = [t.to(env.device) for t in (q, k, v, indptr, slots)]
            op.sparse_decode(*dev, out=got, impl="triton")
            shape = f"B{len(lengths)}-T{'x'.join(map(str, lengths))}-Hkv{h}-G{g}-D{d}-Dv{dv}"
            out.append(_float_check("sparse_decode", name, shape, got, want, tol[name]))
    return out + _bf16_skipped("sparse_decode", env)


def check_cluster_scoring(env: Env) -> list[Check]:
    """K1's rules and reductions on two shapes (one with clusters over several blocks), padding clusters mixed in,
    'size_weighted' with and without an always part (``always_lse``)."""
    op = _op("cluster_scoring")
    shapes = [(3, 5, 28, 4, 60, 63), (2, 1, 28, 4, 128, 1000 if not env.interpret else 130)]  # R, Tq, Hq, Hkv, D, C
    # "+always": with an always part's log-mass in the denominator (`share_of_total`, the serving default)
    combos = [("size_weighted+always", "mean"), ("centroid", "max"), ("centroid_radius", "mean"), ("size_weighted", "max")]
    # the interpreter takes ~1 s a call: there every combination once over the two shapes, on a GPU all of them
    per_shape = [combos[:2], combos[2:]] if env.interpret else [combos, combos]
    tol = {"fp32": 1e-5, "fp16": 1e-5, "bf16": 2e-5}  # of the largest finite score: both sides upcast to fp32
    out = []
    for (rows, tq, hq, hkv, d, c), rules in zip(shapes, per_shape):
        gen = torch.Generator().manual_seed(rows * 1000 + c)
        costs = torch.randint(1, 9, (rows, c), generator=gen)
        costs[torch.rand(rows, c, generator=gen) < 0.2] = 0  # padding clusters score -inf
        for name in _dot_dtypes(env):
            dt = DTYPES[name]
            queries = torch.randn(rows, tq, hq, d, generator=gen).to(dt)
            centroids = torch.randn(rows, c, hkv, d, generator=gen).to(dt)
            spreads = ((torch.rand(rows, c, hkv, generator=gen) - 0.1) * 2 * d).to(dt)
            for label, reduce in rules:
                rule = label.split("+")[0]
                always = (torch.randn(rows, hkv, tq * (hq // hkv), generator=gen) * 4 + 2) if "+always" in label else None
                want = op.cluster_scores_reference(queries, centroids, spreads, costs, rule=rule, reduce=reduce,
                                                   always_lse=always)
                got = torch.full((rows, c), float("nan"), device=env.device)
                op.cluster_scores(*(t.to(env.device) for t in (queries, centroids, spreads, costs)), rule=rule,
                                  reduce=reduce, out=got, impl="triton",
                                  always_lse=None if always is None else always.to(env.device))
                scale = float(want[torch.isfinite(want)].abs().max())
                shape = f"R{rows}-T{tq}-Hq{hq}-Hkv{hkv}-D{d}-C{c}-{label}-{reduce}"
                out.append(_float_check("cluster_scoring", name, shape, got, want, tol[name] * max(scale, 1e-30)))
    return out + _bf16_skipped("cluster_scoring", env)


def check_exact_fill(env: Env) -> list[Check]:
    """K2 on many ties, -inf scores, zero costs; budgets 0 / half / above everything (scores are fp32 by contract)."""
    op = _op("exact_fill")
    out = []
    for rows, units in ((3, 17), (4, 257), (2, 8192 if not env.interpret else 300)):
        gen = torch.Generator().manual_seed(rows * 1000 + units)
        scores = torch.randint(0, 5, (rows, units), generator=gen).float()  # ties on purpose
        scores[torch.rand(rows, units, generator=gen) < 0.15] = float("-inf")
        costs = torch.randint(0, 65, (rows, units), generator=gen)
        total = torch.where(torch.isfinite(scores) & (costs > 0), costs, 0).sum(1)
        budget = torch.stack([torch.tensor(0), total[0] // 2, total.max() + 5])[torch.arange(rows) % 3]
        want = op.exact_fill_reference(scores, costs, budget)
        got = torch.full((rows, units), POISON, dtype=torch.int64, device=env.device)
        op.exact_fill(scores.to(env.device), costs.to(env.device), budget.to(env.device), out=got, impl="triton")
        out.append(_exact_check("exact_fill", "fp32", f"R{rows}-U{units}", got, want))
    return out


def _membership(gen, num_c: int, n: int):
    """``(indptr [num_c + 1], positions)``: every 11th position is text (no cluster); cluster 0 is empty."""
    visual = torch.tensor([p for p in range(n) if p % 11 != 5])
    ids = torch.randint(1, num_c, (visual.numel(),), generator=gen) if num_c > 1 else torch.zeros_like(visual)
    order = torch.argsort(ids * (n + 1) + visual)  # by cluster, then ascending position
    counts = torch.bincount(ids, minlength=num_c)
    return torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)]), visual[order]


def _gapped_offsets(lengths: torch.Tensor, gen) -> tuple[torch.Tensor, int]:
    """Row offsets with a poisoned gap before every row, and the buffer size."""
    ends = torch.cumsum(lengths + torch.randint(1, 4, (lengths.numel(),), generator=gen), 0)
    return ends - lengths, int(ends[-1]) + 2


def check_emit_members(env: Env) -> list[Check]:
    """K3: rows of a truncated exact fill over one membership, positions and KV slots, int32 and int64."""
    op = _op("emit_members")
    rows, num_c, n, sinks, window = 5, 63 if env.interpret else 1000, 600 if env.interpret else 20000, 4, 64
    gen = torch.Generator().manual_seed(3)
    indptr, positions = _membership(gen, num_c, n)
    lo = torch.full((rows,), sinks)
    hi = torch.full((rows,), n - window) - torch.arange(rows) * 7
    cost = torch.zeros(rows, num_c, dtype=torch.int64)
    for r in range(rows):
        for c in range(num_c):
            m = positions[int(indptr[c]) : int(indptr[c + 1])]
            cost[r, c] = int(((m >= lo[r]) & (m < hi[r])).sum())
    take = _op("exact_fill").exact_fill_reference(torch.randn(rows, num_c, generator=gen), cost, cost.sum(1) // 3)
    offset, size = _gapped_offsets(take.sum(1), gen)
    out = []
    for dt in (torch.int32, torch.int64):
        r2t = (torch.randperm(rows * n, generator=gen).reshape(rows, n) + 1).to(dt)
        token_row = torch.randperm(rows, generator=gen)
        args = (indptr, positions, torch.zeros(rows, dtype=torch.int64), take, lo, hi, offset)
        want = torch.full((size,), POISON, dtype=dt)
        op.emit_members_reference(*args, req_to_token=r2t, token_row=token_row, out=want)
        got = torch.full((size,), POISON, dtype=dt, device=env.device)
        op.emit_members(*(t.to(env.device) for t in args), req_to_token=r2t.to(env.device),
                        token_row=token_row.to(env.device), out=got, impl="triton")
        name = "int32" if dt == torch.int32 else "int64"
        out.append(_exact_check("emit_members", name, f"R{rows}-C{num_c}-N{n}-slots", got, want))
    return out


def check_assemble_always(env: Env) -> list[Check]:
    """K4: sinks, text runs, the recent window and a not-yet-indexed tail per request, as KV slots."""
    op = _op("assemble_always")
    per_request, ends, seqs = [], [], []
    for b, (indexed_end, seq_len, sinks, window) in enumerate([(184, 190, 4, 16), (150, 150, 3, 64),
                                                                (300, 337, 0, 0), (90, 91, 64, 400)]):
        frames = torch.arange(indexed_end) // 10
        frames[::23] = -1  # text tokens between frames
        frames[:5] = -1  # a prompt
        per_request.append(op.always_ranges(frames, sink_tokens=sinks, recent_window=window, seq_len=seq_len))
        ends.append(indexed_end)
        seqs.append(seq_len)
    ranges = op.pack_ranges(per_request)
    indexed_end, seq_len = torch.tensor(ends), torch.tensor(seqs)
    gen = torch.Generator().manual_seed(5)
    lengths = torch.tensor([int((e - s).sum()) for s, e in per_request]) + seq_len - indexed_end
    offset, size = _gapped_offsets(lengths, gen)
    out = []
    for dt in (torch.int32, torch.int64):
        r2t = (torch.randperm(6 * 400, generator=gen).reshape(6, 400) + 1).to(dt)
        token_row = torch.randperm(6, generator=gen)[:4]
        args = (ranges.indptr, ranges.starts, ranges.ends, indexed_end, seq_len, offset)
        want = torch.full((size,), POISON, dtype=dt)
        op.assemble_always_reference(*args, max_ranges=ranges.max_ranges, req_to_token=r2t, token_row=token_row,
                                     out=want)
        got = torch.full((size,), POISON, dtype=dt, device=env.device)
        op.assemble_always(*(t.to(env.device) for t in args), max_ranges=ranges.max_ranges,
                           req_to_token=r2t.to(env.device), token_row=token_row.to(env.device), out=got, impl="triton")
        name = "int32" if dt == torch.int32 else "int64"
        out.append(_exact_check("assemble_always", name, f"B4-ranges{ranges.max_ranges}-slots", got, want))
    return out


def check_extent_copy(env: Env) -> list[Check]:
    """K7: gather every layer's listed slots into staging and scatter them back into a poisoned pool (exact)."""
    op = _op("extent_copy")
    layers, slots_total, h, d, dv = (3, 97, 4, 60, 36) if env.interpret else (28, 20000, 4, 128, 128)
    n = 63 if env.interpret else 4228
    out = []
    for name, dt in DTYPES.items():  # no tl.dot: bf16 runs under the interpreter too
        gen = torch.Generator().manual_seed(7)
        k = [torch.randn(slots_total, h, d, generator=gen).to(dt) for _ in range(layers)]
        v = [torch.randn(slots_total, h, dv, generator=gen).to(dt) for _ in range(layers)]
        slots = torch.randperm(slots_total, generator=gen)[:n].to(torch.int32)
        want_k, want_v = torch.empty(layers, n, h, d, dtype=dt), torch.empty(layers, n, h, dv, dtype=dt)
        op.gather_slots_reference(k, v, slots, want_k, want_v)
        got_k = torch.full((layers, n, h, d), float("nan"), dtype=dt, device=env.device)
        got_v = torch.full((layers, n, h, dv), float("nan"), dtype=dt, device=env.device)
        dk, dv_ = [t.to(env.device) for t in k], [t.to(env.device) for t in v]
        op.gather_slots(dk, dv_, slots.to(env.device), got_k, got_v, impl="triton")
        shape = f"L{layers}-N{n}-H{h}-D{d}-Dv{dv}"
        out.append(_exact_check("extent_copy.gather", name, shape, torch.cat([got_k.flatten(), got_v.flatten()]),
                                torch.cat([want_k.flatten(), want_v.flatten()])))
        for layer in dk + dv_:
            layer[slots.to(env.device).long()] = float("nan")  # a listed row the scatter misses stays NaN
        op.scatter_slots(want_k.to(env.device), want_v.to(env.device), slots.to(env.device), dk, dv_, impl="triton")
        out.append(_exact_check("extent_copy.scatter", name, shape, torch.cat([t.flatten() for t in dk + dv_]),
                                torch.cat([t.flatten() for t in k + v])))
    return out


def _after_join(x, c, spread, size, num_pairs):
    """fp64 ``d² [n, A]`` and relative spread after the join ``[n, A]`` (the admission test's quantity)."""
    d2 = (x.double()[:, None, :] - c.double()[None, :, :]).square().sum(-1)
    s = size.double()[None, :]
    return d2, (s * spread.double()[None, :] + s / (s + 1) * d2) / (s + 1) / num_pairs


def _assign_inputs(n, a, f, dt, cap, num_pairs, gen):
    """Tokens, candidates (one full) and a join threshold that admits about half the tokens, placed in the
    widest gap of the fp64 relative spreads between that target and 1.5× it, so no admission sits within
    rounding of it (the kernel test's construction)."""
    x = (torch.randn(n, f, generator=gen) * torch.exp2(torch.rand(n, 1, generator=gen) * 2 - 1)).to(dt)
    c = (torch.randn(a, f, generator=gen) * 0.5).to(dt)
    spread = torch.rand(a, generator=gen) * f
    size = torch.randint(1, cap, (a,), generator=gen)
    size[1 % a] = cap
    _, after = _after_join(x, c, spread, size, num_pairs)
    target = float(after.masked_fill(~(size < cap)[None, :], float("inf")).amin(1).median())
    values = torch.cat([after.flatten().sort().values, 3 * after.max().reshape(1) + 1])
    lo = int(torch.searchsorted(values, target))
    hi = min(int(torch.searchsorted(values, 1.5 * target)) + 1, values.numel() - 1)
    gaps = values[lo + 1 : hi + 1] - values[lo:hi]
    widest = int(gaps.argmax())
    return x, c, spread, size, float(values[lo + widest] + gaps[widest] / 2)


def check_assign_tokens(env: Env) -> list[Check]:
    """K6: ``best`` must equal the reference except at fp64 near ties in d² (both then within rounding);
    ``d2`` within ``2e-6·(|x|² + |c|²)`` (the kernel test's bound: fp32 sums, no TF32)."""
    op = _op("assign_tokens")
    cap, num_pairs, out = 9, 4, []
    for n, a, f in ((63, 130, 60), (257, 1000 if not env.interpret else 70, 256)):
        for name in _dot_dtypes(env):
            gen = torch.Generator().manual_seed(n * 10 + a)
            x, c, spread, size, thr = _assign_inputs(n, a, f, DTYPES[name], cap, num_pairs, gen)
            kw = dict(num_pairs=num_pairs, join_threshold=thr, max_cluster_size=cap)
            want = op.assign_tokens_reference(x, c, spread, size, **kw)
            best = torch.full((n,), POISON, dtype=torch.int64, device=env.device)
            d2 = torch.full((n,), float("nan"), device=env.device)
            op.assign_tokens(*(t.to(env.device) for t in (x, c, spread, size)), out=(best, d2), impl="triton", **kw)
            best, d2 = best.cpu(), d2.cpu()
            d2_64, _ = _after_join(x, c, spread, size, num_pairs)
            found = want.best >= 0
            scale = x.float().square().sum(-1) + c.float().square().sum(-1)[want.best.clamp(min=0)]
            gap = (d2_64.gather(1, best.clamp(min=0)[:, None]) - d2_64.gather(1, want.best.clamp(min=0)[:, None]))[:, 0]
            bad_best = (best != want.best) & ~((best >= 0) & found & (gap.abs() <= 4e-6 * scale))
            err = torch.where(found, (d2 - want.d2).abs(), torch.zeros(()))
            ok = not bool(bad_best.any()) and bool((err <= 2e-6 * scale).all()) and \
                torch.equal(d2[~found], want.d2[~found])
            out.append(Check("assign_tokens", name, f"N{n}-A{a}-F{f}", float(err.max()), float(bad_best.float().mean()),
                             ok, f"{int(found.sum())}/{n} admitted; rel = share of wrong best"))
    return out + _bf16_skipped("assign_tokens", env)


def check_sparse_extend(env: Env) -> list[Check]:
    """SGLang's extend kernel through `sparse_extend`: ragged chunks over selected prefix slots (needs SGLang)."""
    if importlib.util.find_spec("sglang") is None:
        return [Check("sparse_extend", "-", "-", None, None, None, "skipped: sglang is not importable here "
                      "(the op calls SGLang's own Triton extend kernel)")]
    op = _op("sparse_extend")
    lens, sel, hq, hkv, d = ((5, 17, 1), (40, 0, 1), 28, 4, 64) if env.interpret else ((17, 128, 1), (4096, 0, 2048),
                                                                                      28, 4, 128)
    tol = {"fp32": 2e-5 if env.interpret else 2e-3, "fp16": 2e-3, "bf16": 2e-2}
    out = []
    for name in _dot_dtypes(env):
        dt, gen = DTYPES[name], torch.Generator().manual_seed(11)
        total, pool = sum(lens), 1 + 2 * sum(sel) + 23
        q = torch.randn(total, hq, d, generator=gen).to(dt)
        k_ext, v_ext = (torch.randn(total, hkv, d, generator=gen).to(dt) for _ in range(2))
        k_buf, v_buf = (torch.randn(pool, hkv, d, generator=gen).to(dt) for _ in range(2))
        slots = torch.randperm(pool - 1, generator=gen)[: sum(sel)] + 1
        qo_indptr, prefix_indptr = torch.tensor([0, *lens]).cumsum(0), torch.tensor([0, *sel]).cumsum(0)
        args = (q, k_ext, v_ext, k_buf, v_buf, qo_indptr, prefix_indptr, slots)
        want = op.sparse_extend_reference(*args, max_extend_len=max(lens))
        got = torch.full((total, hq, d), float("nan"), dtype=dt, device=env.device)
        op.sparse_extend(*(t.to(env.device) for t in args), max_extend_len=max(lens), out=got, impl="triton")
        shape = f"B{len(lens)}-E{'x'.join(map(str, lens))}-P{'x'.join(map(str, sel))}-Hq{hq}-Hkv{hkv}-D{d}"
        out.append(_float_check("sparse_extend", name, shape, got, want, tol[name]))
    return out + _bf16_skipped("sparse_extend", env)


CHECKS = (check_sparse_decode, check_cluster_scoring, check_exact_fill, check_emit_members, check_assemble_always,
          check_assign_tokens, check_extent_copy, check_sparse_extend)
KERNELS = ("sparse_decode", "cluster_scoring", "exact_fill", "emit_members", "assemble_always", "assign_tokens",
           "extent_copy.gather", "extent_copy.scatter", "sparse_extend")
"""Every kernel a line is printed for (the suite's test asserts each appears)."""


def _line(c: Check) -> str:
    status = "skipped" if c.ok is None else ("pass" if c.ok else "FAIL")
    num = (lambda v: "-" if v is None else f"{v:.2e}")  # noqa: E731
    return f"{c.kernel:>20} {c.dtype:>5} {c.shape:>44} {num(c.max_abs):>9} {num(c.rel):>9} {status:>7}  {c.note}"


def main(argv=None) -> int:
    """Run every check, print the lines, write ``--out``; returns 0, or 1 when any check failed."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="write the lines as JSON to this file")
    p.add_argument("--quick", action="store_true", help="accepted for the suite: the CPU shapes are already small")
    args = p.parse_args(argv)
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if not torch.cuda.is_available() and not interpret:
        print("gpu_kernel_check: no CUDA device and TRITON_INTERPRET is not 1: Triton cannot run here; nothing "
              "checked", file=sys.stderr)
        return 2
    env = Env(torch.device("cuda" if torch.cuda.is_available() and not interpret else "cpu"), interpret, args.quick)
    where = torch.cuda.get_device_name() if env.device.type == "cuda" else "CPU under the Triton interpreter"
    print(f"kernel checks on {where}; torch {torch.__version__}")
    print(f"{'kernel':>20} {'dtype':>5} {'shape':>44} {'max abs':>9} {'rel':>9} {'result':>7}")
    checks = []
    for check in CHECKS:
        for c in check(env):
            print(_line(c), flush=True)
            checks.append(c)
    failed = [c for c in checks if c.ok is False]
    print(f"{len(checks) - len(failed)} of {len(checks)} lines pass or skip; {len(failed)} FAIL")
    if args.out:
        Path(args.out).write_text(json.dumps(dict(device=where, gpu=env.device.type == "cuda",
                                                  checks=[c._asdict() for c in checks]), indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
