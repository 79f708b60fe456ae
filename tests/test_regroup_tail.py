"""`MosaicConfig.regroup_tail` through the serving policy: when a request's prompt ends (its last prefill
chunk), its video's frames still online are regrouped (`ClusterIndex.regroup_tail`) and the question's
selection is dropped, so its first decode step selects against the coarse clusters; a chunk that does
not end the prompt, or the option off, changes nothing."""

from __future__ import annotations

import pytest
import torch

from mosaic_sglang import MosaicConfig
from mosaic_sglang.serving import ClusterAttendedSet, RequestLayout

L, H, D, GROUP = 2, 2, 8, 2


def test_the_tail_regroups_only_with_regrouping_on():
    assert MosaicConfig().regroups_tail  # the defaults regroup the tail
    assert not MosaicConfig(regroup_tail=True, regroup_tokens=0).regroups_tail  # nothing to regroup: no-op
    assert not MosaicConfig(regroup_tail=False, regroup_tokens=8).regroups_tail


def _question(tail: bool, prompt_done: bool, regroup_tokens: int = 8):
    """Index a 7-frame video (one request), then ask about it (a second request: the video cached, 5 text
    tokens, ``prompt_done``), then plan its first decode step. Returns (index, decode plan, regroups
    before the question, after it)."""
    g = torch.Generator().manual_seed(3)
    pool = torch.randn(L, 300, H, D, generator=g)
    cfg = MosaicConfig(budget=20, sink_tokens=2, recent_window=4, max_cluster_size=8, regroup_tokens=regroup_tokens,
                       regroup_frames=2, regroup_tail=tail)
    policy = ClusterAttendedSet(cfg, num_layers=L, num_kv_heads=H, head_dim=D, read_slot_keys=lambda s: pool[:, s])
    frames = torch.tensor([-1] * 3 + [f for f in range(7) for _ in range(9)] + [-1] * 5)
    slots = torch.arange(10, 10 + frames.numel())
    n = frames.numel()
    video = RequestLayout("v", 1, 0, n - 5, frames[: n - 5], slots[: n - 5])  # its prompt goes on: not done
    plan = policy.plan([video], False)
    for layer in range(L):
        policy.layer_kv(plan, layer, torch.randn(n - 5, H * GROUP, D, generator=g))
    policy.end_forward()
    index = policy.videos[policy._anchors[0]].index
    before = index.num_regroups
    question = RequestLayout("q", 2, n - 5, 5, frames, slots, prompt_done=prompt_done)
    plan = policy.plan([question], False)
    assert plan.select_due == (0,)  # the question's own chunk selects (select_in_prefill)
    for layer in range(L):
        policy.layer_kv(plan, layer, torch.randn(5, H * GROUP, D, generator=g))
    policy.end_forward()
    after = index.num_regroups
    decode = RequestLayout("q", 2, n, 1, torch.cat([frames, torch.tensor([-1])]), torch.cat([slots, torch.tensor([299])]))
    return index, policy.plan([decode], True), before, after


def test_prompt_end_regroups_the_tail_and_the_first_decode_step_selects_again():
    index, decode, before, after = _question(tail=True, prompt_done=True)
    assert after == before + 1 and index.settled_frames == 7  # the active frames were regrouped too
    assert all(bool(index.settled_clusters(g)[: index.cluster_counts[g]].all()) for g in range(len(index.cluster_counts)))
    index.check_integrity()
    assert decode.select_due == (0,)  # the question's selection was made before: chosen again


@pytest.mark.parametrize("tail, prompt_done, regroup_tokens", [(False, True, 8), (True, False, 8), (True, True, 0)])
def test_no_tail_regroup_without_the_option_or_before_the_prompt_ends(tail, prompt_done, regroup_tokens):
    index, decode, before, after = _question(tail=tail, prompt_done=prompt_done, regroup_tokens=regroup_tokens)
    assert after == before and index.settled_frames < 7
    assert decode.select_due == ()  # decode keeps the question's selection


def _policy(tail=True):
    g = torch.Generator().manual_seed(4)
    pool = torch.randn(L, 400, H, D, generator=g)
    cfg = MosaicConfig(budget=20, sink_tokens=2, recent_window=4, max_cluster_size=8, regroup_tokens=8,
                       regroup_frames=2, regroup_tail=tail)
    policy = ClusterAttendedSet(cfg, num_layers=L, num_kv_heads=H, head_dim=D, read_slot_keys=lambda s: pool[:, s])
    return policy, g


def _run(policy, g, layouts, is_decode=False):
    plan = policy.plan(layouts, is_decode)
    total = sum(x.extend_len for x in layouts)
    for layer in range(L):
        policy.layer_kv(plan, layer, torch.randn(total, H * GROUP, D, generator=g))
    policy.end_forward()
    return plan


def test_two_questions_on_one_video_in_one_forward_both_select_again():
    """The first prompt's end regroups the shared video's tail; the second's finds nothing left online,
    but its selection was made against the same old clusters: both are dropped."""
    policy, g = _policy()
    frames = torch.tensor([-1] * 3 + [f for f in range(7) for _ in range(9)] + [-1] * 5)
    slots = torch.arange(10, 10 + frames.numel())
    n = frames.numel()
    _run(policy, g, [RequestLayout("v", 1, 0, n - 5, frames[: n - 5], slots[: n - 5])])
    index = policy.videos[policy._anchors[0]].index
    questions = [RequestLayout(rid, row, n - 5, 5, frames, slots, prompt_done=True) for rid, row in (("a", 2), ("b", 3))]
    _run(policy, g, questions)
    assert index.settled_frames == 7
    step = [RequestLayout(q.rid, q.row, n, 1, torch.cat([frames, torch.tensor([-1])]),
                          torch.cat([slots, torch.tensor([300 + q.row])])) for q in questions]
    assert policy.plan(step, True).select_due == (0, 1)


def test_a_prompt_ends_once_even_when_a_mixed_forward_says_so_again(monkeypatch):
    """A decode row in a mixed (extend) forward reaches its unchunked length too (SGLang's orig_seq_lens grows
    with it): only the first end of a prompt regroups and drops the selection."""
    policy, g = _policy()
    frames = torch.tensor([-1] * 3 + [f for f in range(7) for _ in range(9)] + [-1] * 5)
    slots = torch.arange(10, 10 + frames.numel())
    n = frames.numel()
    _run(policy, g, [RequestLayout("q", 1, 0, n, frames, slots, prompt_done=True)])
    index = policy.videos[policy._anchors[0]].index
    assert index.settled_frames == 7
    decode = [RequestLayout("q", 1, n, 1, torch.cat([frames, torch.tensor([-1])]), torch.cat([slots, torch.tensor([299])]))]
    _run(policy, g, decode, is_decode=True)  # the first decode step selects against the regrouped tail

    def refuse():
        raise AssertionError("regroup_tail ran again for a prompt that had ended")

    monkeypatch.setattr(index, "regroup_tail", refuse)
    mixed = [RequestLayout("q", 1, n + 1, 1, torch.cat([frames, torch.tensor([-1, -1])]),
                           torch.cat([slots, torch.tensor([299, 298])]), prompt_done=True)]
    _run(policy, g, mixed)  # an extend forward with q's decode row in it: `refuse` would raise
    policy.release("q")  # a new request under that rid is a new prompt
    assert "q" not in policy._prompt_ended
