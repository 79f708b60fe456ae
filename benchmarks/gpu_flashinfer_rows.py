"""FlashInfer rows of `gpu_decode_step.py`, added only when ``import flashinfer`` works and the device is CUDA
(FlashInfer may import on a CPU box but cannot run there).

* ``flashinfer_dense``: ``BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD", use_tensor_cores=True,
  backend="fa2")`` planned over every slot of every request: page size 1, int32 ``indptr [bs + 1]`` /
  ``indices [bs·N]``, ``last_page_len`` all ones; one plan serves all layers.
* ``flashinfer_mosaic_keep``: Mosaic's kept selection attended by FlashInfer: K4 writes the always part
  into int32 per-layer lists ``[L, bs·A]`` and the slab copy fills the rest (as ``mosaic_keep``); ONE plan
  over the sparse lengths, then per layer the wrapper is pointed at that layer's list
  (`mosaic_sglang.attention.flashinfer_api.use_layer_indices`) before ``run``. ``fa2`` is named
  explicitly: it is the backend whose ``run`` reads the page list at run time (see `flashinfer_api`).
* ``flashinfer_mosaic_served``: the same kept selection through the serving code itself
  (`mosaic_sglang.attention`): a `ForwardPlan` staged into `StaticDecodeLists` and planned by
  `FlashInferRunner.plan_graph` out of the graph (host; its cost is printed as a note), then per layer
  `StaticDecodeLists.slots` and `FlashInferRunner.run_graph_layer` (FlashInfer's CUDA-graph decode wrapper)
  — what a captured Mosaic decode step runs.
* ``plan()``: the median of 20 host-timed calls on a separate wrapper (device ``indptr``, so the
  ``.to("cpu")`` inside plan syncs, as in serving), dense and sparse, printed as a note.

Caches are passed as ``(k, v)`` with each layer's ``[slots, kv_heads, head_dim]`` viewed as
``[slots, 1, kv_heads, head_dim]`` (pages of one token, NHD). Untested here (no GPU on the project's
machine): every FlashInfer call is guarded, and a failure is printed once, after which its rows are skipped.
"""

from __future__ import annotations

import statistics
import time

import torch
from gpu_decode_setup import SINKS, TEXT, BudgetLists, Setup, assemble_always_into, row_bytes

__all__ = ["FlashInferRows", "served_plan", "served_rows"]

WORKSPACE_BYTES = 256 << 20
"""Float workspace per wrapper: FlashInfer recommends 128 MB; split-KV partials of bs=8 × 256K get twice that."""
PLAN_REPEATS = 20


class FlashInferRows:
    """Builds and measures the FlashInfer variants through the caller's ``measure(name, step)``."""

    def __init__(self, flashinfer, api, device, dtype, args, report, workspace_bytes: int = WORKSPACE_BYTES):
        """``flashinfer``: the module (a stand-in in the CPU test); ``api``:
        `mosaic_sglang.attention.flashinfer_api`; ``report``: the `Report` notes go to."""
        self.fi, self.api, self.device, self.dtype = flashinfer, api, device, dtype
        self.args, self.report = args, report
        self.workspace_bytes = workspace_bytes
        self.broken: str | None = None
        self.wrappers = {}  # role -> wrapper: 'dense', 'mosaic', 'plan' (plan timing only)

    @classmethod
    def create(cls, device, dtype, args, report) -> "FlashInferRows | None":
        """The stage, or None (with a note saying why) without CUDA or without an importable FlashInfer."""
        if device.type != "cuda":
            report.note("flashinfer: skipped: needs a CUDA device (no FlashInfer rows in a CPU run)")
            return None
        try:
            import flashinfer

            from mosaic_sglang.attention import flashinfer_api
        except Exception as e:  # absent, or present but broken (a CUDA / torch mismatch)
            first_line = str(e).splitlines()[0][:120] if str(e) else ""
            report.note(f"flashinfer: not available ({type(e).__name__}: {first_line}); no FlashInfer rows")
            return None
        report.note(f"flashinfer: {getattr(flashinfer, '__version__', '?')}: rows flashinfer_dense, "
                    "flashinfer_mosaic_keep and plan() cost added")
        return cls(flashinfer, flashinfer_api, device, dtype, args, report)

    def _wrapper(self, role: str):
        if role not in self.wrappers:
            workspace = torch.zeros(self.workspace_bytes, dtype=torch.uint8, device=self.device)
            self.wrappers[role] = self.fi.BatchDecodeWithPagedKVCacheWrapper(
                workspace, "NHD", use_tensor_cores=True, backend=self.api.FA2)
        return self.wrappers[role]

    def _plan(self, wrapper, indptr, indices) -> None:
        """``indptr [bs + 1]`` / ``indices [nnz]`` int32 on the device; page size 1, so every last page holds 1."""
        ones = torch.ones(indptr.numel() - 1, dtype=torch.int32, device=self.device)
        wrapper.plan(indptr, indices, ones, self.args.q_heads, self.args.kv_heads, self.args.head_dim, 1,
                     q_data_type=self.dtype, kv_data_type=self.dtype)

    def _plan_ms(self, indptr, indices) -> float:
        """Median host milliseconds of one ``plan()`` (3 warm-ups, then `PLAN_REPEATS`)."""
        wrapper, times = self._wrapper("plan"), []
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        for i in range(3 + PLAN_REPEATS):
            sync()
            start = time.perf_counter()
            self._plan(wrapper, indptr, indices)
            sync()
            if i >= 3:
                times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)

    @staticmethod
    def _pages(s: Setup):
        """Per layer ``(k, v)`` as ``[slots, 1, kv_heads, head_dim]`` views: pages of one token, NHD."""
        return [(k.unsqueeze(1), v.unsqueeze(1)) for k, v in zip(s.k, s.v)]

    def _guarded(self, what: str, s: Setup, body) -> None:
        """Run ``body()``; on a FlashInfer error note it once and skip every later FlashInfer row."""
        if self.broken:
            return
        try:
            body()
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as e:
            self.broken = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
            self.report.note(f"flashinfer: {what} at N={s.n} bs={s.bs} failed ({self.broken}); "
                             "no further FlashInfer rows")

    def dense_rows(self, s: Setup, q, measure) -> None:
        """``flashinfer_dense`` over every slot, and the cost of its plan()."""
        num_layers = len(s.k)

        def body():
            wrapper, pages = self._wrapper("dense"), self._pages(s)
            indptr = s.dense_indptr.to(torch.int32)
            indices = s.req_to_token.flatten()  # [bs·N] int32, contiguous
            self._plan(wrapper, indptr, indices)

            def flashinfer_dense():
                return [wrapper.run(q[layer], pages[layer]) for layer in range(num_layers)][0]

            measure("flashinfer_dense", (flashinfer_dense, num_layers * s.bs * s.n * row_bytes(s),
                                         (s.dense_indptr, indices)))
            self.report.note(f"  flashinfer plan() dense N={s.n} bs={s.bs} ({indices.numel():,} pages): "
                             f"{self._plan_ms(indptr, indices):.3f} ms (median of {PLAN_REPEATS}, host)")

        self._guarded("flashinfer_dense", s, body)

    def mosaic_rows(self, s: Setup, lists: BudgetLists, q, measure) -> None:
        """``flashinfer_mosaic_keep``: one plan per step, each layer's int32 list swapped in before its run."""
        num_layers, a = len(s.k), lists.sparse_len

        def body():
            wrapper, pages = self._wrapper("mosaic"), self._pages(s)
            lists32 = torch.empty(num_layers, s.bs * a, dtype=torch.int32, device=self.device)  # [L, bs·A]
            slab32 = lists.slab.to(torch.int32)  # [L, bs, budget]
            indptr = lists.sparse_indptr.to(torch.int32)
            assemble_always_into(s, lists32, a, lists.out_offset, "triton")
            lists32.view(num_layers, s.bs, a)[:, :, s.always :] = slab32
            self._plan(wrapper, indptr, lists32[0])  # lengths only matter: one plan for every layer

            def flashinfer_mosaic_keep():
                assemble_always_into(s, lists32, a, lists.out_offset, "triton")  # K4, as mosaic_keep
                lists32.view(num_layers, s.bs, a)[:, :, s.always :] = slab32  # the req_to_selection copy
                outs = []
                for layer in range(num_layers):
                    self.api.use_layer_indices(wrapper, lists32[layer])
                    outs.append(wrapper.run(q[layer], pages[layer]))
                return outs[0]

            measure("flashinfer_mosaic_keep", (flashinfer_mosaic_keep, num_layers * s.bs * a * row_bytes(s),
                                               (lists.sparse_indptr, lists32[0])))
            self.report.note(f"  flashinfer plan() mosaic N={s.n} bs={s.bs} budget={lists.budget} "
                             f"({lists32[0].numel():,} pages): {self._plan_ms(indptr, lists32[0]):.3f} ms "
                             f"(median of {PLAN_REPEATS}, host)")

        self._guarded("flashinfer_mosaic_keep", s, body)


def served_plan(s: Setup, lists: BudgetLists):
    """The kept-selection decode step of `BudgetLists` as the `ForwardPlan` serving builds: per request its
    always positions (sinks, trailing text) then its selected ones, every layer its own list."""
    from mosaic_sglang.serving.plan import ForwardPlan

    num_layers, bs, n, a, device = len(s.k), s.bs, s.n, lists.sparse_len, s.device
    always = torch.cat([torch.arange(SINKS), torch.arange(n - TEXT, n)]).to(device)  # [always]
    positions = torch.cat([always[None, None].expand(num_layers, bs, -1), lists.selected_positions], dim=2)
    kv_request = torch.arange(bs, device=device).repeat_interleave(a)
    return ForwardPlan(torch.arange(bs + 1), torch.full((bs,), n - 1), torch.arange(bs + 1) * a,
                       positions.reshape(num_layers, bs * a), kv_request, torch.full((bs,), s.always), (), 1, a)


def served_rows(rows: "FlashInferRows", s: Setup, lists: BudgetLists, q, measure) -> None:
    """``flashinfer_mosaic_served`` (module docstring), and the host cost of staging one step."""
    from mosaic_sglang.attention import FlashInferRunner
    from mosaic_sglang.attention.static_lists import StaticDecodeLists

    num_layers, bs, a = len(s.k), s.bs, lists.sparse_len
    args = rows.args

    def body():
        workspace = torch.zeros(rows.workspace_bytes, dtype=torch.uint8, device=rows.device)
        runner = FlashInferRunner(rows.fi, workspace, num_layers=num_layers, num_qo_heads=args.q_heads,
                                  num_kv_heads=args.kv_heads, head_dim=args.head_dim, dtype=rows.dtype,
                                  use_tensor_cores=True)
        runner.init_graphs(bs, a)
        static = StaticDecodeLists(num_layers, bs, a, rows.device)
        plan, row_ids = served_plan(s, lists), torch.arange(bs, device=rows.device)
        scale = args.head_dim ** -0.5

        def stage():
            runner.plan_graph(bs, static.stage(plan, row_ids, bs))

        def flashinfer_mosaic_served():
            return [runner.run_graph_layer(layer, bs, q[layer], s.k[layer], s.v[layer],
                                           static.slots(layer, bs, s.req_to_token), scale)
                    for layer in range(num_layers)][0]

        stage()
        layer0 = static.slots(0, bs, s.req_to_token)[: bs * a]
        measure("flashinfer_mosaic_served", (flashinfer_mosaic_served, num_layers * bs * a * row_bytes(s),
                                             (lists.sparse_indptr, layer0)))
        times, sync = [], torch.cuda.synchronize if rows.device.type == "cuda" else (lambda: None)
        for _ in range(3 + PLAN_REPEATS):
            sync()
            start = time.perf_counter()
            stage()
            sync()
            times.append((time.perf_counter() - start) * 1e3)
        rows.report.note(f"  served step staging (StaticDecodeLists.stage + plan_graph, host, out of the graph) "
                         f"N={s.n} bs={bs} budget={lists.budget}: {statistics.median(times[3:]):.3f} ms")

    rows._guarded("flashinfer_mosaic_served", s, body)
