"""Mosaic's cluster selection served through a real sgl.Engine (tiny Qwen2.5-VL, CPU): with a small
budget answers come back, meta_info's attended tokens respect budget + sinks + window + text, and every
selection the server made is exactly what an offline `ClusterIndex` returns for the same keys and
queries (replayed from the server's dump)."""

from __future__ import annotations

import pytest
import torch

from engine_support import VIDEO_PROMPT, cpu_engine_kwargs, run_requests
from mosaic_sglang import ClusterIndex, MosaicConfig
from mosaic_sglang.config import MOSAIC_DUMP_DIR, ONLINE_SHARED

# a scheduler that dies (e.g. SGLang's strict memory check) leaves the engine waiting: fail, don't hang
pytestmark = [pytest.mark.engine, pytest.mark.timeout(480)]

OPTIONS = {"sink_tokens": 4, "recent_window": 16, "max_cluster_size": 16}
# the replay covers both budget modes, both memberships and both list kinds: the earlier defaults (online clusters,
# one membership, one list per layer), the defaults (per-layer, regrouped with the tail, per KV head) with spans
# scaled to the tiny video (it has few frames), and regrouping of every sealed frame with mass budgets
MODES = {"shared-online": dict(ONLINE_SHARED),
         "mass-regroup": {"budget_mode": "mass", "mass_target": 0.7, "regroup_tokens": 8, "regroup_frames": 1,
                          "active_frames": 1, "membership": "shared", "selection_heads": "shared"},
         "defaults": {"regroup_tokens": 8, "regroup_frames": 2},
         # mass budgets per KV head: each head its own count, padded plan lists attended head-major
         "per-kv-head-mass": {"selection_heads": "per_kv_head", "budget_mode": "mass", "mass_target": 0.7}}
BUDGET = 48
CHUNK = 128  # tokens per prefill chunk: the ~300-token prompt takes several forwards


@pytest.fixture(scope="module", params=list(MODES))
def served(request, tiny_vl_model, video_dir, tmp_path_factory):
    import sglang as sgl

    options = {**OPTIONS, **MODES[request.param]}
    dump = tmp_path_factory.mktemp("dump")
    mp = pytest.MonkeyPatch()
    mp.setenv(MOSAIC_DUMP_DIR.name, str(dump))
    # chunked prefill: the video is prefilled (and indexed) in several forwards, later chunks attend
    # sinks + window + clusters selected by their own queries
    engine = sgl.Engine(
        **cpu_engine_kwargs(
            tiny_vl_model, enable_mosaic=True, mosaic_budget=BUDGET, mosaic_config=options, chunked_prefill_size=CHUNK
        )
    )
    try:
        a = str(video_dir / "a.mp4")
        outputs = run_requests(
            engine,
            [
                {"inputs": {"prompt": VIDEO_PROMPT.format(question="what happens?"), "video_data": [a]}, "max_new_tokens": 4},
                {"inputs": {"prompt": VIDEO_PROMPT.format(question="what color?"), "video_data": [a]}, "max_new_tokens": 4},
            ],
        )
    finally:
        engine.shutdown()
        mp.undo()
    records = [torch.load(p, weights_only=False) for p in sorted(dump.glob("*.pt"))]
    return outputs, records, dump, options


def test_answers_and_attended_budget(served):
    outputs, _, _, options = served
    cfg = MosaicConfig.from_dict({**options, "budget": BUDGET})
    for out in outputs:
        assert len(out["output_ids"]) == 4
        (stats,) = out["mosaic"]
        text = stats["context_tokens"] - stats["visual_tokens"]
        assert stats["clusters"] > 1
        assert stats["attended_tokens"] <= BUDGET + cfg.sink_tokens + cfg.recent_window + text
        assert stats["attended_tokens"] < stats["context_tokens"]  # really sparse
    # the second question found the first one's index: its whole video came from the cache
    assert outputs[1]["cached_tokens"] > outputs[1]["mosaic"][0]["visual_tokens"]


def test_server_selections_equal_offline_cluster_index(served):
    _, records, _, options = served
    cfg = MosaicConfig.from_dict({**options, "budget": BUDGET})
    offline: dict[int, ClusterIndex] = {}
    selects = per_head_differs = uneven_heads = 0
    for rec in records:
        if rec["event"] == "append":
            keys = rec["keys"]
            index = offline.setdefault(
                rec["anchor"], ClusterIndex(cfg, num_layers=keys.shape[0], num_kv_heads=keys.shape[2], head_dim=keys.shape[3])
            )
            assert index.num_tokens == rec["start"]
            index.append(keys, rec["frame_ids"])
            index.maintain()
            index.check_integrity()
        elif rec["event"] == "regroup_tail":  # a prompt ended: the server regrouped what was still online
            assert offline[rec["anchor"]].regroup_tail() == rec["clusters"]
            offline[rec["anchor"]].check_integrity()
        elif rec["event"] == "select":
            index = offline.get(rec["anchor"])
            if index is None:
                assert rec["index_tokens"] == 0
                continue
            assert index.num_tokens == rec["index_tokens"]
            # the server's always part (sinks, text, window and its own tokens, causal; share_of_total and mass
            # budgets) — the index alone would estimate it from its own keys
            lse = rec["always_lse"]
            assert (lse is not None) == (cfg.budget_mode == "mass" or cfg.share_of_total)
            expected = index.select_layer(rec["layer"], rec["queries"], seq_len=rec["seq_len"], always_lse=lse)
            assert torch.equal(expected, rec["selected"])  # [n] or [H, n]
            full = index.select(rec["queries"][None].expand(index.num_layers, -1, -1, -1), seq_len=rec["seq_len"],
                                always_lse=None if lse is None else lse.expand(index.num_layers, -1, -1))
            if expected.dim() == 2:  # per KV head: rows layer · H + head (mass budgets: shorter rows end in -1)
                heads = index.num_kv_heads
                assert expected.shape[0] == heads > 1
                for h in range(heads):
                    assert torch.equal(full.layer(rec["layer"] * heads + h), expected[h][expected[h] >= 0])
                per_head_differs += int(any(not torch.equal(expected[0], row) for row in expected[1:]))
                uneven_heads += int(bool((expected < 0).any()))
            else:
                assert torch.equal(full.layer(rec["layer"]), expected)
            selects += 1
    assert selects >= 2 * 2  # both questions, both layers, selected against a non-empty index
    if cfg.regroup_tokens:  # the server's maintenance regrouped (positive control for the replay)
        assert sum(index.num_regroups for index in offline.values()) >= 1
    if cfg.regroups_tail:  # each prompt's end regrouped its tail; the first one had frames left online
        tails = [r for r in records if r["event"] == "regroup_tail"]  # written when clusters were replaced
        assert len(tails) >= 1 and all(t["clusters"] >= 1 for t in tails)
        after = records.index(tails[0])  # the first question's decode selected against the regrouped tail
        assert any(r["event"] == "select" and r["queries"].shape[0] == 1 for r in records[after:])
    if cfg.selection_heads == "per_kv_head":  # the served heads really chose differently
        assert per_head_differs >= 1
        if cfg.budget_mode == "mass":  # ... and took different counts (padded, head-major lists)
            assert uneven_heads >= 1
    appends = [r for r in records if r["event"] == "append"]
    assert len(appends) >= 2  # the first request's video was indexed chunk by chunk
    prefill_selects = [r for r in records if r["event"] == "select" and r["queries"].shape[0] > 1 and r["index_tokens"] > 0]
    assert prefill_selects  # a later chunk selected clusters from the earlier chunks' index


def test_inspect_plots_the_served_dump(served, tmp_path):
    """``python -m mosaic_sglang.inspect`` on the server's dump writes a real picture."""
    import subprocess
    import sys

    import matplotlib.image

    _, _, dump, options = served
    if options != {**OPTIONS, **MODES["defaults"]}:
        pytest.skip("the picture is the same tool on another mode's dump")
    out = tmp_path / "inspect.png"
    run = subprocess.run([sys.executable, "-m", "mosaic_sglang.inspect", str(dump), "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "2 question(s)" in run.stdout and "clusters" in run.stdout, run.stdout
    assert out.stat().st_size > 20_000
    pixels = matplotlib.image.imread(out)  # [H, W, 4] float in [0, 1]
    height, width = pixels.shape[:2]
    assert width == 1100 and height >= 900, pixels.shape  # 11 in x 100 dpi; 2 questions + 2 panels
    assert pixels[..., :3].std() > 0.1 and len({tuple(p) for p in pixels[::7, ::7, :3].reshape(-1, 3).tolist()}) > 50
