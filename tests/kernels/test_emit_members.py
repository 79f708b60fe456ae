"""`emit_members` (K3) Triton kernel and batched torch form vs the plain-loop reference on seeded odd shapes, and the emitted
set against what `attended_mask` selects beyond the always part, from real small `ClusterIndex`es.

Synthetic cases cover an empty cluster, a one-token cluster, clusters longer than one block, the
maximum cluster count taken whole, a truncated boundary cluster (the exact fill), take=0 rows, members
inside the recent window and sinks that skip more than a block. Outputs are poisoned (-7) first and rows
are laid out with gaps, so an unwritten entry or a write outside a row fails."""

from __future__ import annotations

import pytest
import torch
from cluster_trace import video_stream  # tests/ is on the path (its conftest.py)
from kernel_support import DEVICE

from mosaic_sglang import ClusterIndex, MosaicConfig
from mosaic_sglang.clusters import choose_clusters
from mosaic_sglang.clusters.select import attended_mask, cluster_members
from mosaic_sglang.kernels.emit_members import eligible_bounds, emit_members, emit_members_reference
from mosaic_sglang.kernels.exact_fill import exact_fill_reference
from mosaic_sglang.retrieval.base import always_attended_mask

POISON = -7
# (rows, max clusters per group, positions, sink tokens, recent window)
CASES = [(1, 1, 12, 0, 0), (5, 63, 300, 3, 40), (3, 130, 260, 2, 7), (2, 5, 600, 250, 100)]
OUTPUTS = ["positions-int64", "positions-int32", "slots-int32", "slots-int64"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add contention on a loaded 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _membership(gen, num_c: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(indptr [num_c + 1], positions)`` of one group over ``n`` positions (every 11th is text):
    cluster 0 empty and cluster 1 a single token when there are enough clusters."""
    visual = torch.tensor([p for p in range(n) if p % 11 != 5])
    ids = torch.randint(0, num_c, (visual.numel(),), generator=gen)
    if num_c >= 3:
        ids[ids <= 1] = 2
        ids[visual.numel() // 2] = 1
    counts = torch.bincount(ids, minlength=num_c)
    order = torch.argsort(ids * (n + 1) + visual)  # by cluster, then ascending position
    return torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)]), visual[order]


def _synthetic(case, seed=0):
    rows, num_c, n, sinks, window = case
    gen = torch.Generator().manual_seed(seed)
    groups = [_membership(gen, num_c, n), _membership(gen, max(1, num_c // 2), n)]  # group 1 has fewer
    bases = [0, groups[0][0].numel() - 1]
    indptr = torch.cat([groups[0][0], groups[1][0][1:] + groups[0][0][-1]])
    positions = torch.cat([groups[0][1], groups[1][1]])
    group = torch.arange(rows) % 2
    seq_len = n + torch.randint(0, 30, (rows,), generator=gen)  # the window reaches into the members
    lo, hi = zip(*(eligible_bounds(sinks, window, int(s)) for s in seq_len))
    lo, hi = torch.tensor(lo), torch.tensor(hi)
    cost = torch.zeros(rows, num_c, dtype=torch.int64)  # eligible members per cluster
    for r in range(rows):
        g_indptr, g_positions = groups[int(group[r])]
        for c in range(g_indptr.numel() - 1):
            m = g_positions[int(g_indptr[c]) : int(g_indptr[c + 1])]
            cost[r, c] = int(((m >= lo[r]) & (m < hi[r])).sum())
    scores = torch.randn(rows, num_c, generator=gen)
    budget = torch.stack([cost.sum(1) // 3, torch.zeros(rows, dtype=torch.int64), cost.sum(1)])
    budget = budget[torch.arange(rows) % 3, torch.arange(rows)]  # row r % 3: a third, nothing, everything
    budget[0] = cost[0].sum()  # row 0: every cluster of the largest group, whole
    take = exact_fill_reference(scores, cost, budget)  # a truncated boundary cluster per partial row
    cluster_base = torch.tensor(bases)[group]
    return indptr, positions, cluster_base, take, lo, hi


def _layout(take: torch.Tensor, gen) -> tuple[torch.Tensor, int]:
    """Row offsets with a gap before every row (left poisoned) and the buffer size."""
    gaps = torch.randint(1, 4, (take.shape[0],), generator=gen)
    ends = torch.cumsum(take.sum(1) + gaps, 0)
    return ends - take.sum(1), int(ends[-1]) + 2 if take.shape[0] else 2


def _run_both(inputs, output: str, seed=0, impl="triton"):
    indptr, positions, cluster_base, take, lo, hi = inputs
    gen = torch.Generator().manual_seed(seed + 1)
    offset, size = _layout(take, gen)
    kind, dtype = output.split("-")
    dtype = torch.int32 if dtype == "int32" else torch.int64
    r2t = token_row = None
    if kind == "slots":
        r2t = torch.randperm(4 * 700, generator=gen).reshape(4, 700).to(dtype)  # positions < 700
        token_row = torch.randint(0, 4, (take.shape[0],), generator=gen)
    else:
        positions = positions.to(dtype)  # member positions may be stored as int32 too
    want = torch.full((size,), POISON, dtype=dtype)
    emit_members_reference(indptr, positions, cluster_base, take, lo, hi, offset, req_to_token=r2t,
                           token_row=token_row, out=want)
    device = DEVICE if impl == "triton" else "cpu"
    got = torch.full((size,), POISON, dtype=dtype, device=device)
    to = (lambda t: None if t is None else t.to(device))
    res = emit_members(*(to(t) for t in (indptr, positions, cluster_base, take, lo, hi, offset)),
                       req_to_token=to(r2t), token_row=to(token_row), out=got, impl=impl)
    assert res.data_ptr() == got.data_ptr()
    return want, got.cpu(), offset


@pytest.mark.parametrize("impl", ["triton", "vectorized"])
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("case", CASES, ids=[f"R{r}-C{c}-N{n}-S{s}-W{w}" for r, c, n, s, w in CASES])
def test_kernel_equals_reference(case, output, impl):
    inputs = _synthetic(case)
    take = inputs[3]
    assert (take == 0).all(1).any() or case[0] == 1, "a take=0 row is part of the case"
    want, got, offset = _run_both(inputs, output, impl=impl)
    written = torch.zeros(want.numel(), dtype=torch.bool)
    for r in range(take.shape[0]):
        written[int(offset[r]) : int(offset[r] + take[r].sum())] = True
    assert (want[written] != POISON).all() and (want[~written] == POISON).all()  # exactly the rows' entries
    assert torch.equal(got, want)


def _index(membership: str, seed: int, budget: int):
    keys, frame_ids, _ = video_stream(seed=seed, num_layers=3, num_kv_heads=2, head_dim=12, num_frames=6,
                                      tokens_per_frame=30)
    config = MosaicConfig(budget=budget, sink_tokens=3, recent_window=20, max_cluster_size=9, join_threshold=0.3,
                          split_threshold=0.45, membership=membership, selection_heads="shared")  # one list per layer
    index = ClusterIndex(config, num_layers=3, num_kv_heads=2, head_dim=12)
    index.append(keys, frame_ids)
    index.maintain(max_splits=100)
    return index


@pytest.mark.parametrize("impl", ["triton", "vectorized"])
@pytest.mark.parametrize("budget", [0, 37, 10_000])
def test_emitted_set_is_attended_mask_minus_always(budget, impl):
    """Two requests (per-layer and shared membership, different served lengths), all layers as rows."""
    items = [(_index("per_layer", 0, budget), 12), (_index("shared", 1, budget), 0)]  # (index, tokens past it)
    takes, bases, bounds, expected, row_views = [], [], [], [], []
    indptr_parts, position_parts, num_clusters, num_members = [torch.zeros(1, dtype=torch.int64)], [], 0, 0
    for index, extra in items:
        view = index.view()
        seq_len = index.num_tokens + extra
        group_base = []
        for g in range(view.assign.shape[0]):  # every membership group, one global cluster numbering
            ip, pos = cluster_members(view, g)
            group_base.append(num_clusters)
            indptr_parts.append(ip[1:] + num_members)
            position_parts.append(pos)
            num_clusters, num_members = num_clusters + ip.numel() - 1, num_members + pos.numel()
        layers = torch.arange(view.num_layers)
        queries = torch.randn(view.num_layers, 2, 4, 12, generator=torch.Generator().manual_seed(budget))
        (take,) = choose_clusters([view], [layers], [queries], [seq_len])
        always = always_attended_mask(view.frame_ids, view.config, seq_len=seq_len)
        expected += [m.nonzero().flatten() for m in attended_mask(view, layers, take, seq_len) & ~always]
        takes.append(take)
        bases.append(torch.tensor(group_base)[view.group_of_layer])
        bounds += [eligible_bounds(view.config.sink_tokens, view.config.recent_window, seq_len)] * view.num_layers
        row_views += [(view, int(g)) for g in view.group_of_layer]
    width = max(t.shape[1] for t in takes)
    take = torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in takes])  # padding takes 0
    lo, hi = (torch.tensor(b) for b in zip(*bounds))
    inputs = (torch.cat(indptr_parts), torch.cat(position_parts), torch.cat(bases), take, lo, hi)
    want, got, offset = _run_both(inputs, "positions-int64", seed=budget, impl=impl)
    assert torch.equal(got, want)
    for r, (exp, (view, group)) in enumerate(zip(expected, row_views)):
        emitted = got[int(offset[r]) : int(offset[r] + take[r].sum())]
        assert torch.equal(emitted.sort().values, exp), f"row {r}"
        ids = view.assign[group, emitted]
        order = torch.argsort(ids * (view.num_tokens + 1) + emitted)
        assert torch.equal(order, torch.arange(emitted.numel())), f"row {r}: clusters ascending, then positions"
    if budget == 37:
        assert (take.sum(1) == 37).all()  # the exact fill: a truncated boundary cluster in some row
        assert any(bool(((t > 0) & (t < t.max())).any()) for t in take)


def test_dispatch_and_errors():
    take = torch.zeros(1, 1, dtype=torch.int64)
    args = (torch.zeros(2, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), torch.zeros(1, dtype=torch.int64),
            take, torch.zeros(1, dtype=torch.int64), torch.ones(1, dtype=torch.int64), torch.zeros(1, dtype=torch.int64))
    with pytest.raises(ValueError, match="impl"):
        emit_members(*args, size=1, impl="cuda")
    with pytest.raises(ValueError, match="size"):
        emit_members(*args)
    assert emit_members(*args, size=3).shape == (3,)  # CPU tensors: the batched torch form


@pytest.mark.parametrize("impl", ["reference", "triton", "vectorized"])
def test_take_beyond_the_eligible_run_writes_only_eligible_members(impl):
    """A caller's overstated take never leaks window members or the next cluster's into the list."""
    indptr = torch.tensor([0, 10, 12])  # cluster 0: positions 0..9, cluster 1: 10, 11
    positions = torch.arange(12)
    take = torch.tensor([[6, 0]])
    lo, hi = torch.tensor([2]), torch.tensor([6])  # sinks below 2, the window from 6
    out = torch.full((8,), POISON, dtype=torch.int64, device=DEVICE if impl == "triton" else "cpu")
    args = [t.to(out.device) for t in (indptr, positions, torch.tensor([0]), take, lo, hi, torch.tensor([1]))]
    emit_members(*args, out=out, impl=impl)
    assert out.cpu().tolist() == [POISON, 2, 3, 4, 5, POISON, POISON, POISON]
