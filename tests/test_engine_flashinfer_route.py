"""The Mosaic backend's FlashInfer route — what CUDA runs when ``flashinfer`` imports — through a real
sgl.Engine on CPU, with `mosaic_sglang.testing.fake_flashinfer` standing in for FlashInfer's paged wrappers
(``MOSAIC_ATTENTION_RUNNER=fake-flashinfer``). The fake keeps FlashInfer's contract (page list read at run
time, bottom-right causal prefill) and kills the scheduler if the route breaks its own: a plan per forward,
a page list per layer, equal lengths. At a budget covering the context it equals SGLang's dense
``torch_native`` backend (video, chunked prefill); at a small budget with offload (host-resident clusters
gathered into a scratch) it equals the torch reference route on the same selection."""

from __future__ import annotations

import contextlib
from collections import Counter

import pytest

from engine_support import VIDEO_PROMPT, assert_same_answers, cpu_engine_kwargs, run_requests
from mosaic_sglang.integration.forward_timer import read_forward_log
from mosaic_sglang.testing.fake_flashinfer import read_log

pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]

LOGPROB_TOL = 4e-5  # as tests/test_engine_exactness.py: summation order only
FULL_BUDGET = 1 << 20
SPARSE = {"sink_tokens": 4, "recent_window": 16, "max_cluster_size": 16, "host_store_tokens": 1 << 14}


@contextlib.contextmanager
def _engine(model_path, monkeypatch, *, runner=None, logs=None, **backend):
    """An ``sgl.Engine`` whose scheduler sees ``MOSAIC_ATTENTION_RUNNER=runner`` and, with ``logs``, writes
    the forward log and the fake FlashInfer's log there (read when the scheduler starts: it inherits)."""
    import sglang as sgl

    with monkeypatch.context() as env:
        if runner is not None:
            env.setenv("MOSAIC_ATTENTION_RUNNER", runner)
        if logs is not None:
            env.setenv("MOSAIC_FORWARD_LOG_DIR", str(logs / "forwards"))
            env.setenv("MOSAIC_FAKE_FLASHINFER_LOG", str(logs / "flashinfer"))
        engine = sgl.Engine(**cpu_engine_kwargs(model_path, **backend))
    try:
        yield engine
    finally:
        engine.shutdown()


def _run(model_path, requests, monkeypatch, **kwargs):
    with _engine(model_path, monkeypatch, **kwargs) as engine:
        return run_requests(engine, requests)


def _check_one_plan_per_forward(logs, num_layers: int) -> Counter:
    """Every Mosaic forward ran the FlashInfer route under one plan with one run (and one page list) per
    layer; returns the plans' kinds."""
    forwards = read_forward_log(logs / "forwards")
    records = read_log(logs / "flashinfer")
    plans = [r for r in records if r["event"] == "plan"]
    runs = Counter((r["pid"], r["plan"]) for r in records if r["event"] == "run")
    buffers = {key: {r["buffer"] for r in records if r["event"] == "run" and (r["pid"], r["plan"]) == key}
               for key in runs}
    assert {f["attention"] for f in forwards} == {"flashinfer"}, forwards
    assert len(plans) == len(forwards)
    assert set(runs.values()) == {num_layers} and all(len(b) == num_layers for b in buffers.values())
    return Counter(p["kind"] for p in plans)


def test_flashinfer_route_equals_dense_and_reference(tiny_vl_model, video_dir, tmp_path, monkeypatch):
    from transformers import AutoConfig

    num_layers = AutoConfig.from_pretrained(tiny_vl_model).get_text_config().num_hidden_layers
    a, b = str(video_dir / "a.mp4"), str(video_dir / "b.mp4")
    ask = lambda text, video: {"inputs": {"prompt": VIDEO_PROMPT.format(question=text), "video_data": [video]},  # noqa: E731
                               "max_new_tokens": 4}
    requests = [ask("what happens?", a), ask("and then?", a), ask("what color?", b)]  # the second reuses a's prefix
    dense = _run(tiny_vl_model, requests, monkeypatch, attention_backend="torch_native")
    full = _run(tiny_vl_model, requests, monkeypatch, runner="fake-flashinfer", logs=tmp_path / "full",
                enable_mosaic=True, mosaic_budget=FULL_BUDGET, chunked_prefill_size=128)
    assert_same_answers(dense, full, LOGPROB_TOL)
    kinds = _check_one_plan_per_forward(tmp_path / "full", num_layers)
    assert kinds["prefill"] >= 4 and kinds["decode"] >= 6, kinds  # chunked prefills and decode steps
    reference = _run(tiny_vl_model, requests, monkeypatch, runner="reference", enable_mosaic=True, mosaic_budget=48,
                     mosaic_config=SPARSE)
    sparse = _run(tiny_vl_model, requests, monkeypatch, runner="fake-flashinfer", logs=tmp_path / "sparse",
                  enable_mosaic=True, mosaic_budget=48, mosaic_config=SPARSE)
    assert_same_answers(reference, sparse, LOGPROB_TOL)
    _check_one_plan_per_forward(tmp_path / "sparse", num_layers)
    stats = [s["mosaic"][0] for s in sparse]
    assert all(s["attended_tokens"] < s["context_tokens"] for s in stats)
    assert any(s.get("host_tokens", 0) > 0 for s in stats), stats  # later questions read offloaded clusters


def test_emulated_decode_graphs_equal_dense(tiny_vl_model, video_dir, tmp_path, monkeypatch):
    """``graph_text_tokens > 0``: decode steps that keep their selection replay captured graphs — on CPU an
    `EmulatedGraph` per (batch size, layer) (``MOSAIC_EMULATE_DECODE_GRAPHS=1``): no host sync inside, every
    read at the captured address, FlashInfer's CUDA-graph wrapper (fake) planned once per step. Two requests
    decode together (padded to a captured batch of 4), and the answers equal dense at full budget."""
    a, b = str(video_dir / "a.mp4"), str(video_dir / "b.mp4")
    requests = [{"inputs": {"prompt": [VIDEO_PROMPT.format(question="what happens?")] * 3,
                            "video_data": [[a], [b], [a]]}, "max_new_tokens": 8}]
    dense = _run_batch(tiny_vl_model, requests, monkeypatch, attention_backend="torch_native")
    with monkeypatch.context() as env:
        env.setenv("MOSAIC_EMULATE_DECODE_GRAPHS", "1")
        graphs = _run_batch(tiny_vl_model, requests, monkeypatch, runner="fake-flashinfer", logs=tmp_path,
                            enable_mosaic=True, mosaic_budget=FULL_BUDGET, mosaic_config={"graph_text_tokens": 64,
                                                                                  "selection_heads": "shared"})
    assert_same_answers(dense, graphs, LOGPROB_TOL)
    forwards = read_forward_log(tmp_path / "forwards")
    graph_steps = [f for f in forwards if f["attention"] == "flashinfer-graph"]
    # the first decode step after a question may select (eager); the kept steps after it replay (padded 3 → 4)
    assert len(graph_steps) >= 5 and {f["batch"] for f in graph_steps} == {3}, forwards
    assert all(f["mode"] == "decode" for f in graph_steps)
    assert {f["attention"] for f in forwards if f["mode"] != "decode"} == {"flashinfer"}


def _run_batch(model_path, requests, monkeypatch, **kwargs):
    """`_run` for batched requests: each ``inputs`` holds lists (one generate call decodes them together)."""
    outputs = []
    with _engine(model_path, monkeypatch, **kwargs) as engine:
        for req in requests:
            outs = engine.generate(sampling_params={"max_new_tokens": req["max_new_tokens"], "temperature": 0.0},
                                   return_logprob=True, **req["inputs"])
            outputs += [{"output_ids": list(o["output_ids"]),
                         "logprobs": [float(x[0]) for x in o["meta_info"]["output_token_logprobs"]]} for o in outs]
    return outputs
