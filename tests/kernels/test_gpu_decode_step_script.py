"""`benchmarks/gpu_decode_step.py` runs end to end at smoke size (CPU: under the Triton interpreter), so
the script a GPU session brings is known to work before the device time starts. Its numbers here are
not GPU numbers and are not checked; its correctness check (every attending variant's layer 0 against an
fp32 reference over the same lists), its pool sizing (a (N, bs) over the cap is skipped, with a line), its
results file and its FlashInfer stage's wiring (against a torch stand-in with FlashInfer 0.7.2's
plan/run contract: one plan, the page list read at run time) are."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
SPARSE = ["mosaic_keep", "mosaic_select_only", "mosaic_reselect", "token_topk"]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # puts benchmarks/ on sys.path itself
    return module


def test_every_variant_runs_and_matches_the_reference(tmp_path, capsys):
    module = _load("gpu_decode_step")
    out = tmp_path / "decode.json"
    rows = module.main(["--quick", "--batch", "1", "2", "--max-pool-tokens", "700", "--out", str(out)])
    assert [(r["bs"], r["budget"], r["variant"]) for r in rows] == \
        [(1, None, "dense_sdpa"), (1, None, "dense_k5")] + [(1, b, v) for b in (64, 128) for v in SPARSE]
    for r in rows:
        assert r["ms"] > 0 and r["gpu_numbers"] is False and r["speedup"] > 0 and r["floor_ms"] > 0, r
        assert (r["err"] is None) == (r["variant"] == "mosaic_select_only"), r
        assert r["err"] is None or r["err"] < 1e-2, r
    dense = next(r for r in rows if r["variant"] == "dense_k5")
    for r in rows:
        if r["variant"] == "mosaic_keep":
            assert r["gb"] < dense["gb"]  # the kept selection reads fewer K/V rows than the whole context
        if r["variant"] == "mosaic_reselect":
            assert r["select_share"] is not None and r["select_share"] > 0
    text = capsys.readouterr().out
    assert "NOT GPU numbers" in text and "skipped: pool of 1,281 slots over --max-pool-tokens 700" in text
    saved = json.loads(out.read_text())
    assert saved["gpu_numbers"] is False and saved["rows"] == rows and not saved["failures"]
    assert saved["skipped"] == [dict(n=640, bs=2, why="pool of 1,281 slots over --max-pool-tokens 700")]
    assert [(g["bs"], g["budget"]) for g in saved["goals"]] == [(1, 64), (1, 128)]
    assert all(g["met"] is None for g in saved["goals"])  # goals are judged on CUDA only


def test_a_failed_check_is_written_then_exits_nonzero(tmp_path):
    report_module = _load("gpu_decode_report")
    report = report_module.Report(name="cpu", gpu=False, copy_gbps=10.0, check_limit=1e-2, config={})
    report.add(n=64, bs=1, budget=None, variant="dense_k5", mode="cpu", ms=1.0, nbytes=10**6, err=5e-3)
    report.add(n=64, bs=1, budget=8, variant="mosaic_keep", mode="cpu", ms=1.0, nbytes=10**5, err=float("nan"))
    with pytest.raises(SystemExit) as stop:
        report.finish(str(tmp_path / "r.json"))
    assert stop.value.code == 1
    saved = json.loads((tmp_path / "r.json").read_text())
    assert len(saved["rows"]) == 2 and len(saved["failures"]) == 1 and "mosaic_keep" in saved["failures"][0]


class _StandInDecodeWrapper:
    """FlashInfer 0.7.2's ``BatchDecodeWithPagedKVCacheWrapper`` contract in torch (CPU): ``plan`` keeps the
    lengths and the page list; ``run`` reads the page list from the wrapper at run time (what
    `use_layer_indices` relies on) over ``(k, v)`` caches of pages ``[pages, page_size, H, D]``."""

    runs: list = []
    plans = 0

    def __init__(self, workspace, kv_layout, use_tensor_cores=False, backend="auto"):
        from mosaic_sglang.attention import flashinfer_api

        assert kv_layout == "NHD" and use_tensor_cores and backend == flashinfer_api.FA2
        self.attr = flashinfer_api.INDICES_BUFFER_ATTR

    def plan(self, indptr, indices, last_page_len, num_qo_heads, num_kv_heads, head_dim, page_size, *,
             q_data_type, kv_data_type):
        assert indptr.dtype == indices.dtype == last_page_len.dtype == torch.int32
        assert page_size == 1 and bool((last_page_len == 1).all()) and q_data_type == kv_data_type
        self.indptr, self.num_qo_heads = indptr.clone(), num_qo_heads
        setattr(self, self.attr, indices)
        type(self).plans += 1

    def run(self, q, paged_kv_cache):
        from mosaic_sglang.kernels.sparse_decode import sparse_decode_reference

        k, v = paged_kv_cache
        pages = getattr(self, self.attr)
        assert k.dim() == 4 and k.shape[1] == 1 and pages.dtype == torch.int32
        assert pages.numel() == int(self.indptr[-1]) and q.shape[1] == self.num_qo_heads
        type(self).runs.append(pages.clone())
        return sparse_decode_reference(q, k[:, 0], v[:, 0], self.indptr.long(), pages.long())


def test_flashinfer_rows_plan_once_and_swap_each_layers_list():
    module = _load("gpu_decode_step")
    fi_rows = sys.modules["gpu_flashinfer_rows"]
    from mosaic_sglang.attention import flashinfer_api

    args = module._args(["--quick"])
    device, dtype = torch.device("cpu"), torch.float16
    k, v, gen = module._pool(args, 640, device, dtype)
    s = module.Setup(640, 1, k, v, device)
    q = [torch.randn(1, args.q_heads, args.head_dim, dtype=dtype, generator=gen) for _ in range(args.layers)]
    lists = module.BudgetLists(s, 64)
    module.sparse_variants(s, lists, q, "triton")["mosaic_keep"][0]()  # fills lists.lists: what FlashInfer must see
    report = module.Report(name="cpu", gpu=False, copy_gbps=10.0, check_limit=1e-2, config={})
    stand_in = type("flashinfer", (), {"BatchDecodeWithPagedKVCacheWrapper": _StandInDecodeWrapper})
    stage = fi_rows.FlashInferRows(stand_in, flashinfer_api, device, dtype, args, report, workspace_bytes=64)
    measured = {}

    def measure(name, step):
        fn, nbytes, attended = step
        _StandInDecodeWrapper.runs.clear()
        _StandInDecodeWrapper.plans = 0
        measured[name] = (module.check_layer0(s, q, attended, fn()), nbytes, list(_StandInDecodeWrapper.runs),
                          _StandInDecodeWrapper.plans)

    stage.dense_rows(s, q, measure)
    stage.mosaic_rows(s, lists, q, measure)
    assert stage.broken is None and not any("failed" in n for n in report.notes), report.notes
    assert set(measured) == {"flashinfer_dense", "flashinfer_mosaic_keep"}
    err, _, runs, plans = measured["flashinfer_mosaic_keep"]
    assert err < 1e-2 and plans == 0 and len(runs) == args.layers  # the step itself never plans
    for layer, pages in enumerate(runs):  # layer l attended layer l's list, not the planned one
        assert torch.equal(pages.long(), lists.lists[layer]), layer
    assert not torch.equal(runs[0], runs[1])
    err, _, runs, _ = measured["flashinfer_dense"]
    assert err < 1e-2 and all(torch.equal(p.long(), s.dense_slots) for p in runs)
    assert sum("plan()" in n for n in report.notes) == 2


def test_served_row_runs_the_serving_runner_in_graph_mode():
    """``flashinfer_mosaic_served`` drives `FlashInferRunner` (CUDA-graph mode) over `StaticDecodeLists` with
    the project's fake FlashInfer (its contract checked: one plan per step, a page list per layer): layer l
    attends exactly layer l's kept list of ``mosaic_keep``, within the check's tolerance."""
    module = _load("gpu_decode_step")
    fi_rows = sys.modules["gpu_flashinfer_rows"]
    from mosaic_sglang.attention import flashinfer_api
    from mosaic_sglang.testing import fake_flashinfer

    args = module._args(["--quick"])
    device, dtype = torch.device("cpu"), torch.float32
    k, v, gen = module._pool(args, 2 * 640, device, dtype)
    s = module.Setup(640, 2, k, v, device)
    q = [torch.randn(2, args.q_heads, args.head_dim, dtype=dtype, generator=gen) for _ in range(args.layers)]
    lists = module.BudgetLists(s, 64)
    module.sparse_variants(s, lists, q, "triton")["mosaic_keep"][0]()  # fills lists.lists
    report = module.Report(name="cpu", gpu=False, copy_gbps=10.0, check_limit=1e-2, config={})
    stage = fi_rows.FlashInferRows(fake_flashinfer, flashinfer_api, device, dtype, args, report, workspace_bytes=64)
    measured = {}

    def measure(name, step):
        fn, nbytes, attended = step
        measured[name] = (module.check_layer0(s, q, attended, fn()), attended)

    fi_rows.served_rows(stage, s, lists, q, measure)
    assert stage.broken is None, report.notes
    err, (indptr, layer0) = measured["flashinfer_mosaic_served"]
    assert err < 1e-5
    # the served lists hold the same entries as mosaic_keep's, request by request (order within a list is free)
    for b in range(s.bs):
        a, z = int(indptr[b]), int(indptr[b + 1])
        assert sorted(layer0[a:z].tolist()) == sorted(lists.lists[0][a:z].tolist())
    assert any("served step staging" in n for n in report.notes)
