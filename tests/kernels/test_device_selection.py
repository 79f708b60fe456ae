"""The serving path's selection state on the model's device: cluster indexes, the sync-free re-select
(`select_layer_into`), the ``req_to_selection`` slab and the device-built plan — on the CPU here, and on
CUDA where a GPU exists (the CUDA cases are the point: the same code with every tensor on the device;
they skip without one). No SGLang: this runs on a machine with torch + Triton only."""

from __future__ import annotations

import contextlib

import pytest
import torch
from cluster_trace import video_stream

from mosaic_sglang import ClusterIndex, MosaicConfig
from mosaic_sglang.clusters import select_layer_batch, select_layer_into
from mosaic_sglang.clusters.select import index_always_lse
from mosaic_sglang.retrieval.base import always_attended_mask
from mosaic_sglang.serving import ClusterAttendedSet, RequestLayout
from mosaic_sglang.testing.host_sync import no_host_sync

L, H, HQ, D = 3, 2, 8, 16
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])]


@pytest.mark.parametrize("heads", ["shared", "per_kv_head"])
@pytest.mark.parametrize("device", DEVICES)
def test_index_on_the_device_selects_into_planned_spans_without_a_sync(device, heads):
    keys, frame_ids, _ = video_stream(seed=1, num_layers=L, num_kv_heads=H, head_dim=D, num_frames=8,
                                      tokens_per_frame=31)
    cfg = MosaicConfig(budget=50, sink_tokens=3, recent_window=9, max_cluster_size=12, join_threshold=0.3,
                       split_threshold=0.45, selection_heads=heads)
    index = ClusterIndex(cfg, num_layers=L, num_kv_heads=H, head_dim=D, device=device)
    index.append(keys.to(device), frame_ids)  # keys where the pool is, frame ids from the host
    index.maintain(max_splits=100)
    index.check_integrity()
    g = torch.Generator().manual_seed(0)
    seq_len = index.num_tokens + 6
    always = always_attended_mask(index.frame_ids, cfg, seq_len=seq_len)
    f = min(cfg.budget, int(((index.frame_ids >= 0) & ~always).sum()))
    for layer in range(L):
        q = torch.randn(2, HQ, D, generator=g).to(device)
        (attended,) = select_layer_batch([index], layer, [q], [seq_len])
        assert attended.device.type == device
        rows = attended.reshape(-1, attended.shape[-1])  # one list, or one per KV head ([H, n])
        assert rows.shape[0] == (H if heads == "per_kv_head" else 1)
        out = torch.full((rows.shape[0] * f + 1,), -7, dtype=torch.int64, device=device)
        lse = index_always_lse(index.view(), torch.tensor([layer], device=device), q[None], seq_len)  # a server's own
        with no_host_sync():
            select_layer_into([index], layer, [q], [seq_len], [out], [lse])
        for h, row in enumerate(rows):  # KV head h's part at [h · f, (h + 1) · f)
            assert out[h * f : (h + 1) * f].tolist() == row[~always[row]].tolist()


def _layout(rid, slots, frame_ids, prefix_len, extend_len):
    n = prefix_len + extend_len
    return RequestLayout(rid, 1, prefix_len, extend_len, frame_ids[:n], slots[:n])


@pytest.mark.parametrize("device", DEVICES)
def test_policy_plans_on_the_device_and_decode_copies_the_kept_selection(device):
    g = torch.Generator().manual_seed(0)
    pool = torch.randn(L, 300, H, D, generator=g).to(device)
    cfg = MosaicConfig(budget=20, sink_tokens=2, recent_window=4, max_cluster_size=8)
    policy = ClusterAttendedSet(cfg, num_layers=L, num_kv_heads=H, head_dim=D, device=device,
                                read_slot_keys=lambda s: pool[:, s.to(device)])
    frames = torch.tensor([-1] * 3 + [f for f in range(6) for _ in range(8)] + [-1] * 5)
    slots = torch.arange(10, 10 + frames.numel())

    def forward(layouts, is_decode):
        plan = policy.plan(layouts, is_decode)
        lists = []
        for layer in range(L):
            q = torch.randn(int(plan.q_indptr[-1]), HQ, D, generator=g).to(device)
            kv = policy.layer_kv(plan, layer, q)
            assert kv.kv_positions.device.type == device
            lists.append(kv.kv_positions[: int(kv.kv_indptr[1])].cpu())
        policy.end_forward()
        return plan, lists

    forward([_layout("a", slots, frames, 0, frames.numel())], False)  # indexes the video
    _, question = forward([_layout("b", slots, frames, 51, frames.numel() - 51)], False)
    frames_d, slots_d = torch.cat([frames, torch.tensor([-1])]), torch.cat([slots, torch.tensor([299])])
    plan, decode = forward([_layout("b", slots_d, frames_d, frames.numel(), 1)], True)
    assert plan.select_due == () and plan.kv_positions.device.type == device
    for layer in range(L):
        assert question[layer].unique().numel() == question[layer].numel()
        # the decode step attends the question's list plus its own new token
        assert decode[layer].sort().values.tolist() == sorted(question[layer].tolist() + [frames.numel()])


@pytest.mark.parametrize("device", DEVICES)
def test_ingest_is_deterministic_on_the_device(device):
    """Two ingests of one trace build bit-identical indexes (CUDA: float sums accumulate in a fixed order,
    `add_rows`), so runs — and tensor-parallel ranks — take the same cluster decisions."""
    keys, frame_ids, _ = video_stream(seed=2, num_layers=L, num_kv_heads=H, head_dim=D, num_frames=10,
                                      tokens_per_frame=40)
    cfg = MosaicConfig(budget=50, max_cluster_size=10, join_threshold=0.3, split_threshold=0.4)
    built = []
    for _ in range(2):
        index = ClusterIndex(cfg, num_layers=L, num_kv_heads=H, head_dim=D, device=device)
        index.append(keys.to(device), frame_ids)
        index.maintain(max_splits=100)
        built.append(index)
    a, b = (index.view() for index in built)
    assert a.num_clusters == b.num_clusters
    assert torch.equal(a.assign, b.assign)
    assert torch.equal(a.table.key_sum, b.table.key_sum) and torch.equal(a.table.sq_sum, b.table.sq_sum)


@contextlib.contextmanager
def _no_sync(device: str):
    """No host synchronisation: the tensor-method guard everywhere, and on CUDA also the driver's own
    check (`torch.cuda.set_sync_debug_mode('error')`), which sees what the guard cannot (a pageable
    host→device copy, a blocking ``cudaMemcpy``)."""
    with no_host_sync():
        if device != "cuda":
            yield
            return
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("heads", ["shared", "per_kv_head"])
@pytest.mark.parametrize("device", DEVICES)
def test_reselecting_decode_layers_do_not_sync(device, heads):
    """A decode step that selects again at every layer (``reselect_every=1``): planned on the host, then
    every layer's selection written on the device with no synchronisation (the property a CUDA graph of
    the decode step needs), per-KV-head lists too."""
    g = torch.Generator().manual_seed(4)
    pool = torch.randn(L, 400, H, D, generator=g).to(device)
    cfg = MosaicConfig(budget=24, sink_tokens=2, recent_window=4, max_cluster_size=8, reselect_every=1,
                       selection_heads=heads)
    policy = ClusterAttendedSet(cfg, num_layers=L, num_kv_heads=H, head_dim=D, device=device,
                                read_slot_keys=lambda s: pool[:, s.to(device)])
    frames = torch.tensor([-1] * 3 + [f for f in range(8) for _ in range(9)] + [-1] * 5)
    slots = torch.arange(10, 10 + frames.numel())
    n = frames.numel()
    plan = policy.plan([_layout("a", slots, frames, 0, n)], False)
    for layer in range(L):
        policy.layer_kv(plan, layer, torch.randn(n, HQ, D, generator=g).to(device))
    policy.end_forward()
    for step in range(3):  # the first step builds the member lists, the later ones reuse them
        frames = torch.cat([frames, torch.tensor([-1])])
        slots = torch.cat([slots, torch.tensor([300 + step])])
        plan = policy.plan([_layout("a", slots, frames, frames.numel() - 1, 1)], True)
        assert plan.select_due == (0,) and plan.heads == (H if heads == "per_kv_head" else 1)
        queries = [torch.randn(1, HQ, D, generator=g).to(device) for _ in range(L)]
        on_device = slots.to(device)

        def reader(layer):  # the backend's `_layer_key_reader`: this layer's pool keys of each request's positions
            return lambda requests, positions: [pool[layer, on_device[p]] for p in positions]

        with _no_sync(device):
            lists = [policy.layer_kv(plan, layer, queries[layer], reader(layer)).kv_positions for layer in range(L)]
        policy.end_forward()
        nnz = int(plan.kv_indptr[-1])
        for layer, positions in enumerate(lists):  # every list filled (no -1 left), no position twice
            blocks = positions.cpu().view(plan.heads, nnz)
            assert (blocks >= 0).all() and all(row.unique().numel() == nnz for row in blocks)
