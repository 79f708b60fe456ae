"""Per-KV-head lists (`ForwardPlan.heads` > 1) attended as KV heads relabelled as requests
(`ForwardPlan.head_major`, `serving/head_major.py`): the result equals attending each head's lists on
its own slice of the pool, head by head; `build_plan` lays the heads' kept parts out from the slab."""

from __future__ import annotations

import torch

from mosaic_sglang.kernels import attended_attention
from mosaic_sglang.serving.head_major import head_slots, pool_heads_as_slots, rows_head_major, write_token_major
from mosaic_sglang.serving.plan import AlwaysPart, ForwardPlan, build_plan
from mosaic_sglang.serving.selection_slab import SelectionSlab

H, G, D, S = 3, 2, 8, 40


def _plan(g: torch.Generator) -> tuple[ForwardPlan, torch.Tensor]:
    """Two requests (2 queries at positions 10-11; 1 query at position 7), per head a different list of
    distinct positions; ``slot_of [B, 16]`` maps a request's positions to pool slots."""
    q_indptr, q_positions = torch.tensor([0, 2, 3]), torch.tensor([10, 11, 7])
    lengths = (6, 4)
    kv_indptr = torch.tensor([0, 6, 10])
    blocks = []
    for _ in range(H):
        blocks.append(torch.cat([torch.cat([torch.tensor([q_positions[1] if b == 0 else 7]),
                                            torch.randperm(q_positions[1] if b == 0 else 7, generator=g)[: n - 1]])
                                 for b, n in enumerate(lengths)]))
    kv_positions = torch.cat(blocks)[None]  # [1, H · nnz]
    kv_request = torch.repeat_interleave(torch.arange(2), torch.tensor(lengths))
    slot_of = torch.randperm(S - 1, generator=g)[:32].view(2, 16) + 1
    plan = ForwardPlan(q_indptr, q_positions, kv_indptr, kv_positions, kv_request, torch.tensor([1, 1]), (), 2, 6,
                       False, H)
    return plan, slot_of


def test_heads_as_requests_equal_attending_each_head_alone():
    g = torch.Generator().manual_seed(0)
    plan, slot_of = _plan(g)
    q = torch.randn(3, H * G, D, generator=g)
    k_pool, v_pool = torch.randn(S, H, D, generator=g), torch.randn(S, H, D, generator=g)
    nnz = int(plan.kv_indptr[-1])
    expected = torch.empty(3, H * G, D)
    for h in range(H):
        positions = plan.kv_positions[0, h * nnz:(h + 1) * nnz]
        slots = slot_of[plan.kv_request, positions]
        expected[:, h * G:(h + 1) * G] = attended_attention(
            q[:, h * G:(h + 1) * G], plan.q_indptr, plan.q_positions, k_pool[:, h:h + 1].contiguous(),
            v_pool[:, h:h + 1].contiguous(), plan.kv_indptr, slots, positions)
    heads = plan.head_major()
    assert heads.kv_indptr.tolist() == [0, 6, 10, 16, 20, 26, 30] and heads.q_indptr.tolist() == [0, 2, 3, 5, 6, 8, 9]
    batch = plan.kv_indptr.numel() - 1
    positions = heads.kv_positions[0]
    slots = head_slots(slot_of[heads.kv_request % batch, positions], heads.kv_request // batch, H)
    out = attended_attention(rows_head_major(q, H), heads.q_indptr, heads.q_positions, pool_heads_as_slots(k_pool),
                             pool_heads_as_slots(v_pool), heads.kv_indptr, slots, positions)
    torch.testing.assert_close(write_token_major(out, torch.empty(3, H * G, D), H), expected, rtol=1e-6, atol=1e-6)
    # heads differ: attending head 0's lists with every head would not give this
    assert not torch.allclose(expected[:, G:2 * G], attended_attention(
        q[:, G:2 * G], plan.q_indptr, plan.q_positions, k_pool[:, 1:2].contiguous(), v_pool[:, 1:2].contiguous(),
        plan.kv_indptr, slot_of[plan.kv_request, plan.kv_positions[0, :nnz]], plan.kv_positions[0, :nnz]))


def test_padded_per_head_lists_compact_head_major_and_attend_each_head_alone():
    """Mass budgets per KV head: each head's list has its own length (``-1`` padding in its block).
    `ForwardPlan.layer` compacts them head-major with each entry's list (``h · B + b``), and attention over
    them equals attending each head alone over its own list."""
    g = torch.Generator().manual_seed(1)
    plan, slot_of = _plan(g)
    nnz = int(plan.kv_indptr[-1])
    positions = plan.kv_positions.clone()
    positions[0, nnz + 4 : nnz + 6] = -1  # head 1, request 0: two entries shorter
    positions[0, 9] = -1  # head 0, request 1: one shorter
    plan = plan._replace(kv_positions=positions, padded=True)
    kv = plan.layer(0)
    # lists (h, b) in order (0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1); full lengths 6 and 4
    assert kv.kv_indptr.tolist() == [0, 6, 9, 13, 17, 23, 27]
    assert kv.kv_request.tolist() == [0] * 6 + [1] * 3 + [2] * 4 + [3] * 4 + [4] * 6 + [5] * 4
    row_ids = torch.tensor([5, 3])  # req_to_token rows of the two requests
    rows, head = row_ids[kv.kv_request % 2], kv.kv_request // 2  # as the backend derives them
    q = torch.randn(3, H * G, D, generator=g)
    k_pool, v_pool = torch.randn(S, H, D, generator=g), torch.randn(S, H, D, generator=g)
    slot_of_row = {5: slot_of[0], 3: slot_of[1]}
    slots = torch.stack([slot_of_row[int(r)][int(p)] for r, p in zip(rows, kv.kv_positions)])
    attn = plan.head_major()
    out = attended_attention(rows_head_major(q, H), attn.q_indptr, attn.q_positions, pool_heads_as_slots(k_pool),
                             pool_heads_as_slots(v_pool), kv.kv_indptr, head_slots(slots, head, H), kv.kv_positions)
    expected = torch.empty(3, H * G, D)
    for h in range(H):
        own = kv.kv_indptr[h * 2 : h * 2 + 3] - kv.kv_indptr[h * 2]
        pos = kv.kv_positions[kv.kv_indptr[h * 2] : kv.kv_indptr[h * 2 + 2]]
        request = torch.repeat_interleave(torch.arange(2), own[1:] - own[:-1])
        expected[:, h * G:(h + 1) * G] = attended_attention(
            q[:, h * G:(h + 1) * G], plan.q_indptr, plan.q_positions, k_pool[:, h:h + 1].contiguous(),
            v_pool[:, h:h + 1].contiguous(), own, slot_of[request, pos], pos)
    torch.testing.assert_close(write_token_major(out, torch.empty(3, H * G, D), H), expected, rtol=1e-6, atol=1e-6)


def test_row_layouts_invert():
    x = torch.randn(5, H * G, D)
    assert torch.equal(write_token_major(rows_head_major(x, H), torch.empty_like(x), H), x)
    assert torch.equal(rows_head_major(x, H)[2 * 5 + 1], x[1, 2 * G:3 * G])


def test_build_plan_lays_out_each_heads_kept_part():
    """A kept per-head selection (``H · f`` per layer in its slab row) lands in every head's block after
    the shared always part; a due request's selected parts stay ``-1`` in every block."""
    layers, f = 2, 3
    slab = SelectionSlab(layers)
    slab.reserve("kept", H * f, 50)
    parts = [torch.arange(20 + 10 * l, 20 + 10 * l + H * f) for l in range(layers)]  # head h: [h·f, (h+1)·f)
    for l in range(layers):
        slab.write("kept", l, parts[l])
    always = [AlwaysPart(torch.tensor([0]), torch.tensor([2]), 50), AlwaysPart(torch.tensor([0]), torch.tensor([1]), 30)]
    plan = build_plan(layers, [(50, 51), (29, 31)], always, [f, 2], kept=[slab.row("kept"), None], slab=slab, heads=H)
    nnz = int(plan.kv_indptr[-1])
    assert plan.kv_positions.shape == (layers, H * nnz) and plan.heads == H
    for l in range(layers):
        for h in range(H):
            block = plan.kv_positions[l, h * nnz:(h + 1) * nnz]
            assert block[:6].tolist() == [0, 1, 50] + parts[l][h * f:(h + 1) * f].tolist()
            assert block[6:].tolist() == [0, 30, -1, -1]  # range [0, 1), the tail [30, 31), f = 2 due
    assert plan.select_due == (1,)
