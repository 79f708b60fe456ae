"""Decode-step microbenchmark of Mosaic's kernels on one GPU: torch + Triton only (FlashInfer rows when
``import flashinfer`` works; no SGLang).

One decode step = the attention path of ``--layers`` layers for a batch of ``bs`` requests of ``N``
context tokens each, over a KV pool laid out like SGLang's (one ``[slots, kv_heads, head_dim]`` tensor per
layer, random data, contiguous slots per request). Variants, side by side per (N, bs), the sparse ones per
budget in ``--budgets``:

* ``dense_sdpa``: torch's fused SDPA over each request's whole context (the strong dense baseline);
* ``dense_k5``: our split-K sparse decode kernel (K5) over every slot (the same kernel Mosaic uses);
* ``flashinfer_dense`` (when FlashInfer imports and the device is CUDA): its paged decode wrapper over
  every slot, page size 1 (`gpu_flashinfer_rows.py`);
* ``mosaic_keep``: the kept-selection decode step (``reselect_every=0``) with one list per layer
  (``selection_heads='shared'``; the default per-head lists attend H lists of the same length): K4 assembles the always part once,
  the kept per-layer selections are copied from a ``req_to_selection`` slab, then one K5 per layer over
  ``always + budget`` slots;
* ``flashinfer_mosaic_keep``: the same lists (int32) attended by FlashInfer under ONE plan per step, the
  wrapper pointed at each layer's list (`mosaic_sglang.attention.flashinfer_api.use_layer_indices`);
* ``flashinfer_mosaic_served``: the same step through the serving code (`FlashInferRunner` in CUDA-graph
  mode over `StaticDecodeLists`, `gpu_flashinfer_rows.served_rows`);
* ``mosaic_reselect``: selection at every layer: K1 scoring over cluster centroids, K2 exact fill,
  K3 emit of the chosen members' slots, K5;
* ``mosaic_select_only``: ``mosaic_reselect`` without K5 (K4 + K1 + K2 + K3): its time over
  ``mosaic_reselect``'s is the share of a re-selecting step spent selecting (``sel %``);
* ``token_topk``: token-level retrieval (a ReKV/Quest-like oracle, head-aggregated: the cheapest form):
  q·K over all N keys as one GEMV per layer, ``torch.topk(budget)``, K5 over always + the top tokens.

Clusters are contiguous runs of 8–64 visual tokens (real clusters are not contiguous: gathers here are
friendlier than in serving); fp32 centroids and spreads come from the pool's keys. Each step runs inside a
CUDA graph when capture works (the column says ``graph`` or ``eager``): 3 warm-ups, capture, 2 warm-up
replays, then the median of ``--repeats`` (≥ 20) event-timed replays. Layer 0 of every attending variant
is checked against an fp32 gather+softmax reference over the list it attended (requests 0 and bs-1).

Columns: ``speedup`` = the fastest dense row's ms / this row's ms; ``GB`` = bytes read (K/V rows, plus
centroids / spreads / costs for scoring, plus every K row for token scoring; index lists not counted);
``TB/s`` = GB / ms; ``floor`` = GB / the card's measured D2D copy bandwidth (read + write,
`gpu_copy_bandwidth.py`) and ``x floor`` = ms / floor. A (N, bs) whose pool does not fit in the card's
free memory (``torch.cuda.mem_get_info``) is skipped with one line; the pool is allocated once, for the
largest fitting ``N·bs``. A goals line per (N, bs, budget) compares with issue 10's targets.

    python benchmarks/gpu_decode_step.py --out decode.json         # GPU: the default grid (--time-limit-s 330)
    TRITON_INTERPRET=1 python benchmarks/gpu_decode_step.py --quick   # CPU smoke run: timings are NOT GPU numbers
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file, possibly on a machine where the project is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_copy_bandwidth import d2d_copy_gbps  # noqa: E402
from gpu_decode_report import Report, plan_pool  # noqa: E402
from gpu_decode_setup import SINKS, TEXT, K, BudgetLists, Setup, assemble_always_into, row_bytes  # noqa: E402
from gpu_flashinfer_rows import FlashInferRows, served_rows  # noqa: E402


def check_limit(dtype: torch.dtype, device: torch.device) -> float:
    """‖Δ‖/‖ref‖ allowed for layer 0 against the fp32 reference: 1e-2 in half precision (design §4.5); fp32
    1e-4 under the interpreter, 5e-3 on a GPU (K5's fp32 ``tl.dot`` runs as TF32 there, ~1e-3)."""
    if dtype != torch.float32:
        return 1e-2
    return 5e-3 if device.type == "cuda" else 1e-4


def _args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contexts", type=int, nargs="+", default=[32768, 65536, 131072, 262144])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--budgets", type=int, nargs="+", default=[2048, 4096])
    p.add_argument("--budget", type=int, help="one budget (same as --budgets B)")
    p.add_argument("--layers", type=int, default=28)
    p.add_argument("--q-heads", type=int, default=28)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    p.add_argument("--repeats", type=int, default=20, help="timed replays per variant (the median is reported)")
    p.add_argument("--no-graph", action="store_true", help="time eagerly (no CUDA graph capture)")
    p.add_argument("--no-flashinfer", action="store_true", help="skip the FlashInfer rows even if it imports")
    p.add_argument("--max-pool-tokens", type=int, help="cap the pool (default: what fits in free device memory)")
    p.add_argument("--time-limit-s", type=float, default=330.0,
                   help="start no new (N, bs) after this many seconds (the rest is listed as skipped)")
    p.add_argument("--copy-gbps", type=float, help="D2D copy bandwidth for the floor (default: measured here)")
    p.add_argument("--out", help="write the rows as JSON to this file")
    p.add_argument("--quick", action="store_true", help="tiny shapes for a CPU smoke run under TRITON_INTERPRET=1")
    args = p.parse_args(argv)
    if args.budget is not None:
        args.budgets = [args.budget]
    if args.quick:  # tiny shapes, where the command line left the defaults
        quick = dict(contexts=[640], batch=[2], budgets=[64, 128], layers=2, q_heads=8, kv_heads=2, head_dim=32,
                     dtype="fp16", repeats=1)
        for key, value in quick.items():
            if getattr(args, key) == p.get_default(key):
                setattr(args, key, value)
    return args


def splits_for(length: int) -> int:
    """Split-K parallelism for K5: about one split per 512 entries, 1–64 (host-known list lengths)."""
    return max(1, min(64, math.ceil(length / 512)))


def _k5(q, k, v, indptr, slots, length, impl):
    if impl == "reference":
        return K.sparse_decode.sparse_decode_reference(q, k, v, indptr, slots)
    from mosaic_sglang.kernels.sparse_decode.triton import sparse_decode_triton

    return sparse_decode_triton(q, k, v, indptr, slots, num_splits=splits_for(length))


def dense_variants(s: Setup, q, impl) -> dict:
    """name -> (step function returning layer 0's output ``[bs, Hq, D]``, bytes read per step, (indptr, slots)
    of layer 0's list for the check)."""
    num_layers, bs, n = len(s.k), s.bs, s.n

    def dense_sdpa():
        out = None
        for layer in range(num_layers):
            kk = s.k[layer][1 : 1 + bs * n].view(bs, n, *s.k[layer].shape[1:]).transpose(1, 2)  # [bs, H, N, D]
            vv = s.v[layer][1 : 1 + bs * n].view(bs, n, *s.v[layer].shape[1:]).transpose(1, 2)
            o = torch.nn.functional.scaled_dot_product_attention(q[layer][:, :, None], kk, vv, enable_gqa=True)
            out = o[:, :, 0] if out is None else out
        return out

    def dense_k5():
        return [_k5(q[layer], s.k[layer], s.v[layer], s.dense_indptr, s.dense_slots, n, impl)
                for layer in range(num_layers)][0]

    full = num_layers * bs * n * row_bytes(s)
    dense_list = (s.dense_indptr, s.dense_slots)
    return {"dense_sdpa": (dense_sdpa, full, dense_list), "dense_k5": (dense_k5, full, dense_list)}


def sparse_variants(s: Setup, lists: BudgetLists, q, impl) -> dict:
    """As `dense_variants`, for one budget; ``mosaic_select_only`` returns None (nothing to check)."""
    num_layers, bs, n, a = len(s.k), s.bs, s.n, lists.sparse_len
    view = lists.lists.view(num_layers, bs, a)

    def attend(layer):
        return _k5(q[layer], s.k[layer], s.v[layer], lists.sparse_indptr, lists.lists[layer], a, impl)

    def select(layer):
        scores = K.cluster_scoring.cluster_scores(q[layer][:, None], s.centroids[layer], s.spreads[layer], s.costs,
                                                  rule="size_weighted", reduce="mean", impl=impl)  # K1
        take = K.exact_fill.exact_fill(scores, s.costs, lists.budgets, impl=impl)  # K2
        K.emit_members.emit_members(s.member_indptr, s.member_positions, s.cluster_base, take, s.lo, s.hi,
                                    lists.sel_offset, req_to_token=s.req_to_token, token_row=s.token_row,
                                    out=lists.lists[layer], impl=impl)  # K3

    def mosaic_keep():
        assemble_always_into(s, lists.lists, a, lists.out_offset, impl)
        view[:, :, s.always :] = lists.slab  # the req_to_selection copy: one op for every layer
        return [attend(layer) for layer in range(num_layers)][0]

    def mosaic_reselect():
        assemble_always_into(s, lists.lists, a, lists.out_offset, impl)
        outs = []
        for layer in range(num_layers):
            select(layer)
            outs.append(attend(layer))
        return outs[0]

    def mosaic_select_only():
        assemble_always_into(s, lists.lists, a, lists.out_offset, impl)
        for layer in range(num_layers):
            select(layer)

    def token_topk():
        assemble_always_into(s, lists.lists, a, lists.out_offset, impl)
        outs = []
        num_kv, dim = s.k[0].shape[1], s.k[0].shape[2]
        for layer in range(num_layers):
            keys = s.k[layer][1 : 1 + bs * n].view(bs, n, num_kv * dim)  # [bs, N, H·D], contiguous
            q_sum = q[layer].view(bs, num_kv, -1, dim).sum(2).view(bs, num_kv * dim, 1)  # heads of a group summed
            logits = torch.bmm(keys, q_sum)[:, :, 0].float()  # [bs, N] = Σ over query heads of q·k: K read once
            logits[:, :SINKS] = float("-inf")
            logits[:, n - TEXT :] = float("-inf")
            top = torch.topk(logits, a - s.always, dim=1).indices  # [bs, budget]
            view[layer, :, s.always :] = torch.gather(s.req_to_token, 1, top).long()
            outs.append(attend(layer))
        return outs[0]

    kv = num_layers * bs * a * row_bytes(s)
    c, heads, dim = s.centroids[0].shape[1:]
    summaries = num_layers * bs * c * (heads * dim * 4 + heads * 4 + 8)  # fp32 centroids, spreads, int64 costs
    all_keys = num_layers * bs * n * row_bytes(s) // 2
    first = (lists.sparse_indptr, lists.lists[0])
    return {"mosaic_keep": (mosaic_keep, kv, first), "mosaic_select_only": (mosaic_select_only, summaries, None),
            "mosaic_reselect": (mosaic_reselect, kv + summaries, first),
            "token_topk": (token_topk, all_keys + kv, first)}


def time_step(fn, repeats: int, use_graph: bool, device) -> tuple[float, str]:
    """Median milliseconds of ``fn`` and how it ran ('graph', 'eager' or 'cpu')."""
    if device.type != "cuda":
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times), "cpu"
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    mode, run = "eager", fn
    if use_graph:
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                fn()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                fn()
            mode, run = "graph", graph.replay
        except Exception as e:  # a host sync or an allocation the capture refused: time eagerly, say so
            print(f"  (graph capture failed: {type(e).__name__}: {str(e)[:120]}; timing eagerly)")
            torch.cuda.synchronize()
    for _ in range(2):
        run()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times), mode


def check_layer0(s: Setup, q, attended, out: torch.Tensor) -> float:
    """‖Δ‖/‖ref‖ of layer 0's output ``[bs, Hq, D]`` for requests 0 and bs-1 against an fp32 gather+softmax
    over ``attended = (indptr [bs+1], slots)``, the list the variant attended (only those rows go to fp32)."""
    indptr, slots = attended
    errs = []
    for b in sorted({0, s.bs - 1}):
        rows = slots[int(indptr[b]) : int(indptr[b + 1])].long()
        k, v = s.k[0][rows].float(), s.v[0][rows].float()  # [n_b, H, D]
        local = torch.tensor([0, rows.numel()], device=rows.device)
        ref = K.sparse_decode.sparse_decode_reference(q[0][b : b + 1].float(), k, v, local,
                                                      torch.arange(rows.numel(), device=rows.device))
        errs.append(float((out[b : b + 1].float() - ref).norm() / ref.norm().clamp(min=1e-12)))
    return max(errs)


def measure(name, step, s: Setup, q, args, device, report: Report, budget=None) -> dict | None:
    """Check (if it attends), time and record one variant; returns its row (None when it ran out of device
    memory: noted, and the grid goes on)."""
    fn, nbytes, attended = step
    try:
        out = fn()
        err = None if attended is None else check_layer0(s, q, attended, out)
        del out
        ms, mode = time_step(fn, args.repeats, not args.no_graph, device)
    except torch.cuda.OutOfMemoryError as e:
        torch.cuda.empty_cache()
        report.note(f"  {name} at N={s.n} bs={s.bs} budget={budget}: out of device memory "
                    f"({str(e).splitlines()[0][:100]}); row skipped")
        return None
    return report.add(n=s.n, bs=s.bs, budget=budget, variant=name, mode=mode, ms=ms, nbytes=nbytes, err=err)


def _pool(args, tokens: int, device, dtype):
    """Per layer ``k, v: [tokens + 1, kv_heads, head_dim]`` random (never zeros; slot 0 is SGLang's padding)."""
    gen = torch.Generator(device=device).manual_seed(0)
    shape = (tokens + 1, args.kv_heads, args.head_dim)
    k = [torch.randn(*shape, device=device, dtype=dtype, generator=gen) for _ in range(args.layers)]
    v = [torch.randn(*shape, device=device, dtype=dtype, generator=gen) for _ in range(args.layers)]
    return k, v, gen


def run_pair(n, bs, args, pool, device, impl, report: Report, flashinfer) -> None:
    """Every variant of one (N, bs): the dense ones once, the sparse ones per budget."""
    k_layers, v_layers, gen = pool
    dtype = k_layers[0].dtype
    s = Setup(n, bs, k_layers, v_layers, device)
    q = [torch.randn(bs, args.q_heads, args.head_dim, device=device, dtype=dtype, generator=gen)
         for _ in range(args.layers)]
    for name, step in dense_variants(s, q, impl).items():
        measure(name, step, s, q, args, device, report)
    if flashinfer is not None:
        flashinfer.dense_rows(s, q, lambda name, step: measure(name, step, s, q, args, device, report))
    report.flush()
    for budget in args.budgets:
        lists = BudgetLists(s, budget)
        for name, step in sparse_variants(s, lists, q, impl).items():
            measure(name, step, s, q, args, device, report, budget)
        if flashinfer is not None:
            measure_row = lambda name, step: measure(name, step, s, q, args, device, report, budget)  # noqa: E731
            flashinfer.mosaic_rows(s, lists, q, measure_row)
            served_rows(flashinfer, s, lists, q, measure_row)
        report.goals(n, bs, budget)


def need_bytes(args, n: int, bs: int, pool_tokens: int) -> int:
    """Device bytes measuring (n, bs) takes over a pool of ``pool_tokens``, estimated high: the pool, the
    clusters' fp32 summaries, `Setup`'s temporaries and index tensors, token_topk's per-layer logits (a
    CUDA graph keeps every layer's), the check's fp32 rows and FlashInfer's workspaces and int32 lists."""
    elem = {"bf16": 2, "fp16": 2, "fp32": 4}[args.dtype]
    hd, layers = args.kv_heads * args.head_dim, args.layers
    pool = (pool_tokens + 1) * layers * 2 * hd * elem
    clusters = Setup._cluster_sizes(n).numel()
    summaries = layers * bs * clusters * (hd + args.kv_heads) * 4 + bs * clusters * 8
    temporaries = 3 * n * hd * 4 + 3 * n * 8 + bs * n * (4 + 8 + 4)  # Setup; req_to_token, dense slots, fi lists
    topk_logits = layers * bs * n * (4 + elem)
    check = 4 * n * hd * 4  # k and v of one request in fp32, twice
    lists = 3 * layers * bs * (max(args.budgets) + SINKS + TEXT) * 8
    flashinfer_workspaces = 3 * (256 << 20)
    return pool + summaries + temporaries + topk_logits + check + lists + flashinfer_workspaces


def _device_and_impl() -> tuple[torch.device, str]:
    if torch.cuda.is_available():
        return torch.device("cuda"), "triton"
    if os.environ.get("TRITON_INTERPRET") != "1":
        print("gpu_decode_step: no CUDA device: nothing measured; for a CPU smoke run (not GPU numbers) use "
              "TRITON_INTERPRET=1 ... --quick", file=sys.stderr)
        raise SystemExit(2)
    return torch.device("cpu"), "triton"


def main(argv=None) -> list[dict]:
    """Run the grid, print the table, write ``--out``; returns the rows. Exits 1 (after writing) when a
    variant's check fails."""
    args = _args(argv)
    device, impl = _device_and_impl()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    gpu = device.type == "cuda"
    name = torch.cuda.get_device_name() if gpu else "CPU (Triton interpreter; NOT GPU numbers)"
    copy_gbps = args.copy_gbps or d2d_copy_gbps(device, (1 << 30) if gpu else (1 << 24))
    pairs = sorted({(n, bs) for n in args.contexts for bs in args.batch}, key=lambda p: (p[1], p[0]))  # bs=1 first
    pool_tokens, skipped = plan_pool(pairs, lambda n, bs, p: need_bytes(args, n, bs, p), device, args.max_pool_tokens)
    report = Report(name=name, gpu=gpu, copy_gbps=copy_gbps, check_limit=check_limit(dtype, device), config=vars(args))
    report.header(args)
    flashinfer = FlashInferRows.create(device, dtype, args, report) if not args.no_flashinfer else None
    pool = _pool(args, pool_tokens, device, dtype) if pool_tokens else None
    start = time.time()
    for n, bs in pairs:
        if (n, bs) in skipped:
            report.skip(n, bs, skipped[(n, bs)])
        elif time.time() - start > args.time_limit_s:
            report.skip(n, bs, f"time limit ({args.time_limit_s:.0f} s) reached")
        else:
            try:
                run_pair(n, bs, args, pool, device, impl, report, flashinfer)
            except torch.cuda.OutOfMemoryError as e:
                torch.cuda.empty_cache()
                report.skip(n, bs, f"out of device memory ({str(e).splitlines()[0][:100]})")
    report.finish(args.out)
    return report.rows


if __name__ == "__main__":
    main()
