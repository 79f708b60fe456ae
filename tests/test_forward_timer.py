"""The per-forward timing log: off unless MOSAIC_FORWARD_LOG_DIR is set; one JSON line per forward."""

from __future__ import annotations

import enum
from types import SimpleNamespace

import torch

from mosaic_sglang.config import MOSAIC_FORWARD_LOG_DIR
from mosaic_sglang.integration import forward_timer


class _Registry:
    def __init__(self):
        self.hooks = []

    def register(self, target, fn, kind):
        self.hooks.append((target, fn, kind))


_HookType = enum.Enum("HookType", "AROUND AFTER BEFORE")


def test_nothing_is_wrapped_without_the_variable(monkeypatch):
    monkeypatch.delenv(MOSAIC_FORWARD_LOG_DIR.name, raising=False)
    registry = _Registry()
    assert not forward_timer.register_forward_timer(registry, _HookType)
    assert registry.hooks == []


def test_each_forward_appends_a_record_with_the_backends_timings(monkeypatch, tmp_path):
    monkeypatch.setenv(MOSAIC_FORWARD_LOG_DIR.name, str(tmp_path / "log"))
    registry = _Registry()
    assert forward_timer.register_forward_timer(registry, _HookType)
    (target, hook, kind), = registry.hooks
    assert target == forward_timer.FORWARD_TIMER_TARGET and kind is _HookType.AROUND

    backend = SimpleNamespace(forward_timings={"plan_s": 0.25, "select_s": 0.5, "index_s": 0.0})
    runner = SimpleNamespace(device="cpu", attn_backend=backend)
    mode = SimpleNamespace(name="DECODE")
    batch = SimpleNamespace(forward_mode=mode, batch_size=2, input_ids=torch.zeros(2), seq_lens_cpu=torch.tensor([7, 9]))
    calls = []
    result = hook(lambda self, fb, *a, **kw: calls.append(fb) or "logits", runner, batch)
    assert result == "logits" and calls == [batch]
    hook(lambda self, fb: None, SimpleNamespace(device="cpu", attn_backend=object()), batch)  # a dense backend
    first, second = forward_timer.read_forward_log(tmp_path / "log")
    assert first["mode"] == "decode" and first["batch"] == 2 and first["tokens"] == 2 and first["seq_len_max"] == 9
    assert first["plan_s"] == 0.25 and first["select_s"] == 0.5 and first["seconds"] >= 0
    assert first["backend"] == "SimpleNamespace" and "plan_s" not in second
