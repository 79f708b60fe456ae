"""Decode without host synchronisation (tiny Qwen2.5-VL through sgl.Engine, CPU): with
``MOSAIC_CHECK_NO_SYNC=1`` every decode layer (keeping its question's selection, or re-selecting every
2 steps with the exact fill) runs with
``.item()/.tolist()/.cpu()/bool()/nonzero/unique``/boolean indexing patched to raise (a violation
kills the scheduler and fails the test). Two questions on one video: the first decodes over a fresh
index, the second selects in its prefill and keeps that selection for its decode steps."""

from __future__ import annotations

import pytest
import torch

from engine_support import VIDEO_PROMPT, cpu_engine_kwargs, run_requests, strict_checks
from mosaic_sglang.config import MOSAIC_CHECK_NO_SYNC
from mosaic_sglang.testing.host_sync import HostSyncError, no_host_sync

pytestmark = [pytest.mark.engine, pytest.mark.timeout(480)]


def test_the_guard_catches_each_kind_of_sync():
    x = torch.arange(6)
    for op in (lambda: x.sum().item(), lambda: x.tolist(), lambda: x.cpu(), lambda: bool(x[0]), lambda: x.nonzero(),
               lambda: torch.unique(x), lambda: x[x > 2], lambda: int(x[1])):
        with no_host_sync(), pytest.raises(HostSyncError):
            op()
    with no_host_sync():  # what a decode layer may do: integer gathers, arithmetic, masks as values
        y = x[torch.tensor([1, 2])] + torch.where(x > 2, x, 0)[:2]
    assert y.tolist() == [1, 2]  # restored after the block


def test_kept_decode_layers_run_inside_the_guard(monkeypatch):
    # The backend routes kept-selection decode layers through the guard (checked on its own routing).
    from types import SimpleNamespace

    from mosaic_sglang.integration.attention_backend import MosaicAttnBackend

    fake = SimpleNamespace(_check_no_sync=True, _graph_bs=None, plan=SimpleNamespace(select_due=(), padded=False),
                           _run_layer=lambda *a: torch.ones(1).item())
    layer = SimpleNamespace(sliding_window_size=None)
    batch = SimpleNamespace(forward_mode=SimpleNamespace(is_decode=lambda: True))
    with pytest.raises(HostSyncError):
        MosaicAttnBackend._forward(fake, None, None, None, layer, batch, True)
    fake.plan = SimpleNamespace(select_due=(0,), padded=False)  # a re-select step with the exact fill: guarded too
    with pytest.raises(HostSyncError):
        MosaicAttnBackend._forward(fake, None, None, None, layer, batch, True)
    fake.plan = SimpleNamespace(select_due=(0,), padded=True)  # whole-cluster / mass fills size their lists: may sync
    assert MosaicAttnBackend._forward(fake, None, None, None, layer, batch, True) == 1.0


@pytest.mark.parametrize("reselect_every, heads", [(0, "shared"), (2, "shared"), (2, "per_kv_head")],
                         ids=["kept", "reselect-every-2", "reselect-every-2-per-kv-head"])
def test_decode_steps_do_not_sync(tiny_vl_model, video_dir, monkeypatch, reselect_every, heads):
    import sglang as sgl

    monkeypatch.setenv(MOSAIC_CHECK_NO_SYNC.name, "1")
    ask = lambda q: {"inputs": {"prompt": VIDEO_PROMPT.format(question=q), "video_data": [str(video_dir / "a.mp4")]},
                     "max_new_tokens": 8}
    with strict_checks():
        engine = sgl.Engine(**cpu_engine_kwargs(tiny_vl_model, enable_mosaic=True, mosaic_budget=48,
                                                mosaic_config={"recent_window": 16, "reselect_every": reselect_every,
                                                               "selection_heads": heads}))
        try:
            outputs = run_requests(engine, [ask("what happens?"), ask("what color?")])
        finally:
            engine.shutdown()
    for out in outputs:
        assert len(out["output_ids"]) == 8
        (stats,) = out["mosaic"]
        assert stats["attended_tokens"] < stats["context_tokens"] / 2  # sparse decode, not a dense fallback
    # positive control: the re-select run chose again inside its decode steps (8 tokens: steps 2, 4, 6)
    selections = [out["mosaic"][0]["selections"] for out in outputs]
    assert selections[1] == (1 + 3 if reselect_every == 2 else 1), selections
