"""``selection_heads='per_kv_head'``: each KV head chooses its own clusters, scored by its own GQA group
of query heads and its own centroids. Checked against an obvious loop (per head: slice the queries and
the summaries, score, fill, mask), for the offline path (`select_layer_batch`), the serving path
(`select_layer_into`, no host sync) and the config rules."""

from __future__ import annotations

import pytest
import torch
from cluster_trace import video_stream

from mosaic_sglang import ClusterIndex, MosaicConfig
from mosaic_sglang.clusters import select_layer_batch, select_layer_into
from mosaic_sglang.clusters.scoring import score_clusters
from mosaic_sglang.clusters.select import attended_mask, index_always_lse, layer_summaries
from mosaic_sglang.config import MosaicConfigError
from mosaic_sglang.retrieval.base import always_attended_mask
from mosaic_sglang.retrieval.budget import fill_budget_exact
from mosaic_sglang.testing.host_sync import no_host_sync

L, H, GROUP, D = 3, 3, 2, 12


def _index(seed: int, frames: int, budget: int, membership: str = "shared") -> ClusterIndex:
    keys, frame_ids, _ = video_stream(seed=seed, num_layers=L, num_kv_heads=H, head_dim=D, num_frames=frames,
                                      tokens_per_frame=21)
    cfg = MosaicConfig(budget=budget, sink_tokens=3, recent_window=7, max_cluster_size=9, join_threshold=0.3,
                       split_threshold=0.45, membership=membership, selection_heads="per_kv_head")
    index = ClusterIndex(cfg, num_layers=L, num_kv_heads=H, head_dim=D)
    index.append(keys, frame_ids)
    index.maintain(max_splits=100)
    return index


def _loop(index: ClusterIndex, layer: int, queries: torch.Tensor, seq_len: int) -> list[torch.Tensor]:
    """Per KV head, the obvious way: its query heads, its summaries' slice, score, exact fill, mask."""
    view = index.view()
    layers = torch.tensor([layer])
    s = layer_summaries(view, layers, seq_len)
    always = index_always_lse(view, layers, queries[None], seq_len)  # [1, H, Tq · GROUP]: head h reads its own
    out = []
    for h in range(H):
        if s.full:
            take = s.cost
        else:
            scores = score_clusters(queries[None, :, h * GROUP:(h + 1) * GROUP], s.centroid[:, :, h:h + 1],
                                    s.spread[:, :, h:h + 1], s.cost, rule=index.config.score,
                                    reduce=index.config.query_reduce, always_lse=always[:, h:h + 1])
            take = fill_budget_exact(scores, s.cost, index.config.budget)
        out.append(attended_mask(view, layers, take, seq_len)[0].nonzero().flatten())
    return out


@pytest.mark.parametrize("membership", ["shared", "per_layer"])
def test_per_head_selection_equals_a_loop_over_heads_offline_and_served(membership):
    g = torch.Generator().manual_seed(5)
    indexes = [_index(0, 9, 40, membership), _index(1, 4, 9, membership), _index(2, 3, 10_000, membership)]
    seq_lens = [index.num_tokens + extra for index, extra in zip(indexes, (0, 5, 0))]
    differ = 0
    for layer in range(L):
        for tq in (1, 3):
            queries = [torch.randn(tq, H * GROUP, D, generator=g) for _ in indexes]
            offline = select_layer_batch(indexes, layer, queries, seq_lens)
            outs, parts = [], []
            for index, q, n, got in zip(indexes, queries, seq_lens, offline):
                want = _loop(index, layer, q, n)
                assert got.shape[0] == H and [row.tolist() for row in got] == [w.tolist() for w in want]
                differ += int(any(not torch.equal(want[0], w) for w in want[1:]))
                always = always_attended_mask(index.frame_ids, index.config, seq_len=n)
                selected = [w[~always[w]] for w in want]
                f = selected[0].numel()
                assert all(part.numel() == f for part in selected)  # every head attends as many
                parts.append(torch.cat(selected))
                outs.append(torch.full((H * f + 1,), -7, dtype=torch.int64))
            lses = [index_always_lse(index.view(), torch.tensor([layer]), q[None], n)  # a server passes its own
                    for index, q, n in zip(indexes, queries, seq_lens)]
            with no_host_sync():
                select_layer_into(indexes, layer, queries, seq_lens, outs, lses)
            for out, part in zip(outs, parts):
                assert out[:-1].tolist() == part.tolist()
    assert differ > 0  # heads really chose differently (else the loop above proves nothing per head)


def test_per_head_select_rows_are_layer_major():
    index = _index(3, 6, 30)
    queries = torch.randn(L, 2, H * GROUP, D, generator=torch.Generator().manual_seed(1))
    sel = index.select(queries)
    assert sel.indptr.numel() == L * H + 1
    for layer in range(L):
        rows = index.select_layer(layer, queries[layer])
        for h in range(H):
            assert torch.equal(sel.layer(layer * H + h), rows[h])


def test_select_into_refuses_outputs_that_are_not_one_part_per_head():
    index = _index(4, 4, 8)
    with pytest.raises(ValueError, match="3 heads x f"):
        select_layer_into([index], 0, [torch.randn(1, H * GROUP, D)], [None], [torch.empty(9, dtype=torch.int64)])


def test_per_head_needs_the_exact_fill_and_takes_the_host_tier():
    with pytest.raises(MosaicConfigError, match="field 'fill'.*'exact'.*per_kv_head.*got 'whole'"):
        MosaicConfig(selection_heads="per_kv_head", fill="whole")
    with pytest.raises(MosaicConfigError, match="selection_heads"):
        MosaicConfig(selection_heads="per_query_head")
    MosaicConfig(selection_heads="per_kv_head", host_store_tokens=64)  # served (tests/test_engine_offload.py)


def test_under_tensor_parallelism_the_policy_lists_every_kv_head():
    """A tensor-parallel rank holds one KV head of two, but its policy chooses the lists of both (the same
    decisions on every rank, tests/test_engine_tensor_parallel.py); the backend attends its own block."""
    from mosaic_sglang.integration.runtime import MosaicRuntime

    runtime = MosaicRuntime(MosaicConfig(selection_heads="per_kv_head"))
    bind = dict(num_layers=2, num_kv_heads=1, head_dim=8, v_head_dim=8, dtype=torch.float32, index_kv_heads=2,
                read_slot_keys=lambda slots: torch.zeros(2, slots.numel(), 2, 8), read_slot_kv=None)
    runtime.bind_model(**bind, tp_rank=1, tp_size=2)
    assert runtime.policy.heads == 2


def test_a_head_block_of_the_plan_is_a_view_of_those_heads_lists():
    """`ForwardPlan.head_block` (a rank's own heads) sees what the selecting layer writes into the whole plan,
    and its head-major lists are the whole plan's entries `head_block_lists` names."""
    from mosaic_sglang.serving.head_major import head_block_lists
    from mosaic_sglang.serving.plan import ForwardPlan

    heads, batch, nnz = 4, 2, 5
    kv_indptr = torch.tensor([0, 2, 5])
    plan = ForwardPlan(q_indptr=torch.tensor([0, 1, 2]), q_positions=torch.tensor([4, 7]), kv_indptr=kv_indptr,
                       kv_positions=torch.full((3, heads * nnz), -1), kv_request=torch.tensor([0, 0, 1, 1, 1]),
                       always_len=torch.tensor([1, 1]), select_due=(), max_q=1, max_kv=3, heads=heads)
    block = plan.head_block(2, 2)
    assert block.heads == 2 and block.kv_positions.shape == (3, 2 * nnz)
    plan.kv_positions[1] = torch.arange(heads * nnz)  # the policy writes every head's lists
    assert block.kv_positions[1].tolist() == list(range(2 * nnz, 4 * nnz))
    whole, own = plan.head_major(), block.head_major()
    lo, hi, indptr = head_block_lists(whole.kv_indptr, 2, 2, batch)
    assert (lo, hi) == (2 * nnz, 4 * nnz) and torch.equal(indptr, own.kv_indptr)
    assert torch.equal(whole.kv_request[lo:hi] - 2 * batch, own.kv_request)  # lists h·B + b, h within the block
    assert plan.head_block(0, heads) is plan
    with pytest.raises(ValueError, match="head_block.*first=3, count=2"):
        plan.head_block(3, 2)


def test_policy_writes_each_heads_selection_into_its_block_and_keeps_it():
    """Through the serving policy: at a question each KV head's block of the plan holds that head's
    selection (as `select_layer_batch` gives it, minus the always part), and the next decode step's plan
    copies every head's part back from the slab into the same block."""
    from mosaic_sglang.serving import ClusterAttendedSet, RequestLayout

    g = torch.Generator().manual_seed(2)
    pool = torch.randn(L, 300, H, D, generator=g)
    cfg = MosaicConfig(budget=20, sink_tokens=2, recent_window=4, max_cluster_size=8, selection_heads="per_kv_head")
    policy = ClusterAttendedSet(cfg, num_layers=L, num_kv_heads=H, head_dim=D, read_slot_keys=lambda s: pool[:, s])
    frames = torch.tensor([-1] * 3 + [f for f in range(7) for _ in range(9)] + [-1] * 5)
    slots = torch.arange(10, 10 + frames.numel())
    n = frames.numel()

    def layout(prefix, frame_ids, slot_ids):
        return RequestLayout("q", 1, prefix, frame_ids.numel() - prefix, frame_ids, slot_ids)

    plan = policy.plan([RequestLayout("v", 1, 0, n, frames, slots)], False)  # indexes the video
    for layer in range(L):
        policy.layer_kv(plan, layer, torch.randn(n, H * GROUP, D, generator=g))
    policy.end_forward()
    index = policy.videos[policy._anchors[0]].index
    plan = policy.plan([layout(n - 5, frames, slots)], False)  # the question: its 5 text tokens select
    assert plan.select_due == (0,) and plan.heads == H
    nnz, (start, end) = int(plan.kv_indptr[-1]), plan.selected_span(0)
    always = always_attended_mask(index.frame_ids, cfg, seq_len=n)
    chosen = []
    for layer in range(L):
        q = torch.randn(5, H * GROUP, D, generator=g)
        blocks = policy.layer_kv(plan, layer, q).kv_positions.view(H, nnz)
        (want,) = select_layer_batch([index], layer, [q], [n])
        for h in range(H):
            assert blocks[h, start:end].tolist() == want[h][~always[want[h]]].tolist()
            assert blocks[h, :start].tolist() == blocks[0, :start].tolist()  # the always part, every head
        chosen.append(blocks[:, start:end].clone())
    assert any(not torch.equal(c[0], c[h]) for c in chosen for h in range(1, H))  # heads chose differently
    policy.end_forward()
    frames_d, slots_d = torch.cat([frames, torch.tensor([-1])]), torch.cat([slots, torch.tensor([299])])
    plan = policy.plan([layout(n, frames_d, slots_d)], True)  # a decode step keeps the question's selection
    assert plan.select_due == ()
    nnz, (start, end) = int(plan.kv_indptr[-1]), plan.selected_span(0)
    for layer in range(L):
        blocks = policy.layer_kv(plan, layer, torch.randn(1, H * GROUP, D, generator=g)).kv_positions.view(H, nnz)
        assert torch.equal(blocks[:, start:end], chosen[layer])


def test_policy_serves_mass_budgets_per_head_as_head_major_lists():
    """budget_mode='mass' with per-KV-head selection: each head takes what reaches the target on its own
    head (lengths differ), its block of the plan holds it (``-1`` after), `ForwardPlan.layer` drops the
    padding head-major (``H · B`` lists), and the next decode step's plan keeps every head's part."""
    from mosaic_sglang.serving import ClusterAttendedSet, RequestLayout

    g = torch.Generator().manual_seed(5)
    pool = torch.randn(L, 300, H, D, generator=g)
    cfg = MosaicConfig(budget=40, sink_tokens=2, recent_window=4, max_cluster_size=8, selection_heads="per_kv_head",
                       budget_mode="mass", mass_target=0.6)
    policy = ClusterAttendedSet(cfg, num_layers=L, num_kv_heads=H, head_dim=D, read_slot_keys=lambda s: pool[:, s])
    frames = torch.tensor([-1] * 3 + [f for f in range(7) for _ in range(9)] + [-1] * 5)
    slots = torch.arange(10, 10 + frames.numel())
    n = frames.numel()
    plan = policy.plan([RequestLayout("v", 1, 0, n - 5, frames[: n - 5], slots[: n - 5])], False)
    for layer in range(L):
        policy.layer_kv(plan, layer, torch.randn(n - 5, H * GROUP, D, generator=g))
    policy.end_forward()
    index = policy.videos[policy._anchors[0]].index
    plan = policy.plan([RequestLayout("q", 1, n - 5, 5, frames, slots)], False)
    assert plan.padded and plan.heads == H and plan.select_due == (0,)
    start, end = plan.selected_span(0)
    a = int(plan.always_len[0])
    always = always_attended_mask(index.frame_ids, cfg, seq_len=n)
    lengths, chosen, longest = set(), [], 0
    for layer in range(L):
        q = torch.randn(5, H * GROUP, D, generator=g)
        kv = policy.layer_kv(plan, layer, q)
        (want,) = select_layer_batch([index], layer, [q], [n])  # [H, n] rows ending in -1
        assert kv.kv_indptr.numel() == H + 1  # head-major: one list per (head, request)
        for h in range(H):
            row = want[h][want[h] >= 0]
            own = row[~always[row]]
            got = kv.kv_positions[kv.kv_indptr[h] : kv.kv_indptr[h + 1]]
            assert got[a:].tolist() == own.tolist() and int(kv.kv_indptr[h + 1] - kv.kv_indptr[h]) == a + own.numel()
            assert own.numel() <= end - start
            lengths.add(own.numel())
            longest = max(longest, own.numel())
        chosen.append(kv)
    assert len(lengths) > 1  # the heads (or layers) reached the target with different counts
    policy.end_forward()
    frames_d, slots_d = torch.cat([frames, torch.tensor([-1])]), torch.cat([slots, torch.tensor([299])])
    plan = policy.plan([RequestLayout("q", 1, n, 1, frames_d, slots_d)], True)  # decode keeps the selection
    assert plan.select_due == ()
    span = plan.selected_span(0)
    assert span[1] - span[0] == longest < end - start  # planned as the heads' longest part, not the cap
    a_decode = int(plan.always_len[0])  # the always part as kept, plus the new token
    for layer in range(L):
        kept = policy.layer_kv(plan, layer, torch.randn(1, H * GROUP, D, generator=g))
        before = chosen[layer]
        for h in range(H):
            old = before.kv_positions[before.kv_indptr[h] : before.kv_indptr[h + 1]]
            new = kept.kv_positions[kept.kv_indptr[h] : kept.kv_indptr[h + 1]]
            assert new[a_decode:].tolist() == old[a:].tolist()  # each head's own selection, its own length
