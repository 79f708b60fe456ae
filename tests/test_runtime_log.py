"""The runtime's log says what serves: the policy actually installed, and what a budget of 0 means."""

from __future__ import annotations

import logging

import torch

from mosaic_sglang import MosaicConfig
from mosaic_sglang.integration.runtime import MosaicRuntime


def _bind(config: MosaicConfig) -> MosaicRuntime:
    runtime = MosaicRuntime(config)
    assert runtime.policy.name == "full"  # before the KV pool exists nothing sparse can serve
    runtime.bind_model(num_layers=2, num_kv_heads=2, head_dim=8, v_head_dim=8, dtype=torch.float32,
                       read_slot_keys=lambda slots: torch.zeros(2, slots.numel(), 2, 8), read_slot_kv=None)
    return runtime


def test_log_names_the_serving_policy_and_explains_budget_zero(caplog):
    with caplog.at_level(logging.INFO, logger="mosaic_sglang.integration.runtime"):
        runtime = _bind(MosaicConfig(budget=0))
    assert runtime.policy.name == "mosaic"
    assert "mosaic runtime: policy=mosaic" in caplog.text and "policy=full" not in caplog.text
    assert "budget 0: every layer attends only the sinks, the recent window and the text" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mosaic_sglang.integration.runtime"):
        _bind(MosaicConfig(budget=64))
    assert "budget 0" not in caplog.text
