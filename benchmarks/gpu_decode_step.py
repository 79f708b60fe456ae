"""Decode-step microbenchmark of Mosaic's kernels on one GPU: torch + Triton only (no SGLang, no FlashInfer).

One decode step = the attention path of ``--layers`` layers for a batch of ``--batch`` requests of ``N``
context tokens each, over a KV pool laid out like SGLang's (one ``[slots, kv_heads, head_dim]`` tensor per
layer, random data, contiguous slots per request). Variants, side by side per (N, batch):

* ``dense_sdpa``: torch's fused SDPA over each request's whole context (the strong dense baseline);
* ``dense_k5``: our split-K sparse decode kernel (K5) over every slot (the same kernel Mosaic uses);
* ``mosaic_keep``: the default decode step (``reselect_every=0``): K4 assembles the always part once,
  the kept per-layer selections are copied from a ``req_to_selection`` slab, then one K5 per layer over
  ``always + budget`` slots;
* ``mosaic_reselect``: selection at every layer: K1 scoring over cluster centroids, K2 exact fill,
  K3 emit of the chosen members' slots, K5;
* ``token_topk``: token-level retrieval (a ReKV/Quest-like oracle): q·K over all N keys, heads averaged,
  ``torch.topk(budget)``, K5 over always + the top tokens.

Clusters are contiguous runs of 8–64 visual tokens (real clusters are not contiguous: gathers here are
friendlier than in serving); centroids and spreads come from the pool's keys. Each step runs inside a
CUDA graph when capture works (the column says ``graph`` or ``eager``); the median of ``--repeats``
event-timed replays after warm-ups. Layer 0 of every variant is checked against an fp32
gather+softmax reference on the same lists. ``bytes`` counts the K/V rows read; ``TB/s`` = bytes / time.

    python benchmarks/gpu_decode_step.py                 # GPU: the default grid, ~3-5 min on an H200
    TRITON_INTERPRET=1 python benchmarks/gpu_decode_step.py --quick   # CPU smoke run: timings are NOT GPU numbers
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file, possibly on a machine where the project is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_kernels_import import load_kernels  # noqa: E402

K = load_kernels()

SINKS, TEXT = 4, 128
"""Always attended per request: 4 sinks and 128 text tokens at the end (the recent window lies inside the text)."""


def _args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--contexts", type=int, nargs="+", default=[32768, 65536, 131072])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--budget", type=int, default=2048)
    p.add_argument("--layers", type=int, default=28)
    p.add_argument("--q-heads", type=int, default=28)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--no-graph", action="store_true", help="time eagerly (no CUDA graph capture)")
    p.add_argument("--quick", action="store_true", help="tiny shapes for a CPU smoke run under TRITON_INTERPRET=1")
    args = p.parse_args(argv)
    if args.quick:
        args.contexts, args.batch, args.budget, args.layers = [640], [2], 64, 2
        args.q_heads, args.kv_heads, args.head_dim, args.dtype, args.repeats = 8, 2, 32, "fp16", 1
    return args


class Setup:
    """The pool, the requests' slots, clusters (member CSR, centroids, spreads, costs) for one (N, batch)."""

    def __init__(self, args, n: int, bs: int, k_layers, v_layers, device):
        self.n, self.bs, self.device = n, bs, device
        self.k, self.v = k_layers, v_layers
        arange = torch.arange(n, device=device)
        self.req_to_token = (1 + torch.arange(bs, device=device)[:, None] * n + arange).to(torch.int32)  # [bs, N]
        self.token_row = torch.arange(bs, device=device)
        # always part: sinks + trailing text, as ranges expanded by K4
        self.ranges = K.assemble_always.pack_ranges(
            [(torch.tensor([0, n - TEXT]), torch.tensor([SINKS, n])) for _ in range(bs)])
        self.always = SINKS + TEXT
        self.budget = args.budget
        gen = torch.Generator().manual_seed(n + bs)
        sizes = []  # clusters over the visual span [SINKS, n - TEXT)
        left = n - TEXT - SINKS
        while left > 0:
            s = min(left, int(torch.randint(8, 65, (1,), generator=gen)))
            sizes.append(s)
            left -= s
        c = len(sizes)
        self.num_clusters = c
        sizes_t = torch.tensor(sizes)
        member_indptr = torch.zeros(c + 1, dtype=torch.int64)
        member_indptr[1:] = torch.cumsum(sizes_t, 0)
        self.member_indptr = member_indptr.to(device)  # one membership shape shared by every request
        self.member_positions = (SINKS + torch.arange(n - TEXT - SINKS)).to(device)
        self.cluster_base = torch.zeros(bs, dtype=torch.int64, device=device)
        self.costs = sizes_t.to(device)[None].expand(bs, c).contiguous()  # [bs, C] all eligible
        owner = torch.repeat_interleave(torch.arange(c), sizes_t).to(device)  # [V] cluster of each visual position
        self.centroids, self.spreads = [], []
        for layer in range(len(k_layers)):
            keys = k_layers[layer][self.req_to_token[:, SINKS : n - TEXT].long()].float()  # [bs, V, H, D]
            ksum = keys.new_zeros(bs, c, *keys.shape[2:]).index_add_(1, owner, keys)
            sq = keys.new_zeros(bs, c, keys.shape[2]).index_add_(1, owner, keys.square().sum(-1))
            cent = ksum / sizes_t.to(device)[None, :, None, None]
            self.centroids.append(cent)
            self.spreads.append(sq / sizes_t.to(device)[None, :, None] - cent.square().sum(-1))
        self.lo = torch.full((bs,), SINKS, dtype=torch.int64, device=device)
        self.hi = torch.full((bs,), n - TEXT, dtype=torch.int64, device=device)
        a = self.always + min(self.budget, n - TEXT - SINKS)
        self.sparse_len = a
        self.sparse_indptr = (torch.arange(bs + 1, device=device) * a)
        self.dense_indptr = torch.arange(bs + 1, device=device) * n
        self.dense_slots = self.req_to_token.flatten().long()
        # the kept selections of the question: layer l keeps the first `budget` visual tokens shifted by l
        f = a - self.always
        sel = (torch.arange(f, device=device)[None, None] * 7 + torch.arange(len(k_layers), device=device)[:, None, None] * 131
               + torch.arange(bs, device=device)[None, :, None] * 17) % (n - TEXT - SINKS) + SINKS
        self.slab = torch.gather(self.req_to_token.long()[None].expand(len(k_layers), -1, -1), 2, sel)  # [L, bs, f]
        self.lists = torch.empty(len(k_layers), bs * a, dtype=torch.int64, device=device)  # per-layer index buffers
        self.out_offset = self.sparse_indptr[:-1].contiguous()
        self.range_indptr = self.ranges.indptr.to(device)
        self.range_starts, self.range_ends = self.ranges.starts.to(device), self.ranges.ends.to(device)
        self.seq_lens = torch.full((bs,), n, dtype=torch.int64, device=device)
        self.budgets = torch.full((bs,), self.budget, dtype=torch.int64, device=device)
        self.sel_offset = self.out_offset + self.always


def _splits(length: int) -> int:
    """Split-K parallelism for K5: about one split per 512 entries, 1–64 (host-known list lengths)."""
    return max(1, min(64, math.ceil(length / 512)))


def _k5(q, k, v, indptr, slots, length, impl):
    if impl == "reference":
        return K.sparse_decode.sparse_decode_reference(q, k, v, indptr, slots)
    from mosaic_sglang.kernels.sparse_decode.triton import sparse_decode_triton

    return sparse_decode_triton(q, k, v, indptr, slots, num_splits=_splits(length))


def _variants(s: Setup, q, impl):
    """name -> (step function returning layer 0's output, K/V rows read per step)."""
    L, bs, n = len(s.k), s.bs, s.n

    def dense_sdpa():
        out = None
        for layer in range(L):
            kk = s.k[layer][1 : 1 + bs * n].view(bs, n, *s.k[layer].shape[1:]).transpose(1, 2)  # [bs, H, N, D]
            vv = s.v[layer][1 : 1 + bs * n].view(bs, n, *s.v[layer].shape[1:]).transpose(1, 2)
            o = torch.nn.functional.scaled_dot_product_attention(q[layer][:, :, None], kk, vv, enable_gqa=True)
            out = o[:, :, 0] if out is None else out
        return out

    def dense_k5():
        return [_k5(q[layer], s.k[layer], s.v[layer], s.dense_indptr, s.dense_slots, n, impl) for layer in range(L)][0]

    view = s.lists.view(L, bs, s.sparse_len)

    def assemble():
        """K4 once per step: the always part of every request, copied into every layer's list."""
        always = K.assemble_always.assemble_always(
            s.range_indptr, s.range_starts, s.range_ends, s.seq_lens, s.seq_lens, s.out_offset,
            max_ranges=s.ranges.max_ranges, req_to_token=s.req_to_token, token_row=s.token_row,
            out=s.lists[0], impl=impl)
        view[1:, :, : s.always] = always.view(bs, s.sparse_len)[None, :, : s.always]

    def mosaic_keep():
        assemble()
        view[:, :, s.always :] = s.slab  # the req_to_selection copy: one op for every layer
        return [_k5(q[layer], s.k[layer], s.v[layer], s.sparse_indptr, s.lists[layer], s.sparse_len, impl)
                for layer in range(L)][0]

    def mosaic_reselect():
        assemble()
        outs = []
        for layer in range(L):
            scores = K.cluster_scoring.cluster_scores(q[layer][:, None], s.centroids[layer], s.spreads[layer], s.costs,
                                                      rule="size_weighted", reduce="mean", impl=impl)  # K1
            take = K.exact_fill.exact_fill(scores, s.costs, s.budgets, impl=impl)  # K2
            K.emit_members.emit_members(s.member_indptr, s.member_positions, s.cluster_base, take, s.lo, s.hi,
                                        s.sel_offset, req_to_token=s.req_to_token, token_row=s.token_row,
                                        out=s.lists[layer], impl=impl)  # K3
            outs.append(_k5(q[layer], s.k[layer], s.v[layer], s.sparse_indptr, s.lists[layer], s.sparse_len, impl))
        return outs[0]

    def token_topk():
        assemble()
        outs = []
        num_kv = s.k[0].shape[1]
        group = q[0].shape[1] // num_kv
        for layer in range(L):
            kk = s.k[layer][1 : 1 + bs * n].view(bs, n, num_kv, -1).permute(0, 2, 3, 1)  # [bs, H, D, N]
            qq = q[layer].view(bs, num_kv, group, -1)  # [bs, H, G, D]
            logits = torch.matmul(qq, kk).float().sum((1, 2))  # [bs, N]: every key read once
            logits[:, :SINKS] = float("-inf")
            logits[:, n - TEXT :] = float("-inf")
            top = torch.topk(logits, s.sparse_len - s.always, dim=1).indices  # [bs, f]
            view[layer, :, s.always :] = torch.gather(s.req_to_token, 1, top.to(torch.int64)).long()
            outs.append(_k5(q[layer], s.k[layer], s.v[layer], s.sparse_indptr, s.lists[layer], s.sparse_len, impl))
        return outs[0]

    full, sparse = L * bs * n, L * bs * s.sparse_len
    return {"dense_sdpa": (dense_sdpa, full), "dense_k5": (dense_k5, full), "mosaic_keep": (mosaic_keep, sparse),
            "mosaic_reselect": (mosaic_reselect, sparse), "token_topk": (token_topk, full // 2 + sparse)}
    # (token_topk reads every K row once for scoring: half a K+V row per token per layer)


def _time(fn, repeats: int, use_graph: bool, device) -> tuple[float, str]:
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
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times), mode


def _check(s: Setup, q, name: str, out: torch.Tensor) -> float:
    """Relative error of layer 0 against an fp32 gather+softmax over the list the variant attended."""
    if name.startswith("dense"):
        indptr, slots = s.dense_indptr, s.dense_slots
    else:
        indptr, slots = s.sparse_indptr, s.lists[0]
    ref = K.sparse_decode.sparse_decode_reference(q[0].float(), s.k[0].float(), s.v[0].float(), indptr, slots)
    return float((out.float() - ref).norm() / ref.norm().clamp(min=1e-12))


def main(argv=None) -> list[dict]:
    args = _args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    impl = "triton"
    if device.type == "cpu":
        import os

        if os.environ.get("TRITON_INTERPRET") != "1":
            raise SystemExit("gpu_decode_step: no CUDA; run with TRITON_INTERPRET=1 --quick for a CPU smoke run")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (Triton interpreter; not GPU numbers)"
    print(f"device: {name}; torch {torch.__version__}; layers {args.layers}, {args.q_heads}q/{args.kv_heads}kv x "
          f"{args.head_dim}, {args.dtype}, budget {args.budget}, always {SINKS + TEXT}")
    pool = max(args.contexts) * max(args.batch) + 1
    gen = torch.Generator(device=device).manual_seed(0)
    k_layers = [torch.randn(pool, args.kv_heads, args.head_dim, device=device, dtype=dtype, generator=gen)
                for _ in range(args.layers)]
    v_layers = [torch.randn(pool, args.kv_heads, args.head_dim, device=device, dtype=dtype, generator=gen)
                for _ in range(args.layers)]
    row_bytes = 2 * args.kv_heads * args.head_dim * k_layers[0].element_size()  # K + V of one token, one layer
    rows = []
    print(f"{'N':>7} {'bs':>3} {'variant':>16} {'mode':>5} {'ms/step':>9} {'vs sdpa':>8} {'GB read':>8} {'TB/s':>6} {'rel err':>8}")
    for n in args.contexts:
        for bs in args.batch:
            s = Setup(args, n, bs, k_layers, v_layers, device)
            q = [torch.randn(bs, args.q_heads, args.head_dim, device=device, dtype=dtype, generator=gen)
                 for _ in range(args.layers)]
            base = None
            for variant, (fn, entries) in _variants(s, q, impl).items():
                err = _check(s, q, variant, fn())
                ms, mode = _time(fn, args.repeats, not args.no_graph, device)
                base = ms if base is None else base
                gb = entries * row_bytes / 1e9
                rows.append(dict(n=n, bs=bs, variant=variant, mode=mode, ms=ms, ratio=ms / base, gb=gb, err=err))
                print(f"{n:>7} {bs:>3} {variant:>16} {mode:>5} {ms:>9.3f} {ms / base:>7.3f}x {gb:>8.3f} "
                      f"{gb / ms:>6.2f} {err:>8.1e}")
                limit = 1e-2 if dtype != torch.float32 else 1e-4
                assert err < limit, f"{variant} at N={n} bs={bs}: relative error {err:.2e} over {limit}"
            del s, q
    return rows


if __name__ == "__main__":
    main()
