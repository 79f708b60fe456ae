"""The spill (L3) tier through a real sgl.Engine (tiny Qwen2.5-VL, CPU, SGLang's strict memory checks and
Mosaic's integrity checks and checksums on): a host store that holds one video's clusters, with SGLang's
HiCache file backend below it. Two videos take turns: each offload spills the other video's clusters to
files, each later question loads its selected clusters back; every answer equals the run whose host
store holds both videos, and a flush deletes every blob."""

from __future__ import annotations

import json

import pytest

from engine_support import VIDEO_PROMPT, cpu_engine_kwargs, run_requests, strict_checks

pytestmark = [pytest.mark.engine, pytest.mark.timeout(600)]

OPTIONS = {"sink_tokens": 4, "recent_window": 16, "max_cluster_size": 16}
BUDGET = 48
HOST_TOKENS = 640  # one 16-frame clip's 576 visual tokens fit, two do not
LOGPROB_TOL = 1e-5


def _requests(video_dir):
    a, b = str(video_dir / "a.mp4"), str(video_dir / "b.mp4")
    q = lambda text, video: {"inputs": {"prompt": VIDEO_PROMPT.format(question=text), "video_data": [video]}, "max_new_tokens": 5}
    return [q("what happens?", a), q("what happens?", b), q("what color?", a), q("what color?", b), q("and then?", a)]


@pytest.fixture(scope="module")
def runs(tiny_vl_model, video_dir, tmp_path_factory):
    import sglang as sgl

    spill_dir = tmp_path_factory.mktemp("spill")
    results = {}
    with strict_checks():
        for name, options in (
            ("roomy", {**OPTIONS, "host_store_tokens": 4 * HOST_TOKENS}),
            ("spill", {**OPTIONS, "host_store_tokens": HOST_TOKENS, "spill_backend": "file",
                       "spill_path": str(spill_dir), "spill_tokens": 4 * HOST_TOKENS}),
        ):
            engine = sgl.Engine(**cpu_engine_kwargs(tiny_vl_model, enable_mosaic=True, mosaic_budget=BUDGET,
                                                    mosaic_config=options))
            try:
                outputs = run_requests(engine, _requests(video_dir))
                blobs = len(list(spill_dir.rglob("*.bin")))
                engine.flush_cache()
                after_flush = run_requests(engine, _requests(video_dir)[:1])
                results[name] = (outputs, blobs, len(list(spill_dir.rglob("*.bin"))), after_flush)
            finally:
                engine.shutdown()
    return results


def test_spilled_clusters_come_back_and_answers_are_identical(runs):
    roomy, _, _, _ = runs["roomy"]
    spilled, blobs, _, _ = runs["spill"]
    for r, s in zip(roomy, spilled):
        assert s["output_ids"] == r["output_ids"]
        assert max(abs(x - y) for x, y in zip(s["logprobs"], r["logprobs"])) <= LOGPROB_TOL
        assert s["cached_tokens"] == r["cached_tokens"]
    stats = [out["mosaic"][0] for out in spilled]
    visual = stats[0]["visual_tokens"]
    # the second video's question finds the first video in the store; its offload then spilled it
    assert stats[1]["host_store_used"] == visual and blobs > 0
    for later in stats[2:]:
        assert later["host_tokens"] == visual and later["host_store_used"] <= HOST_TOKENS, json.dumps(stats)
    # b's offload spilled a's clusters, so a's next question loads the ones it selects (measured: 15
    # extents; b's follow-up then found its selection still in the store, a's last question loaded 4)
    assert stats[2]["spill_loads"] > 0 and stats[2]["spill_load_bytes"] > 0, json.dumps(stats)
    assert all(out["mosaic"][0]["spill_loads"] == 0 for out in roomy)  # without the tier: nothing loaded


def test_flush_deletes_every_blob(runs):
    _, blobs, after_flush_blobs, after_flush = runs["spill"]
    assert blobs > 0 and after_flush_blobs == 0
    (stats,) = after_flush[0]["mosaic"]
    assert stats["host_store_used"] == 0 and stats["host_tokens"] == 0
