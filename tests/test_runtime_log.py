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


def test_offload_is_refused_over_paged_kv_when_the_pool_binds():
    """The page size SGLang resolved (the allocator's) is checked where the pool binds: offload frees single
    slots, which a paged allocator would widen to whole pages."""
    import pytest

    from mosaic_sglang.config import MosaicConfigError
    from mosaic_sglang.offload import DevicePool

    def pool(page_size):
        k = [torch.zeros(32, 2, 8) for _ in range(2)]
        return DevicePool(k_layers=k, v_layers=k, alloc=lambda n: None, free=lambda s: None, page_size=page_size)

    bind = dict(num_layers=2, num_kv_heads=2, head_dim=8, v_head_dim=8, dtype=torch.float32,
                read_slot_keys=lambda slots: torch.zeros(2, slots.numel(), 2, 8), read_slot_kv=None)
    with pytest.raises(MosaicConfigError, match="'host_store_tokens': offload frees single KV slots.*pages of 16 tokens"):
        MosaicRuntime(MosaicConfig(host_store_tokens=64)).bind_model(**bind, device_pool=pool(16))
    MosaicRuntime(MosaicConfig()).bind_model(**bind, device_pool=pool(16))  # no offload: paged KV is served
    runtime = MosaicRuntime(MosaicConfig(host_store_tokens=64))
    runtime.bind_model(**bind, device_pool=pool(1))
    assert runtime.host is not None
