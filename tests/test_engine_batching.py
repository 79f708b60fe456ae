"""Several requests in one forward through a real sgl.Engine (tiny Qwen2.5-VL, CPU): two different
videos and a text-only request sent as one batch run in shared forwards (seen in the policy's dump),
and at a budget that covers the context Mosaic equals SGLang's dense ``torch_native`` backend for every
request of the batch (tokens, logprobs within 1e-5). At a small budget the batch is sparse and each
video keeps its own index."""

from __future__ import annotations

import pytest
import torch

from engine_support import VIDEO_PROMPT, cpu_engine_kwargs, greedy
from mosaic_sglang.config import MOSAIC_DUMP_DIR

pytestmark = [pytest.mark.engine, pytest.mark.timeout(600)]

LOGPROB_TOL = 1e-5
TEXT_PROMPT = "<|im_start|>user\nname three colors<|im_end|>\n<|im_start|>assistant\n"


def _batch(video_dir):
    prompts = [VIDEO_PROMPT.format(question="what happens?"), VIDEO_PROMPT.format(question="what color?"), TEXT_PROMPT]
    return prompts, [str(video_dir / "a.mp4"), str(video_dir / "b.mp4"), None]


def _run(model, video_dir, dump_dir=None, **mosaic):
    import sglang as sgl

    mp = pytest.MonkeyPatch()
    if dump_dir is not None:
        mp.setenv(MOSAIC_DUMP_DIR.name, str(dump_dir))
    engine = sgl.Engine(**cpu_engine_kwargs(model, **mosaic))
    try:
        prompts, videos = _batch(video_dir)
        outs = engine.generate(prompt=prompts, video_data=videos, sampling_params=greedy(6), return_logprob=True)
    finally:
        engine.shutdown()
        mp.undo()
    return [{"output_ids": list(o["output_ids"]), "logprobs": [float(x[0]) for x in o["meta_info"]["output_token_logprobs"]],
             "rid": o["meta_info"]["id"], "mosaic": o["meta_info"].get("mosaic")} for o in outs]


@pytest.fixture(scope="module")
def runs(tiny_vl_model, video_dir, tmp_path_factory):
    dump = tmp_path_factory.mktemp("batch-dump")
    dense = _run(tiny_vl_model, video_dir, attention_backend="torch_native")
    full = _run(tiny_vl_model, video_dir, dump_dir=dump, enable_mosaic=True, mosaic_budget=1 << 20)
    sparse = _run(tiny_vl_model, video_dir, enable_mosaic=True, mosaic_budget=32)
    records = [torch.load(p, weights_only=False) for p in sorted(dump.glob("*.pt"))]
    return dense, full, sparse, records


def test_batch_at_full_budget_equals_dense(runs):
    dense, full, _, _ = runs
    for d, m in zip(dense, full):
        assert m["output_ids"] == d["output_ids"]
        assert max(abs(x - y) for x, y in zip(m["logprobs"], d["logprobs"])) <= LOGPROB_TOL


def test_the_three_requests_shared_forwards(runs):
    _, full, _, records = runs
    rids = {out["rid"] for out in full}
    forwards = [set(r["rids"]) for r in records if r["event"] == "forward"]
    decode_together = [f for f, r in zip(forwards, [r for r in records if r["event"] == "forward"]) if r["is_decode"] and rids <= f]
    assert decode_together, forwards  # one decode forward carried both videos and the text request
    by_forward = {}
    for r in records:
        if r["event"] == "select" and r["index_tokens"] > 0:
            by_forward.setdefault(r["forward"], set()).add(r["anchor"])
    assert any(len(anchors) == 2 for anchors in by_forward.values())  # two videos' indexes in one layer call


def test_small_budget_batch_is_sparse_and_keeps_videos_apart(runs):
    _, _, sparse, _ = runs
    video_a, video_b, text = (out["mosaic"][0] for out in sparse)
    for stats in (video_a, video_b):
        assert stats["clusters"] > 1
        assert stats["attended_tokens"] < stats["context_tokens"] / 2
    assert text["clusters"] == 0 and text["attended_tokens"] == text["context_tokens"]  # text-only: dense
    assert all(len(out["output_ids"]) == 6 for out in sparse)
