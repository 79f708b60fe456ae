"""ClusterAttendedSet without SGLang: a fake KV pool, hand-built request layouts.

Checks the serving rules: sharing one index across requests through the anchor slot, the attended-set
composition and budget, exact mode, divergence/eviction cutting the index, decode never splitting."""

from __future__ import annotations

import pytest
import torch

from mosaic_sglang import MosaicConfig
from mosaic_sglang.serving import ClusterAttendedSet
from mosaic_sglang.serving import RequestLayout

L, H, D, HQ = 2, 2, 8, 4
SLOTS = 400


@pytest.fixture
def pool():
    g = torch.Generator().manual_seed(0)
    # keys with frame structure: each 8-token frame shares a direction
    keys = torch.randn(L, SLOTS, H, D, generator=g) * 0.3
    keys += torch.randn(L, SLOTS // 8, 1, H, D, generator=g).repeat_interleave(8, 1).reshape(L, SLOTS, H, D)
    return keys


def _policy(pool, **options):
    cfg = MosaicConfig.from_dict({"sink_tokens": 2, "recent_window": 4, "max_cluster_size": 8, **options})
    return ClusterAttendedSet(cfg, num_layers=L, num_kv_heads=H, head_dim=D, read_slot_keys=lambda s: pool[:, s])


def _layout(rid, slots, frame_ids, prefix_len, extend_len):
    n = prefix_len + extend_len
    return RequestLayout(rid, 1, prefix_len, extend_len, torch.as_tensor(frame_ids[:n]), torch.as_tensor(slots[:n]))


def _video_prompt(num_frames=6, tokens_per_frame=8, text_before=3, text_after=5):
    frames = [-1] * text_before + [f for f in range(num_frames) for _ in range(tokens_per_frame)] + [-1] * text_after
    return torch.tensor(frames)


def _forward(policy, layouts, is_decode=False, seed=0):
    """Plan, run every layer with random queries, end; returns per request per layer the sorted positions."""
    g = torch.Generator().manual_seed(seed)
    plan = policy.plan(layouts, is_decode)
    out = [[None] * L for _ in layouts]
    for l in range(L):
        kv = policy.layer_kv(plan, l, torch.randn(int(plan.q_indptr[-1]), HQ, D, generator=g))
        for i in range(len(layouts)):
            positions = kv.kv_positions[kv.kv_indptr[i] : kv.kv_indptr[i + 1]]
            assert positions.unique().numel() == positions.numel(), "a position listed twice"
            out[i][l] = positions.sort().values
        assert plan.padded or bool((plan.kv_indptr == kv.kv_indptr).all())  # exact fill: one indptr for all layers
    policy.end_forward()
    return out


def test_first_question_is_dense_then_indexed_and_second_question_selects(pool):
    policy = _policy(pool, budget=16)
    frames = _video_prompt()
    slots = torch.arange(10, 10 + frames.numel())
    first = _layout("a", slots, frames, 0, frames.numel())
    (attended,) = _forward(policy, [first])
    assert all(torch.equal(p, torch.arange(frames.numel())) for p in attended)  # nothing indexed yet
    (video,) = policy.videos.values()
    assert video.index.num_tokens == 3 + 48  # the video span only, not the question after it
    video.index.check_integrity()

    # second question: same video slots cached, a new question computed
    question = torch.tensor([-1] * 7)
    frames2 = torch.cat([frames[:51], question])
    slots2 = torch.cat([slots[:51], torch.arange(300, 307)])
    second = _layout("b", slots2, frames2, 51, 7)
    (attended,) = _forward(policy, [second])
    assert len(policy.videos) == 1
    for positions in attended:
        visual = positions[(positions >= 3) & (positions < 51)]
        always = set(range(2)) | set(range(58 - 4, 58))
        assert len(set(visual.tolist()) - always) == 16  # exact fill: the budget, no more, no less
        assert positions.numel() == 16 + 2 + 1 + 7  # every layer the same length: sinks, text, budget, question
        assert set(range(51, 58)) <= set(positions.tolist()) and {0, 1, 2} <= set(positions.tolist())
    stats = policy.request_stats("b")
    assert stats.clusters == policy.videos[int(slots[3])].index.num_clusters > 1
    assert stats.attended_tokens == max(p.numel() for p in attended) < stats.context_tokens == 58


def test_full_budget_attends_everything(pool):
    policy = _policy(pool, budget=10_000)
    frames = _video_prompt()
    slots = torch.arange(10, 10 + frames.numel())
    _forward(policy, [_layout("a", slots, frames, 0, frames.numel())])
    second = _layout("b", slots, frames, frames.numel() - 1, 1)
    (attended,) = _forward(policy, [second])
    assert all(torch.equal(p, torch.arange(frames.numel())) for p in attended)


def _count_selections(monkeypatch):
    """Wrap the selection entry point the policy calls; returns the list of calls (one per layer scored)."""
    import mosaic_sglang.serving.cluster_policy as cluster_policy

    calls = []
    for name in ("select_layer_batch", "select_layer_into"):  # padded fills / the exact fill
        real = getattr(cluster_policy, name)

        def counted(indexes, layer_id, *args, real=real):
            calls.append(layer_id)
            return real(indexes, layer_id, *args)

        monkeypatch.setattr(cluster_policy, name, counted)
    return calls


def _question_then_decode(policy, steps, calls=None):
    """Index the video with request 'a', ask question 'b', then decode ``steps`` tokens of 'b'.

    Returns ``(question attended per layer, [decode attended per layer] per step)``; ``calls`` (from
    `_count_selections`) is cleared after the question, so it then holds the decode steps' selections."""
    frames = _video_prompt()
    slots = torch.arange(10, 10 + frames.numel())
    _forward(policy, [_layout("a", slots, frames, 0, frames.numel())])
    question = _forward(policy, [_layout("b", slots, frames, 51, frames.numel() - 51)])[0]
    if calls is not None:
        calls.clear()
    frames_d = torch.cat([frames, torch.full((steps,), -1)])
    slots_d = torch.cat([slots, torch.arange(390, 390 + steps)])
    decoded = []
    for step in range(steps):
        n = frames.numel() + step + 1
        decoded.append(_forward(policy, [_layout("b", slots_d, frames_d, n - 1, 1)], is_decode=True, seed=100 + step)[0])
    return question, decoded


def test_decode_never_runs_maintenance_and_keeps_the_question_selection(pool, monkeypatch):
    policy = _policy(pool, budget=16, join_threshold=0.05, split_threshold=0.05)
    calls = _count_selections(monkeypatch)
    frames = _video_prompt()
    slots = torch.arange(10, 10 + frames.numel())
    _forward(policy, [_layout("a", slots, frames, 0, frames.numel())])
    index = next(iter(policy.videos.values())).index
    calls.clear()
    selected = _forward(policy, [_layout("b", slots, frames, 51, frames.numel() - 51)])[0]
    assert calls == list(range(L))  # the question selected at every layer (positive control of the counter)

    def forbidden(*args, **kwargs):
        raise AssertionError("maintenance inside a decode step")

    monkeypatch.setattr(index, "maintain", forbidden)
    frames_d = torch.cat([frames, torch.tensor([-1, -1])])
    slots_d = torch.cat([slots, torch.tensor([390, 391])])
    for step in range(2):
        n = frames.numel() + step + 1
        (attended,) = _forward(policy, [_layout("b", slots_d, frames_d, n - 1, 1)], is_decode=True, seed=step)
        for l in range(L):  # the kept selection plus the new token (and the window moving with it)
            assert set(selected[l].tolist()) - set(range(n - 4, n)) <= set(attended[l].tolist())
    assert calls == list(range(L)), "reselect_every=0: decode must keep the question's selection, not select again"


def test_reselect_every_k_steps_selects_again_with_the_current_query(pool, monkeypatch):
    policy = _policy(pool, budget=16, reselect_every=2)
    calls = _count_selections(monkeypatch)
    _, decoded = _question_then_decode(policy, steps=4, calls=calls)
    assert calls == list(range(L)) * 2  # decode steps 1..4 select again at steps 2 and 4 (step % 2 == 0)
    assert all(p.numel() <= 16 + 2 + 4 + 8 + 4 for step in decoded for p in step)  # budget, sinks, window, text, new tokens


def test_decode_steps_reuse_the_attach_until_the_index_changes(pool, monkeypatch):
    """A decode step does not rescan its context to find its video (`VideoRegistry.attach`), unless the
    video's index changed since (here: another request's prefill appends to it)."""
    from mosaic_sglang.serving.videos import VideoRegistry

    policy = _policy(pool, budget=16)
    scans = []
    real = VideoRegistry._attach
    monkeypatch.setattr(VideoRegistry, "_attach", lambda self, req: scans.append(req.rid) or real(self, req))
    question, decoded = _question_then_decode(policy, steps=3)
    assert scans == ["a", "b"]  # the two prefills; b's decode steps reuse b's attach
    assert len(decoded) == 3
    frames = torch.cat([_video_prompt(), torch.full((3,), -1)])
    slots = torch.cat([torch.arange(10, 10 + frames.numel() - 3), torch.arange(390, 393)])
    scans.clear()
    _forward(policy, [_layout("b", slots, frames, frames.numel() - 1, 1)], is_decode=True)
    assert scans == []
    video = next(iter(policy.videos.values()))
    # the index changed (as another request's divergent prefix cuts it): the step attaches again, and
    # selects again (a selection kept from before the cut would list positions of the tail twice, which
    # `_forward` checks)
    video.index.truncate(video.index.num_tokens - 8)
    _forward(policy, [_layout("b", slots, frames, frames.numel() - 1, 1)], is_decode=True)
    assert scans == ["b"]
    scans.clear()
    policy.release("b")
    _forward(policy, [_layout("b", slots, frames, frames.numel() - 1, 1)], is_decode=True)
    assert scans == ["b"]  # forgotten on release


def test_dense_prefill_when_select_in_prefill_is_off(pool, monkeypatch):
    policy = _policy(pool, budget=16, select_in_prefill=False)
    calls = _count_selections(monkeypatch)
    question, decoded = _question_then_decode(policy, steps=1, calls=calls)
    assert all(torch.equal(p, torch.arange(56)) for p in question)  # prefill attends everything
    # the first decode step has no kept selection: it selects with its own query, then attends sparsely
    assert calls == list(range(L))
    assert all(p.numel() <= 16 + 2 + 4 + 8 + 1 < 57 for p in decoded[0])  # budget, sinks, window, text, itself


def test_per_layer_membership_selects_per_layer_through_the_policy(pool):
    policy = _policy(pool, budget=16, membership="per_layer")
    question, _ = _question_then_decode(policy, steps=1)
    index = next(iter(policy.videos.values())).index
    assert len(index.cluster_counts) == L and all(c > 1 for c in index.cluster_counts)
    index.check_integrity()
    always = {0, 1, 2} | set(range(51, 56))  # sinks + text before the video, the question (also the window)
    for positions in question:
        assert len(set(positions.tolist()) - always) == 16
    assert not torch.equal(question[0], question[1])  # each layer its own clusters and choice


def test_eviction_and_divergence_cut_the_index(pool):
    policy = _policy(pool, budget=16)
    frames = _video_prompt()
    slots = torch.arange(10, 10 + frames.numel())
    _forward(policy, [_layout("a", slots, frames, 0, frames.numel())])
    anchor = int(slots[3])
    index = policy.videos[anchor].index
    policy.on_slots_freed(slots[40:45])  # tail of the video evicted
    assert index.num_tokens == 40
    index.check_integrity()
    # a request re-computes from position 30 with new slots: the index is cut at 30, then re-grown
    slots_b = torch.cat([slots[:30], torch.arange(200, 200 + frames.numel() - 30)])
    _forward(policy, [_layout("b", slots_b, frames, 30, frames.numel() - 30)])
    assert policy.videos[anchor].index.num_tokens == 51
    assert torch.equal(policy.videos[anchor].slots[:51], slots_b[:51])
    policy.videos[anchor].index.check_integrity()
    policy.on_slots_freed(torch.tensor([anchor]))
    assert len(policy.videos) == 0


def test_release_drops_request_state(pool):
    policy = _policy(pool)
    frames = _video_prompt()
    slots = torch.arange(10, 10 + frames.numel())
    _forward(policy, [_layout("a", slots, frames, 0, frames.numel())])
    assert policy.request_stats("a").context_tokens == frames.numel()
    policy.release("a")
    assert policy.request_stats("a") is None and "a" not in policy.selections


def test_groups_to_move_keeps_cluster_order_and_drops_empty_clusters():
    from mosaic_sglang.offload.planner import groups_to_move as _groups_to_move

    indptr = torch.tensor([0, 3, 3, 5, 7])  # cluster 1 is empty
    members = torch.tensor([1, 4, 9, 2, 3, 5, 6])
    move = torch.tensor([True, False, True, False, False, True, True])
    groups = _groups_to_move(indptr, members, move)
    assert [g.tolist() for g in groups] == [[1, 9], [5, 6]]
    assert _groups_to_move(indptr, members, torch.zeros(7, dtype=torch.bool)) == []


def test_offload_moves_whole_clusters_and_counts_a_full_store(pool):
    # A host store too small for the whole video: the clusters that fit move (one extent each, tree
    # told through the offloader, slots re-encoded, the video re-keyed), the rest stay; one full event.
    from mosaic_sglang.offload import HostKVStore, HostTier

    class RecordingOffloader:
        def __init__(self):
            self.calls = []

        def offload(self, node_id, positions, host_rows):
            self.calls.append((node_id, positions.clone(), host_rows.clone()))

    host = HostTier(HostKVStore(20, num_layers=L, num_kv_heads=H, head_dim=D, dtype=torch.float32))
    cfg = MosaicConfig.from_dict({"sink_tokens": 2, "recent_window": 4, "max_cluster_size": 8, "budget": 16})
    policy = ClusterAttendedSet(cfg, num_layers=L, num_kv_heads=H, head_dim=D, read_slot_keys=lambda s: pool[:, s], host=host)
    frames = _video_prompt()
    slots = torch.arange(10, 10 + frames.numel())
    _forward(policy, [_layout("a", slots, frames, 0, frames.numel())])
    (video,) = policy.videos.values()
    indptr, members = video.index.cluster_members(0)
    sizes = (indptr[1:] - indptr[:-1]).tolist()
    offloader = RecordingOffloader()
    read_kv = lambda s: (pool[:, s], pool[:, s])
    moved = policy.offload_prefix(slots.clone(), "node", offloader, read_kv)
    fit, used = 0, 0
    for size in sizes:  # first-fit in cluster order until one does not fit
        if used + size > 20:
            break
        fit, used = fit + 1, used + size
    assert moved == used == host.used_tokens and 0 < moved < 48
    ((node, positions, rows),) = offloader.calls
    assert node == "node" and torch.equal(positions, members[: indptr[fit]].sort().values)
    assert torch.equal(video.slots[positions], -(rows + 1))  # host encoding in the video's slot map
    assert policy.counters.offloaded_tokens == moved and policy.counters.host_store_full_events == 1
    assert int(slots[3]) not in policy.videos or video.slots[3] > 0  # re-keyed when the anchor moved
    host.check_integrity()


def test_prefix_dedup_remaps_the_index_instead_of_losing_it(pool):
    # Two requests in one batch share the text before the video; the tree keeps the first one's slots and
    # re-points the second one's row (its own copies are freed). The second video's index must follow.
    policy = _policy(pool, budget=16)
    frames = _video_prompt()
    slots = torch.arange(100, 100 + frames.numel())
    _forward(policy, [_layout("b", slots, frames, 0, frames.numel())])
    anchor = int(slots[3])
    policy.on_slots_remapped(slots[:3].clone(), torch.tensor([1, 2, 3]))  # the shared text prefix
    repointed = torch.cat([torch.tensor([1, 2, 3]), slots[3:]])
    question = _layout("b2", repointed, frames, frames.numel() - 1, 1)
    (attended,) = _forward(policy, [question], is_decode=True)
    video = policy.videos[anchor]
    assert video.index.num_tokens == 51 and torch.equal(video.slots[:3], torch.tensor([1, 2, 3]))
    assert all(p.numel() < frames.numel() for p in attended)  # still selecting, not dense
    # the same video prefilled twice: when the second copy is re-pointed onto the first, one index remains
    other = torch.arange(200, 200 + frames.numel())
    _forward(policy, [_layout("c", other, frames, 0, frames.numel())])
    assert len(policy.videos) == 2
    policy.on_slots_remapped(other[:51].clone(), repointed[:51].clone())
    assert list(policy.videos) == [anchor]


def test_full_budget_decode_keeps_everything_while_the_window_moves(pool):
    # The recent window overlaps the video span (few text tokens after it): positions that leave the
    # window during decode must stay attended (at full budget every step attends the whole context).
    policy = _policy(pool, budget=10_000, recent_window=12)
    frames = _video_prompt(text_after=2)
    slots = torch.arange(10, 10 + frames.numel() + 6)
    n = frames.numel()
    frames_d = torch.cat([frames, torch.full((6,), -1)])
    _forward(policy, [_layout("a", slots, frames_d, 0, n)])
    for step in range(6):
        (attended,) = _forward(policy, [_layout("a", slots, frames_d, n + step, 1)], is_decode=True, seed=step)
        assert all(torch.equal(p, torch.arange(n + step + 1)) for p in attended), step


def test_whole_fill_serves_whole_clusters_within_the_budget(pool):
    # fill='whole': lists may be shorter than the planned size (padding dropped per layer), never longer
    policy = _policy(pool, budget=16, fill="whole", selection_heads="shared")  # per-head lists need exact
    question, decoded = _question_then_decode(policy, steps=2)
    video = next(iter(policy.videos.values()))
    always = {0, 1, 2} | set(range(51, 56))
    for positions in question + decoded[-1]:
        extra = set(positions.tolist()) - always - set(range(56, 58))
        assert 0 < len(extra) <= 16
        assign = video.index._assign[0]
        for c in {int(assign[p]) for p in extra}:  # every chosen cluster is attended whole
            members = set((assign == c).nonzero().flatten().tolist())
            assert members <= set(positions.tolist()), c


def test_mass_mode_serves_at_most_the_budget_and_counts_what_it_attends(pool):
    # budget_mode='mass': lists padded to the budget, each layer takes what reaches the target; decode
    # keeps the question's lists; the request's attended_tokens is the longest list actually attended
    policy = _policy(pool, budget=24, budget_mode="mass", mass_target=0.5)
    question, decoded = _question_then_decode(policy, steps=2)
    always = {0, 1, 2} | set(range(51, 56))
    extra = [set(p.tolist()) - always - set(range(56, 58)) for p in question]
    assert all(0 < len(e) <= 24 for e in extra)
    fixed = _policy(pool, budget=24)
    fixed_question, _ = _question_then_decode(fixed, steps=1)
    assert sum(len(p) for p in question) < sum(len(p) for p in fixed_question)  # the target needs fewer
    for step, lists in enumerate(decoded):  # the kept selection, plus the decoded tokens
        assert all(set(q.tolist()) | set(range(56, 57 + step + 1)) >= set(d.tolist()) >= set(q.tolist())
                   for q, d in zip(question, lists))
    stats = policy.request_stats("b")
    assert stats.attended_tokens == max(len(p) for p in decoded[-1])
    asked = _policy(pool, budget=24, budget_mode="mass", mass_target=0.5)
    question, _ = _question_then_decode(asked, steps=0)
    assert asked.request_stats("b").attended_tokens == max(len(p) for p in question) < 24 + 10


def test_the_scoring_reads_the_plans_always_part_causally(pool):
    """With ``share_of_total`` the policy gives the scoring, per due request, the log-mass of what the
    question attends anyway: the plan's always part read through the layer's key reader — every position
    before the question, and of the question's own tokens those up to each query within its recent window
    (4 here, so the 7-token question's band cuts)."""
    import math

    from mosaic_sglang.clusters import select as selection

    policy = _policy(pool, budget=16)
    frames = _video_prompt()
    slots = torch.arange(10, 10 + frames.numel())
    _forward(policy, [_layout("a", slots, frames, 0, frames.numel())])  # indexes the video
    frames2 = torch.cat([frames[:51], torch.tensor([-1] * 7)])
    slots2 = torch.cat([slots[:51], torch.arange(300, 307)])
    plan = policy.plan([_layout("b", slots2, frames2, 51, 7)], False)
    assert plan.select_due == (0,)
    seen, given = [], []
    real = selection.choose_clusters

    def spy(views, layers, queries, seq_lens=None, always_lses=None):
        given.append(always_lses[0])
        return real(views, layers, queries, seq_lens, always_lses)

    g = torch.Generator().manual_seed(3)
    for layer in range(L):
        q = torch.randn(7, HQ, D, generator=g)

        def read(requests, positions, layer=layer):
            assert list(requests) == [0]
            seen.append(positions[0].clone())
            return [pool[layer, slots2[p]] for p in positions]

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(selection, "choose_clusters", spy)
            policy.layer_kv(plan, layer, q, read)
        always = torch.tensor([0, 1, 2] + list(range(51, 58)))  # sinks + text, the question (its window too)
        assert sorted(seen[-1].tolist()) == always.tolist()
        keys = pool[layer, slots2[always]]  # [M, H, D]
        want = torch.empty(H, 7 * (HQ // H))
        for h in range(H):
            for t in range(7):
                for g_ in range(HQ // H):
                    logits = keys[:, h] @ q[t, h * (HQ // H) + g_] / math.sqrt(D)
                    # earlier positions all; the question's own tokens up to t, within its last 4 (the window)
                    sees = (always < 51) | ((always <= 51 + t) & (always > 51 + t - 4))
                    want[h, t * (HQ // H) + g_] = torch.logsumexp(logits[sees], 0)
        torch.testing.assert_close(given[-1][0], want, rtol=1e-5, atol=1e-5)
    policy.end_forward()
