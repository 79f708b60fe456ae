"""SGLang streaming sessions (``open_session(streaming=True)``) with Mosaic: a video arrives in chunks,
each appended to the session's KV by a new turn, then a text question. With a budget covering
everything the answers equal the dense backend's; with a small budget every turn attends a sparse set
of one cluster index that grew over the chunks. Session-owned KV stays on the device even with the
host tier on (it is outside the radix tree; see `radix_cache._tree_owned`), and SGLang's strict memory
checks stay quiet through the session's close."""

from __future__ import annotations

import pytest

from engine_support import cpu_engine_kwargs, greedy, strict_checks

pytestmark = [pytest.mark.engine, pytest.mark.timeout(480)]

LOGPROB_TOL = 4e-5
"""fp32 logprobs of two attention implementations (SGLang's torch_native SDPA vs Mosaic's batched reference)
differ by summation order only: 1.12e-5 measured on a fresh install on 2026-12-02, the same with the code of
an earlier green commit (an unpinned dependency moved, not the code); 4e-5 leaves room for that and still fails
a wrong attended set, which moves logprobs far more (tokens are compared exactly as well)."""


def _turns(video_dir):
    return [
        ("<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>", [str(video_dir / "a.mp4")]),
        ("<|vision_start|><|video_pad|><|vision_end|>what happens?<|im_end|>\n<|im_start|>assistant\n", [str(video_dir / "b.mp4")]),
        ("<|im_end|>\n<|im_start|>user\nand then?<|im_end|>\n<|im_start|>assistant\n", None),
    ]


def _run_session(model, video_dir, **engine_kwargs):
    import sglang as sgl

    engine = sgl.Engine(**cpu_engine_kwargs(model, enable_streaming_session=True, **engine_kwargs))
    try:
        sid = engine.open_session(capacity_of_str_len=100_000, streaming=True)
        outputs, rid = [], None
        for text, video in _turns(video_dir):
            kwargs = {"video_data": video} if video else {}
            out = engine.generate(prompt=text, sampling_params=greedy(4), return_logprob=True,
                                  session_params={"id": sid, "rid": rid}, **kwargs)
            rid = out["meta_info"]["id"]
            meta = out["meta_info"]
            outputs.append({"ids": list(out["output_ids"]), "logprobs": [x[0] for x in meta["output_token_logprobs"]],
                            "cached": meta["cached_tokens"], "mosaic": (meta.get("mosaic") or [None])[-1]})
        engine.close_session(sid)
        after_close = engine.generate(prompt="hello", sampling_params=greedy(2))["output_ids"]
        return outputs, after_close
    finally:
        engine.shutdown()


@pytest.fixture(scope="module")
def sessions(tiny_vl_model, video_dir):
    with strict_checks():
        dense = _run_session(tiny_vl_model, video_dir, attention_backend="torch_native")
        full = _run_session(tiny_vl_model, video_dir, enable_mosaic=True, mosaic_budget=1 << 20)
        sparse = _run_session(tiny_vl_model, video_dir, enable_mosaic=True, mosaic_budget=64,
                              mosaic_config={"host_store_tokens": 16384})
    return dense, full, sparse


def test_full_budget_session_equals_dense(sessions):
    (dense, _), (full, _), _ = sessions
    for d, f in zip(dense, full):
        assert f["ids"] == d["ids"] and f["cached"] == d["cached"]
        assert max(abs(x - y) for x, y in zip(f["logprobs"], d["logprobs"])) <= LOGPROB_TOL
    # every turn reuses the whole session so far (prompt and answer of the previous turn)
    assert full[1]["cached"] == full[0]["mosaic"]["context_tokens"] and full[2]["cached"] == full[1]["mosaic"]["context_tokens"]


def test_sparse_session_grows_one_index_over_the_chunks(sessions):
    _, _, (sparse, after_close) = sessions
    first, second, third = (t["mosaic"] for t in sparse)
    assert second["visual_tokens"] == 2 * first["visual_tokens"] and second["frames"] == 2 * first["frames"]
    assert first["clusters"] < second["clusters"] == third["clusters"]  # the second chunk joined the same index
    for stats in (first, second, third):
        assert stats["attended_tokens"] < stats["context_tokens"] // 3
        assert stats["host_tokens"] == 0  # session-owned KV stays on the device
    assert len(after_close) == 2  # the engine serves after the session closed (strict checks on)
