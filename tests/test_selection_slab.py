"""`SelectionSlab` (req_to_selection) and `build_plan` over it: kept selections copied into a forward's lists
on the device, always parts expanded from ranges, padding where a layer selected fewer."""

from __future__ import annotations

import pytest
import torch

from mosaic_sglang import MosaicConfig
from mosaic_sglang.kernels.assemble_always import always_ranges
from mosaic_sglang.retrieval.base import always_attended_mask
from mosaic_sglang.serving.plan import AlwaysPart, build_plan
from mosaic_sglang.serving.selection_slab import SelectionSlab

L = 3


def test_rows_are_reused_and_growth_keeps_what_was_written():
    slab = SelectionSlab(L)
    row_a = slab.reserve("a", 4, index_size=100)
    for layer in range(L):
        slab.write("a", layer, torch.arange(layer + 1) + 10 * layer)
    row_b = slab.reserve("b", 9, index_size=50)  # more rows and a wider slab
    assert row_b != row_a and slab.positions.shape[2] >= 9
    assert slab.counts("a") == [1, 2, 3] and slab.index_size("a") == 100
    assert slab.positions[row_a, 2, :3].tolist() == [20, 21, 22]
    assert bool((slab.positions[row_a, 2, 3:] == -1).all())
    slab.release("a")
    assert "a" not in slab and slab.index_size("a") is None
    assert bool((slab.positions[row_a] == -1).all())
    assert slab.reserve("c", 2, index_size=1) == row_a  # the freed row is handed out again
    slab.release("unknown")  # no-op


def test_rewriting_a_layer_with_fewer_positions_pads_the_rest():
    slab = SelectionSlab(1)
    slab.reserve("a", 5, index_size=5)
    slab.write("a", 0, torch.arange(5))
    slab.write("a", 0, torch.tensor([7, 8]))
    assert slab.positions[slab.row("a"), 0, :5].tolist() == [7, 8, -1, -1, -1]
    assert slab.counts("a") == [2]


def test_a_second_reserve_forgets_the_earlier_selection():
    slab = SelectionSlab(2)
    slab.reserve("a", 3, index_size=10)
    slab.write("a", 0, torch.tensor([1, 2, 3]))
    slab.reserve("a", 3, index_size=20)
    assert slab.counts("a") == [0, 0] and slab.index_size("a") == 20
    assert bool((slab.positions[slab.row("a")] == -1).all())


def _always(frame_ids, seq_len, cfg):
    covered = frame_ids.numel()
    return AlwaysPart(*always_ranges(frame_ids, sink_tokens=cfg.sink_tokens, recent_window=cfg.recent_window,
                                     seq_len=seq_len), covered)


def test_build_plan_lays_out_always_parts_and_kept_selections_per_layer():
    cfg = MosaicConfig(sink_tokens=2, recent_window=3)
    g = torch.Generator().manual_seed(0)
    # request 0: kept selection (decode step), request 1: dense text, request 2: due (selection at this forward)
    frames0 = torch.tensor([-1, -1] + [0] * 6 + [1] * 6 + [-1] + [2] * 6)  # 21 indexed positions
    frames2 = torch.tensor([-1] + [0] * 5 + [1] * 5)
    seq0, seq1, seq2 = 30, 7, 11
    slab = SelectionSlab(L)
    kept_row = slab.reserve("r0", 4, index_size=21)
    eligible = (~always_attended_mask(frames0, cfg, seq_len=seq0) & (frames0 >= 0)).nonzero().flatten()
    chosen = [eligible[torch.randperm(eligible.numel(), generator=g)[: 4 - (layer == 1)]] for layer in range(L)]
    for layer, positions in enumerate(chosen):
        slab.write("r0", layer, positions)
    always = [_always(frames0, seq0, cfg), AlwaysPart.dense(), _always(frames2, seq2, cfg)]
    plan = build_plan(L, [(seq0 - 1, seq0), (0, seq1), (6, seq2)], always, [4, 0, 3],
                      kept=[kept_row, None, None], slab=slab, padded=True)
    assert plan.select_due == (2,)
    expected_always = [
        torch.cat([always_attended_mask(frames0, cfg, seq_len=seq0).nonzero().flatten(), torch.arange(21, seq0)]),
        torch.arange(seq1),
        torch.cat([always_attended_mask(frames2, cfg, seq_len=seq2).nonzero().flatten(), torch.arange(11, seq2)]),
    ]
    assert plan.always_len.tolist() == [t.numel() for t in expected_always]
    assert plan.kv_indptr.tolist()[1:] == torch.cumsum(torch.tensor([expected_always[0].numel() + 4, seq1,
                                                                     expected_always[2].numel() + 3]), 0).tolist()
    for layer in range(L):
        row = plan.kv_positions[layer]
        for b, part in enumerate(expected_always):
            start = int(plan.kv_indptr[b])
            assert row[start : start + part.numel()].tolist() == part.tolist()
        start, end = plan.selected_span(0)
        want = chosen[layer].tolist() + [-1] * (4 - chosen[layer].numel())
        assert row[start:end].tolist() == want
        start, end = plan.selected_span(2)
        assert row[start:end].tolist() == [-1] * 3  # due: written by the policy at the layer
    assert plan.kv_request.tolist() == torch.repeat_interleave(torch.arange(3), plan.kv_indptr.diff()).tolist()
    kv = plan.layer(0)  # padded: the -1 entries of request 0's shorter layer and request 2's are dropped
    assert kv.kv_indptr.diff().tolist() == [expected_always[0].numel() + 4, seq1, expected_always[2].numel()]


def test_one_row_plan_serves_every_layer():
    plan = build_plan(1, [(0, 5), (3, 4)], [AlwaysPart.dense()] * 2, [0, 0])
    for layer in range(4):
        assert plan.layer(layer).kv_positions.tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3]


def test_kept_selections_need_their_slab():
    slab = SelectionSlab(1)
    row = slab.reserve("a", 1, index_size=1)
    with pytest.raises(AssertionError, match="slab"):
        build_plan(1, [(0, 1)], [AlwaysPart.dense()], [1], kept=[row])
