"""The Mosaic backend's Triton route — what CUDA runs — through a real sgl.Engine on CPU under the Triton
interpreter (``MOSAIC_TRITON_ATTENTION=1``, ``TRITON_INTERPRET=1`` in the scheduler's environment): decode
through `sparse_decode`, prefill (whole and chunked, the chunks reading their selected prefix from the
pool) through SGLang's extend attention. At a budget covering the context it equals SGLang's dense
``torch_native`` backend; at a small budget it equals the torch reference route on the same selection."""

from __future__ import annotations

import pytest

from engine_support import VIDEO_PROMPT, assert_same_answers, cpu_engine_kwargs, run_requests
from mosaic_sglang.integration.forward_timer import read_forward_log

pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]

LOGPROB_TOL = 4e-5  # as tests/test_engine_exactness.py: summation order only
FULL_BUDGET = 1 << 20


def _run(model_path, requests, monkeypatch, *, triton: bool, log_dir=None, **backend):
    import sglang as sgl

    with monkeypatch.context() as env:
        if triton:  # read when the scheduler process starts (spawned: it inherits this environment)
            env.setenv("TRITON_INTERPRET", "1")
            env.setenv("MOSAIC_TRITON_ATTENTION", "1")
        if log_dir is not None:
            env.setenv("MOSAIC_FORWARD_LOG_DIR", str(log_dir))
        engine = sgl.Engine(**cpu_engine_kwargs(model_path, **backend))
    try:
        return run_requests(engine, requests)
    finally:
        engine.shutdown()


def test_triton_route_equals_dense_and_reference(tiny_vl_model, tmp_path, monkeypatch):
    from mosaic_sglang.frontend.video import make_synthetic_video

    # a short clip (4 frame pairs of 16 tokens): the interpreter runs every kernel program in Python
    a = str(make_synthetic_video(tmp_path / "short.mp4", num_frames=8, size=112, num_scenes=2, seed=7))
    requests = [{"inputs": {"prompt": VIDEO_PROMPT.format(question="what happens?"), "video_data": [a]},
                 "max_new_tokens": 3},
                {"inputs": {"prompt": VIDEO_PROMPT.format(question="and then?"), "video_data": [a]},
                 "max_new_tokens": 3}]  # the second reuses the first's video prefix from the radix cache
    dense = _run(tiny_vl_model, requests, monkeypatch, triton=False, attention_backend="torch_native")
    full = _run(tiny_vl_model, requests, monkeypatch, triton=True, log_dir=tmp_path / "fwd", enable_mosaic=True,
                mosaic_budget=FULL_BUDGET, chunked_prefill_size=48)
    assert_same_answers(dense, full, LOGPROB_TOL)
    forwards = read_forward_log(tmp_path / "fwd")
    # every forward took the Triton route: several prefill chunks, then decode steps
    assert {f["attention"] for f in forwards} == {"triton"}, forwards
    assert sum(f["mode"] == "decode" for f in forwards) >= 4 and sum(f["mode"] != "decode" for f in forwards) >= 3
    sparse_ref = _run(tiny_vl_model, requests, monkeypatch, triton=False, enable_mosaic=True, mosaic_budget=16)
    sparse = _run(tiny_vl_model, requests, monkeypatch, triton=True, enable_mosaic=True, mosaic_budget=16)
    assert_same_answers(sparse_ref, sparse, LOGPROB_TOL)
    assert all(s["mosaic"][0]["attended_tokens"] < s["mosaic"][0]["context_tokens"] for s in sparse)
