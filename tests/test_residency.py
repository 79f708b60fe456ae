"""`ClusterResidency`: bound, eviction rules, plan shape/bytes, prefetch accounting."""

from __future__ import annotations

import random

import pytest

from mosaic_sglang.offload.host_store import Extent
from mosaic_sglang.offload.residency import ClusterResidency, ResidencyOverflowError

BPT = 12  # bytes per token: any value; checks plan byte counts scale with it


def _clusters(seed, count=40):
    """Cluster id -> host extent of an odd size in 1..13, laid out back to back."""
    rng = random.Random(seed)
    out, start = {}, 0
    for cid in range(count):
        n = rng.choice([1, 2, 3, 5, 8, 13])
        out[cid] = Extent(start, n)
        start += n
    return out


def _pick(rng, clusters, budget):
    """A random selection whose tokens fit ``budget``."""
    ids, used = [], 0
    for cid in rng.sample(sorted(clusters), len(clusters)):
        if used + clusters[cid].length <= budget:
            ids.append(cid)
            used += clusters[cid].length
    return ids


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("prefetch", [False, True])
def test_random_steps_respect_bound_and_never_evict_the_selection(seed, prefetch):
    rng = random.Random(seed)
    clusters = _clusters(seed)
    layers, budget = 3, 37
    res = ClusterResidency(ClusterResidency.capacity_for(budget, 0.3), num_layers=layers, bytes_per_token=BPT)
    assert res.capacity == 49  # ceil(37 * 1.3)
    for _ in range(40):
        res.begin_step()
        for layer in range(layers):
            ids = _pick(rng, clusters, budget)
            exts = [clusters[c] for c in ids]
            before = set(res.resident_clusters(layer))
            acc = res.access(layer, ids, exts)
            res.check_integrity()
            assert res.resident_tokens(layer) <= res.capacity
            # Every selected cluster is resident now, nothing selected was evicted.
            assert set(ids) <= set(res.resident_clusters(layer))
            assert not set(acc.evicted.tolist()) & set(ids)
            assert set(acc.hits.tolist()) == set(ids) & before and set(acc.misses.tolist()) == set(ids) - before
            # One op per missed cluster; bytes exactly the missed clusters' size.
            plan = acc.plan
            assert plan.num_ops == len(acc.misses) and sorted(plan.cluster_ids.tolist()) == sorted(acc.misses.tolist())
            assert plan.num_bytes == BPT * sum(clusters[c].length for c in acc.misses.tolist())
            assert plan.src_start.tolist() == [clusters[c].start for c in plan.cluster_ids.tolist()]
            assert plan.src_start.tolist() == sorted(plan.src_start.tolist())  # host order
            assert acc.slots.numel() == sum(e.length for e in exts) == len(set(acc.slots.tolist()))
            for c in ids:  # slots point into the cluster's own slots, in host-extent order
                assert len(res.slots_of(layer, c)) == clusters[c].length
            if prefetch and layer + 1 < layers:
                held = set(res.resident_clusters(layer + 1))
                pf = res.prefetch(layer + 1, ids, exts)
                fetched = pf.cluster_ids.tolist()
                assert set(fetched) <= set(ids) - held and pf.num_ops == len(fetched)
                assert pf.num_bytes == BPT * sum(clusters[c].length for c in fetched)
                res.check_integrity()
    stats = res.stats
    assert stats.hits + stats.misses == stats.accesses and stats.demand_ops == stats.misses


def test_lru_with_frequency_tie_break():
    # Capacity 6, clusters of 2 tokens: three fit.
    res = ClusterResidency(6, num_layers=1, bytes_per_token=1)
    e = {c: Extent(2 * c, 2) for c in range(5)}
    res.begin_step()
    res.access(0, [0, 1, 2], [e[0], e[1], e[2]])
    res.begin_step()
    res.access(0, [1], [e[1]])  # 1 used twice; 0 and 2 last used at step 0
    res.begin_step()
    acc = res.access(0, [3], [e[3]])  # one victim among 0, 2 (same age, one use each): lowest id
    assert acc.evicted.tolist() == [0]
    res.begin_step()
    res.access(0, [2], [e[2]])  # 2 now fresher than 1
    res.begin_step()
    acc = res.access(0, [4, 2], [e[4], e[2]])  # victims: 1 (step 1) before 3 (step 2)
    assert acc.evicted.tolist() == [1] and acc.hits.tolist() == [2] and acc.misses.tolist() == [4]
    res.check_integrity()


def test_selection_larger_than_capacity_raises():
    res = ClusterResidency(10, num_layers=2, bytes_per_token=1)
    res.begin_step()
    with pytest.raises(ResidencyOverflowError, match=r"layer 1 selected 11 tokens in 2 clusters, capacity 10 .*residency_slack"):
        res.access(1, [0, 1], [Extent(0, 5), Extent(5, 6)])
    with pytest.raises(ValueError, match="distinct"):
        res.access(0, [3, 3], [Extent(0, 1), Extent(0, 1)])
    with pytest.raises(ValueError, match="one extent per cluster"):
        res.access(0, [3], [])


def test_prefetch_hit_rate_on_a_hand_made_case():
    e = {c: Extent(10 * c, 4) for c in range(8)}
    res = ClusterResidency(12, num_layers=3, bytes_per_token=1)  # three 4-token clusters per layer
    res.begin_step()
    a0 = res.access(0, [0, 1], [e[0], e[1]])  # layer 0: not counted in the prefetch hit rate
    pf = res.prefetch(1, [0, 1], [e[0], e[1]])
    assert pf.prefetch and pf.num_ops == 2 and pf.num_bytes == 8
    a1 = res.access(1, [1, 2], [e[1], e[2]])  # 1 prefetched (hit), 2 missed
    assert a1.hits.tolist() == [1] and a1.misses.tolist() == [2] and a1.plan.num_ops == 1
    pf = res.prefetch(2, [1, 2], [e[1], e[2]])
    a2 = res.access(2, [1, 2], [e[1], e[2]])  # both prefetched
    assert a2.hits.tolist() == [1, 2] and a2.plan.num_ops == 0
    s = res.stats
    assert (s.predicted_selected, s.predicted_hits) == (4, 3) and s.prefetch_hit_rate == 0.75
    assert s.prefetch_used == 3 and s.prefetch_ops == 4 and s.demand_ops == 3
    assert a0.misses.tolist() == [0, 1]
    # Layer 1 still holds the wrong prefetch (0); the next demand evicts it first, not 1 or 2.
    res.begin_step()
    acc = res.access(1, [3], [e[3]])
    assert acc.evicted.tolist() == [0]
    res.check_integrity()


def test_prefetch_never_displaces_the_last_working_set():
    e = {c: Extent(4 * c, 4) for c in range(6)}
    res = ClusterResidency(8, num_layers=2, bytes_per_token=1)  # two clusters per layer
    res.begin_step()
    res.access(1, [4, 5], [e[4], e[5]])
    res.begin_step()
    pf = res.prefetch(1, [0, 1], [e[0], e[1]])  # no room without evicting last step's set
    assert pf.num_ops == 0 and res.resident_clusters(1) == [4, 5]
    res.begin_step()  # two steps later, 4 and 5 are cold: prefetch may take their room
    pf = res.prefetch(1, [0], [e[0]])
    assert pf.num_ops == 1 and len(res.resident_clusters(1)) == 2
    res.check_integrity()


def test_drop_and_clear_free_every_slot():
    e = {c: Extent(3 * c, 3) for c in range(4)}
    res = ClusterResidency(9, num_layers=2, bytes_per_token=1)
    res.begin_step()
    for layer in range(2):
        res.access(layer, [0, 1, 2], [e[0], e[1], e[2]])
    res.drop([1])
    assert res.resident_clusters(0) == [0, 2] and res.resident_tokens(1) == 6
    # A cluster whose extent changed size (re-offloaded after a split) is refetched.
    acc = res.access(0, [0], [Extent(100, 2)])
    assert acc.misses.tolist() == [0] and acc.plan.num_tokens == 2
    res.check_integrity()
    res.clear()
    res.check_integrity()
    assert res.resident_tokens(0) == res.resident_tokens(1) == 0


def test_equal_recency_evicts_the_less_frequently_used():
    res = ClusterResidency(6, num_layers=1, bytes_per_token=1)
    e = {c: Extent(2 * c, 2) for c in range(4)}
    res.begin_step()
    res.access(0, [0], [e[0]])
    res.begin_step()
    res.access(0, [0, 1], [e[0], e[1]])  # same last step; 0 used twice, 1 once
    res.begin_step()
    acc = res.access(0, [2, 3], [e[2], e[3]])
    assert acc.evicted.tolist() == [1] and res.resident_clusters(0) == [0, 2, 3]


def test_plan_is_in_host_order_and_adjacent_extents_merge_into_runs():
    from mosaic_sglang.offload.host_store import Extent

    r = ClusterResidency(32, num_layers=1, bytes_per_token=2)
    r.begin_step()
    # clusters 5, 6, 7 back to back in the host store, 9 apart; asked in another order
    a = r.access(0, [9, 7, 5, 6], [Extent(40, 2), Extent(13, 4), Extent(10, 1), Extent(11, 2)])
    plan = a.plan
    assert plan.src_start.tolist() == [10, 11, 13, 40] and plan.cluster_ids.tolist() == [5, 6, 7, 9]
    assert (plan.num_ops, plan.num_runs) == (4, 2)
    assert plan.runs() == [(10, 7, 0), (40, 2, 7)]
    # the attention's slots still follow the asked order
    assert a.slots.tolist() == r.slots_of(0, 9) + r.slots_of(0, 7) + r.slots_of(0, 5) + r.slots_of(0, 6)
