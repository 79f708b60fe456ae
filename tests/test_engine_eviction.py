"""Radix-tree eviction under a small KV pool with the host tier on (tiny Qwen2.5-VL, CPU, SGLang's
strict memory checks and Mosaic's integrity checks on): a host store that holds one video and a pool
that holds about two prompts. Video a goes to the host; video b only partly fits (the rest stays on the
device); video c's prefill then needs room, so SGLang evicts the oldest prefixes, and their host rows
come back to the store through the tree's free path (end to end, no direct call). Asking about video a
again recomputes it (nothing cached) and gives the same answer as the first time."""

from __future__ import annotations

import pytest

from engine_support import VIDEO_PROMPT, cpu_engine_kwargs, run_requests, strict_checks

pytestmark = [pytest.mark.engine, pytest.mark.timeout(600)]

OPTIONS = {"sink_tokens": 4, "recent_window": 16, "max_cluster_size": 16, "host_store_tokens": 700}
POOL_TOKENS = 1000  # a 16-frame clip is ~600 prompt tokens (576 visual): one prompt and most of a second fit
LOGPROB_TOL = 1e-5


@pytest.fixture(scope="module", params=[None, 256], ids=["one-chunk", "chunked-256"])
def outputs(request, tiny_vl_model, video_dir, tmp_path_factory):
    """``chunked-256``: each prefill chunk is inserted into the tree as its own node and sealed clusters go
    to the host per chunk, so a cluster that spans two chunks is one host extent under two tree nodes;
    eviction frees the leaf node first (part of such an extent), then its parent (the rest). SGLang's idle
    check, extended to the host tier (`host_row_check`), compares the tree's host rows with the tier's
    live rows whenever the scheduler idles."""
    import sglang as sgl

    from mosaic_sglang.frontend.video import make_synthetic_video

    c = make_synthetic_video(tmp_path_factory.mktemp("third") / "c.mp4", num_frames=16, size=112, num_scenes=2, seed=3)
    ask = lambda video: {"inputs": {"prompt": VIDEO_PROMPT.format(question="what happens?"), "video_data": [str(video)]},
                         "max_new_tokens": 4}
    with strict_checks():
        engine = sgl.Engine(**cpu_engine_kwargs(tiny_vl_model, enable_mosaic=True, mosaic_budget=48,
                                                mosaic_config=OPTIONS, max_total_tokens=POOL_TOKENS,
                                                **({"chunked_prefill_size": request.param} if request.param else {})))
        try:
            chunked = request.param is not None
            # chunked: the later questions find the template's first 4 tokens cached, which moves their chunk
            # boundaries (and so what a sparse prefill attends); a warm-up caches them for the first one too
            warm_up = [{"inputs": {"prompt": "<|im_start|>user\n<|vision_start|>hi"}, "max_new_tokens": 1}] * chunked
            outputs = run_requests(engine, warm_up + [ask(video_dir / "a.mp4"), ask(video_dir / "b.mp4"), ask(c),
                                                      ask(video_dir / "a.mp4")])
            return outputs[len(warm_up):], chunked
        finally:
            engine.shutdown()


def test_eviction_releases_host_rows_and_recomputes_exactly(outputs):
    outputs, chunked = outputs
    first_a, b, c, again_a = outputs
    stats = [out["mosaic"][0] for out in outputs]
    visual = stats[0]["visual_tokens"]
    assert all(s["visual_tokens"] == visual for s in stats)  # the three clips have the same length
    # while b ran, video a's clusters filled the host store
    assert stats[1]["host_store_used"] == visual
    # c's prefill needed ~600 of the 1000 slots while b's device part held ~480: SGLang evicted the LRU
    # prefixes (a's, then b's) and every host row they owned went back to the store (measured: 0; chunked,
    # the store then holds only c's clusters sealed at its chunk boundaries: 115 measured, a's 576 gone)
    assert (0 < stats[2]["host_store_used"] < visual) if chunked else stats[2]["host_store_used"] == 0
    assert c["cached_tokens"] < visual
    # a was evicted, so it is recomputed, and answers exactly as the first time
    assert again_a["cached_tokens"] < visual
    assert again_a["output_ids"] == first_a["output_ids"]
    assert max(abs(x - y) for x, y in zip(again_a["logprobs"], first_a["logprobs"])) <= LOGPROB_TOL
    # c's clusters, offloaded into the freed store (chunked: with a's clusters sealed during its prefill)
    used = stats[3]["host_store_used"]
    assert (visual < used <= OPTIONS["host_store_tokens"]) if chunked else used == visual
