"""Captured decode steps on the CPU (`EmulatedGraph`: capture/replay semantics checked op by op): the
FlashInfer runner's graph mode (fake FlashInfer in CUDA-graph mode) over `StaticDecodeLists` captures once
with SGLang's dummy batch (every request one entry), then replays steps with other batches, lengths and
per-layer lists, padded rows included, equal to the eager torch reference — with no host synchronisation
inside the graph and every input read from the same memory at every replay. The emulation itself is
checked to catch a rebound buffer, a host sync and a Python length baked in at capture."""

from __future__ import annotations

import pytest
import torch

from mosaic_sglang.attention import FlashInferRunner, LayerLists, TorchRunner
from mosaic_sglang.attention.static_lists import StaticDecodeLists
from mosaic_sglang.serving.plan import AlwaysPart, build_plan
from mosaic_sglang.testing import fake_flashinfer
from mosaic_sglang.testing.graph_capture import EmulatedGraph, GraphReplayError
from mosaic_sglang.testing.host_sync import HostSyncError

L, HQ, HKV, D, S, ROWS, MAX_LEN = 3, 6, 2, 16, 400, 5, 64
MAX_BS, CAPACITY = 4, 24
SCALE = D ** -0.5


def _decode_plan(seq_lens, g):
    """A decode step: request b (``req_to_token`` row b + 1) attends sinks [0, 2), its last 3 tokens, and
    a different random set of up to 6 earlier positions at each layer (its kept selection)."""
    always = [AlwaysPart(torch.tensor([0]), torch.tensor([2]), n - 3) for n in seq_lens]
    f = [min(6, n - 5) for n in seq_lens]
    plan = build_plan(L, [(n - 1, n) for n in seq_lens], always, f)
    positions = plan.kv_positions.clone()
    for layer in range(L):
        for b, n in enumerate(seq_lens):
            start, end = plan.selected_span(b)
            positions[layer, start:end] = 2 + torch.randperm(n - 5, generator=g)[: end - start]
    return plan._replace(kv_positions=positions, select_due=())  # kept selections: nothing chosen in the step


def _capture_plan(batch_size):
    """What SGLang captures with: ``batch_size`` dummy requests of ``seq_len`` 1 (one entry each)."""
    return build_plan(1, [(0, 1)] * batch_size, [AlwaysPart.dense()] * batch_size, [0] * batch_size)


class _Step:
    """A decode graph of ``MAX_BS`` requests: static queries, lists, the runner in graph mode."""

    def __init__(self, g):
        self.req_to_token = (1 + torch.randperm(S - 1, generator=g)[: ROWS * MAX_LEN]).view(ROWS, MAX_LEN).to(torch.int32)
        # the same pools at every layer: layers' outputs differ only through their lists
        self.k = torch.randn(1, S, HKV, D, generator=g).expand(L, -1, -1, -1).contiguous()
        self.v = torch.randn(1, S, HKV, D, generator=g).expand(L, -1, -1, -1).contiguous()
        self.q = torch.zeros(L, MAX_BS, HQ, D)  # the graph's static input (SGLang's runner copies into its own)
        self.lists = StaticDecodeLists(L, MAX_BS, CAPACITY, "cpu")
        self.runner = FlashInferRunner(fake_flashinfer, torch.empty(16, dtype=torch.uint8), num_layers=L,
                                       num_qo_heads=HQ, num_kv_heads=HKV, head_dim=D, dtype=torch.float32,
                                       use_tensor_cores=True)
        self.runner.init_graphs(MAX_BS, CAPACITY)

    def stage(self, plan, rows, q):
        """Out of the graph: the step's lists, lengths and queries into the fixed buffers."""
        indptr = self.lists.stage(plan, rows, MAX_BS)
        self.runner.plan_graph(MAX_BS, indptr)
        self.q.zero_()
        self.q[:, : q.shape[1]].copy_(q)

    def region(self):
        """The captured part: per layer, slots from the fixed lists, then attention (device work only)."""
        return torch.stack([self.runner.run_graph_layer(layer, MAX_BS, self.q[layer], self.k[layer], self.v[layer],
                                                        self.lists.slots(layer, MAX_BS, self.req_to_token), SCALE)
                            for layer in range(L)])

    def eager(self, plan, rows, q):
        runner = TorchRunner()
        runner.begin_forward(plan, True, torch.device("cpu"))
        out = []
        for layer in range(L):
            positions = plan.kv_positions[layer]
            slots = self.req_to_token[rows[plan.kv_request], positions].long()
            out.append(runner.run_layer(layer, q[layer], None, None, self.k[layer], self.v[layer],
                                        LayerLists(plan.kv_indptr, slots, positions), torch.empty_like(q[layer]), SCALE))
        return torch.stack(out)


def test_captured_decode_steps_replay_equal_eager():
    g = torch.Generator().manual_seed(0)
    step = _Step(g)
    step.stage(_capture_plan(MAX_BS), torch.zeros(MAX_BS, dtype=torch.int64), torch.zeros(L, MAX_BS, HQ, D))
    graph = EmulatedGraph()
    graph.capture(step.region)
    assert graph.num_ops > 3 * L
    for seq_lens in ([40, 23, 31], [12, 50, 9, 60], [33]):  # padded rows, a full batch, one request
        plan = _decode_plan(seq_lens, g)
        rows = torch.arange(1, len(seq_lens) + 1)
        q = torch.randn(1, len(seq_lens), HQ, D, generator=g).expand(L, -1, -1, -1).contiguous()
        assert step.lists.fits(plan, MAX_BS)
        step.stage(plan, rows, q)
        got = graph.replay()[:, : len(seq_lens)]
        torch.testing.assert_close(got, step.eager(plan, rows, q), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got[0], got[1])  # same queries and pools: layers differ only by their lists


def test_plans_that_do_not_fit_run_eagerly():
    g = torch.Generator().manual_seed(1)
    lists = StaticDecodeLists(L, 2, 8, "cpu")
    plan = _decode_plan([40], g)  # 2 sinks + 3 tail + 6 selected = 11 entries > 8
    assert not lists.fits(plan, 2)
    assert lists.fits(plan, 2) is False and StaticDecodeLists(L, 2, 11, "cpu").fits(plan, 2)
    assert not StaticDecodeLists(L, 2, 11, "cpu").fits(_decode_plan([40, 41, 42], g), 2)  # more requests than captured
    assert not StaticDecodeLists(L, 2, 11, "cpu").fits(plan._replace(padded=True), 2)


def test_emulation_catches_what_a_real_replay_would_get_wrong():
    g = torch.Generator().manual_seed(2)
    step = _Step(g)
    step.stage(_capture_plan(MAX_BS), torch.zeros(MAX_BS, dtype=torch.int64), torch.zeros(L, MAX_BS, HQ, D))
    graph = EmulatedGraph()
    graph.capture(step.region)
    old_rows = step.lists.rows
    step.lists.rows = old_rows.clone()  # rebound outside the graph: the captured gather still reads the old rows
    with pytest.raises(GraphReplayError, match="other memory"):
        graph.replay()
    step.lists.rows = old_rows
    plan = _decode_plan([30, 20], g)
    step.stage(plan, torch.tensor([1, 2]), torch.randn(L, 2, HQ, D, generator=g))
    graph.replay()
    with pytest.raises(fake_flashinfer.FakeFlashInferError, match="one buffer per layer"):
        graph.replay()  # a replay without its plan: the page lists of the last one
    with pytest.raises(HostSyncError):
        EmulatedGraph().capture(lambda: step.lists.slots(0, MAX_BS, step.req_to_token).tolist())
    n = [4]  # a Python length read at each run: a real graph keeps the captured one
    sliced = EmulatedGraph()
    sliced.capture(lambda: step.lists.rows[: n[0]].sum())
    n[0] = 5
    with pytest.raises(GraphReplayError):
        sliced.replay()


def test_decode_graphs_capture_with_sglangs_dummy_batch_then_replay_real_steps():
    """`DecodeGraphs` in SGLang's order: `stage_capture` (every dummy request one entry at row 0), the layers
    captured, then per step `stage` and a replay — equal to eager, padded rows included."""
    from mosaic_sglang.integration.decode_graphs import DecodeGraphs

    g = torch.Generator().manual_seed(4)
    step = _Step(g)
    graphs = DecodeGraphs(step.runner, L, CAPACITY, [MAX_BS], "cpu")
    graphs.stage_capture(torch.zeros(MAX_BS, dtype=torch.int64), MAX_BS)
    graph = EmulatedGraph()
    graph.capture(lambda: torch.stack([graphs.layer(layer, MAX_BS, step.q[layer], step.k[layer], step.v[layer],
                                                    step.req_to_token, SCALE) for layer in range(L)]))
    for seq_lens in ([40, 23], [12, 50, 9, 60]):
        plan, rows = _decode_plan(seq_lens, g), torch.arange(1, len(seq_lens) + 1)
        q = torch.randn(L, len(seq_lens), HQ, D, generator=g)
        assert graphs.fits(plan, has_host_requests=False) == MAX_BS and graphs.fits(plan, True) is None
        graphs.stage(plan, rows, MAX_BS)
        step.q.zero_()
        step.q[:, : len(seq_lens)].copy_(q)
        torch.testing.assert_close(graph.replay()[:, : len(seq_lens)], step.eager(plan, rows, q), rtol=1e-5, atol=1e-5)
    assert graphs.steps == 2
