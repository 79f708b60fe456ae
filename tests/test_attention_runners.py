"""The attention runners (`mosaic_sglang.attention`) against each other on built plans, without SGLang:
the FlashInfer runner over the fake FlashInfer wrappers (their contract: one plan per forward, a page list
per layer read at run time, the prefill mask aligned at the bottom right) equals the torch reference on
decode and extend plans, with different lists per layer, chunked prefixes and per-KV-head lists; it plans
once per forward and declines padded plans. `ForwardPlan.causal_order` puts own tokens last."""

from __future__ import annotations

import pytest
import torch

from mosaic_sglang.attention import FlashInferRunner, LayerLists, TorchRunner
from mosaic_sglang.serving.head_major import head_slots, pool_heads_as_slots, rows_head_major, write_token_major
from mosaic_sglang.serving.plan import AlwaysPart, build_plan
from mosaic_sglang.testing import fake_flashinfer
from mosaic_sglang.testing.fake_flashinfer import FakeFlashInferError, read_log

L, HQ, HKV, D, S = 3, 6, 2, 16, 200


def _lists(extend, g, heads=1):
    """A plan over requests ``extend`` [(prefix_len, seq_len)]: sinks [0, 2) always, a different random
    selection of 5 earlier positions per layer (and per head), the rest of the chunk's own tokens always."""
    always = [AlwaysPart(torch.tensor([0]), torch.tensor([2]), prefix) for prefix, _ in extend]
    f = [min(5, max(0, prefix - 2)) for prefix, _ in extend]
    plan = build_plan(L, extend, always, f, heads=heads)
    positions = plan.kv_positions.clone()  # [L, H · nnz]
    nnz = int(plan.kv_indptr[-1])
    for layer in range(L):
        for h in range(heads):
            for b, (prefix, _) in enumerate(extend):
                start, end = plan.selected_span(b)
                chosen = 2 + torch.randperm(prefix - 2, generator=g)[: end - start]
                positions[layer, h * nnz + start:h * nnz + end] = chosen
    return plan._replace(kv_positions=positions)


def _run(runner, plan, q, k_pool, v_pool, slot_of, is_decode, heads=1):
    """Every layer's output through ``runner`` (as the backend calls it)."""
    attn = plan.head_major()
    runner.begin_forward(attn, is_decode, torch.device("cpu"), per_kv_head=heads > 1)
    batch = plan.kv_indptr.numel() - 1
    outs = []
    for layer in range(L):
        positions = attn.kv_positions[layer]
        slots = slot_of[attn.kv_request % batch, positions]
        if heads == 1:
            out = runner.run_layer(layer, q[layer], None, None, k_pool[layer], v_pool[layer],
                                   LayerLists(attn.kv_indptr, slots, positions), torch.empty_like(q[layer]), D ** -0.5)
        else:
            lists = LayerLists(attn.kv_indptr, head_slots(slots, attn.kv_request // batch, heads), positions)
            o = runner.run_layer(layer, rows_head_major(q[layer], heads), None, None, pool_heads_as_slots(k_pool[layer]),
                                 pool_heads_as_slots(v_pool[layer]), lists,
                                 q.new_empty(heads * q.shape[1], HQ // heads, D), D ** -0.5)
            out = write_token_major(o, torch.empty_like(q[layer]), heads)
        outs.append(out.clone())
    return torch.stack(outs)


def _inputs(plan, g):
    """Queries and pools, the same at every layer: layers' outputs then differ only through their lists."""
    nq = int(plan.q_indptr[-1])
    q = torch.randn(1, nq, HQ, D, generator=g).expand(L, -1, -1, -1).contiguous()
    k_pool = torch.randn(1, S, HKV, D, generator=g).expand(L, -1, -1, -1).contiguous()
    v_pool = torch.randn(1, S, HKV, D, generator=g).expand(L, -1, -1, -1).contiguous()
    slot_of = 1 + torch.randperm(S - 1, generator=g)[:2 * 64].view(2, 64)  # [B, positions] → slot
    return q, k_pool, v_pool, slot_of


def _flashinfer(heads=HKV):
    workspace = torch.empty(16, dtype=torch.uint8)
    return FlashInferRunner(fake_flashinfer, workspace, num_layers=L, num_qo_heads=HQ, num_kv_heads=heads, head_dim=D,
                            dtype=torch.float32, use_tensor_cores=True)


@pytest.mark.parametrize("is_decode", [True, False], ids=["decode", "extend"])
@pytest.mark.parametrize("heads", [1, HKV], ids=["shared", "per-kv-head"])
def test_flashinfer_route_equals_reference(is_decode, heads, tmp_path, monkeypatch):
    monkeypatch.setenv("MOSAIC_FAKE_FLASHINFER_LOG", str(tmp_path))
    g = torch.Generator().manual_seed(3 + heads)
    extend = [(40, 41), (23, 24)] if is_decode else [(40, 47), (23, 24)]  # extend: a 7-token chunk and a 1-token one
    plan = _lists(extend, g, heads)
    q, k_pool, v_pool, slot_of = _inputs(plan, g)
    runner = _flashinfer()
    expected = _run(TorchRunner(), plan, q, k_pool, v_pool, slot_of, is_decode, heads)
    got = _run(runner, plan, q, k_pool, v_pool, slot_of, is_decode, heads)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # same queries and pools at every layer: the outputs differ only because each layer attended its own list
    assert not torch.allclose(expected[0], expected[1])
    records = read_log(tmp_path)
    plans = [r for r in records if r["event"] == "plan"]
    runs = [r for r in records if r["event"] == "run"]
    assert len(plans) == 1 and runner.plans == 1 and plans[0]["kind"] == ("decode" if is_decode else "prefill")
    assert plans[0]["kv_heads"] == (1 if heads > 1 else HKV)
    assert len(runs) == L and len({r["buffer"] for r in runs}) == L


def test_causal_order_puts_own_tokens_last():
    g = torch.Generator().manual_seed(0)
    plan = _lists([(40, 47), (23, 24)], g)
    order = plan.causal_order()
    positions = plan.kv_positions[0][order]
    bounds = plan.kv_indptr.tolist()
    assert sorted(order.tolist()) == list(range(bounds[-1]))
    assert positions[bounds[1] - 7:bounds[1]].tolist() == list(range(40, 47))  # own tokens last, in query order
    assert positions[bounds[2] - 1:bounds[2]].tolist() == [23]
    assert (positions[:bounds[1] - 7] < 40).all() and (positions[bounds[1]:bounds[2] - 1] < 23).all()


def test_padded_plans_are_declined_and_one_buffer_per_layer_is_enforced():
    g = torch.Generator().manual_seed(1)
    plan = _lists([(30, 31)], g)
    runner = _flashinfer()
    assert runner.serves(plan) and not runner.serves(plan._replace(padded=True))
    runner.begin_forward(plan, True, torch.device("cpu"))
    q, k_pool, v_pool, slot_of = _inputs(plan, g)
    lists = LayerLists(plan.kv_indptr, slot_of[plan.kv_request, plan.kv_positions[0]], plan.kv_positions[0])
    runner.run_layer(0, q[0], None, None, k_pool[0], v_pool[0], lists, torch.empty_like(q[0]), 1.0)
    with pytest.raises(FakeFlashInferError, match="same address"):  # layer 0's buffer again under the same plan
        runner.run_layer(0, q[0], None, None, k_pool[0], v_pool[0], lists, torch.empty_like(q[0]), 1.0)


def test_fake_refuses_what_flashinfer_would_serve_wrong():
    workspace = torch.empty(16, dtype=torch.uint8)
    with pytest.raises(FakeFlashInferError, match="backend"):
        fake_flashinfer.BatchDecodeWithPagedKVCacheWrapper(workspace, "NHD", backend="cudnn")
    wrapper = fake_flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD", backend="fa2")
    indptr = torch.tensor([0, 3], dtype=torch.int32)
    wrapper.plan(torch.tensor([0, 2], dtype=torch.int32), indptr, torch.tensor([1, 2, 3], dtype=torch.int32),
                 torch.ones(1, dtype=torch.int32), 2, 1, 4, 1, causal=True, q_data_type=torch.float32)
    k = torch.randn(5, 1, 4)
    with pytest.raises(FakeFlashInferError, match="causal"):
        wrapper.forward(torch.randn(2, 2, 4), (k, k), causal=False, sm_scale=0.5)
    with pytest.raises(FakeFlashInferError, match="dtypes: planned q/kv"):  # queries in another dtype than planned
        wrapper.forward(torch.randn(2, 2, 4, dtype=torch.float64), (k, k), causal=True, sm_scale=0.5)
    wrapper.plan(torch.tensor([0, 2], dtype=torch.int32), indptr, torch.tensor([1, 2, 3], dtype=torch.int32),
                 torch.ones(1, dtype=torch.int32), 2, 1, 4, 1, causal=True)  # FlashInfer's default: fp16
    with pytest.raises(FakeFlashInferError, match="dtypes: planned q/kv"):
        wrapper.forward(torch.randn(2, 2, 4), (k, k), causal=True, sm_scale=0.5)
    with pytest.raises(FakeFlashInferError, match="page_size"):
        wrapper.plan(torch.tensor([0, 2], dtype=torch.int32), indptr, torch.tensor([1, 2, 3], dtype=torch.int32),
                     torch.ones(1, dtype=torch.int32), 2, 1, 4, 16, causal=True)
