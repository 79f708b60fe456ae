"""`assign_tokens` (K6) Triton kernel vs its pure-torch reference, and `ClusterIndex` ingest through each.

Shapes are odd on purpose: one token, 63 tokens (one padded 64-row block), no candidate, one, 130 (three
64-candidate blocks), F = 60 (a padded feature slice) and 256; scenarios: mixed admission, every
candidate full, none admitting, exact ties. fp32 and fp16 on the interpreter, bf16 on a GPU only (the
interpreter's bf16 `tl.dot` is broken). Outputs are poisoned (best -7, d2 NaN) so an unwritten token fails.

Exactness. Both sides compute in fp32 from the same (upcast) values; they differ only by summation
order. So: (1) the join threshold is placed in the widest gap of the fp64 relative spreads-after-join
near the wanted admission share, and the test asserts the gap is far wider than rounding — no
(token, candidate) admission can flip; (2) d² binds at ``|Δd²| <= 2e-6 · (|x|² + |c|²)`` (measured
fp32 worst ≈ 3e-7; products of inputs rounded to TF32 reach ≈ 1e-4, so a TF32 ``tl.dot`` fails on a
GPU — the interpreter computes fp32 whatever the precision flag); (3) ``best`` is
exact, except where the two choices' fp64 d² lie within that rounding of each other (a near tie: both
must admit). The "ties" scenario uses small integer features, where every fp32 step is exact, so there
``best`` and d² must be bitwise equal and exact ties must go to the lowest candidate index.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from cluster_trace import video_stream  # tests/ is on the path (its conftest.py)
from kernel_support import DEVICE
from mosaic_sglang import ClusterIndex, MosaicConfig
from mosaic_sglang.kernels.assign_tokens import admit_by_capacity, assign_tokens, assign_tokens_reference

D2_TOL = 2e-6  # of |x|² + |c|²; see the module docstring
CAP, PAIRS = 9, 4
# (tokens n, candidates A, features F)
SHAPES = [(1, 1, 60), (1, 130, 256), (63, 1, 60), (63, 130, 60), (63, 130, 256), (17, 0, 60)]
SCENARIOS = ["mixed", "all_full", "none_admit", "ties"]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add contention on a loaded 2-core box (the index's
    ``index_add_`` took most of the trace test's time with 2 threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _after64(x, c, spread, size, num_pairs):
    """fp64 truth: ``d² [.., n, A]`` and relative spread after the join ``[.., n, A]``."""
    d2 = (x.double()[..., :, None, :] - c.double()[..., None, :, :]).square().sum(-1)
    s = size.double()[..., None, :]
    return d2, (s * spread.double()[..., None, :] + s / (s + 1) * d2) / (s + 1) / num_pairs


def _threshold_in_gap(after, target):
    """A threshold in the widest gap of the values ``after`` from ``target`` (one of them) to 1.5·``target``,
    and the gap's half-width (so no value lies within rounding of it)."""
    v = torch.cat([after.flatten().sort().values, 3 * after.max().reshape(1) + 1])
    lo = int(torch.searchsorted(v, target))
    hi = min(int(torch.searchsorted(v, 1.5 * target)) + 1, v.numel() - 1)
    gaps = v[lo + 1 : hi + 1] - v[lo:hi]
    k = int(gaps.argmax())
    return float(v[lo + k] + gaps[k] / 2), float(gaps[k] / 2)


def _inputs(shape, scenario, dtype, groups=None, seed=0):
    """Seeded CPU inputs; returns ``(x, c, spread, size, join_threshold)``. ``groups``: a leading G dim."""
    n, a, f = shape
    gen = torch.Generator().manual_seed(seed * 7919 + n * 1000 + a * 10 + f)
    lead = () if groups is None else (groups,)
    if scenario == "ties":  # small integers: every fp32 product and sum is exact
        x = torch.randint(-2, 3, (*lead, n, f), generator=gen).float()
        copy_of = torch.randint(0, 5, (a,), generator=gen)  # 5 distinct candidates, copied: exact ties
        c = torch.randint(-2, 3, (*lead, 5, f), generator=gen).float()[..., copy_of, :]
        spread = torch.randint(0, 3 * f, (*lead, 5), generator=gen).float()[..., copy_of]
        size = torch.randint(1, CAP, (*lead, 5), generator=gen)[..., copy_of]
    else:
        # token norms vary (x2 either way), so far tokens find no candidate while near ones find several
        x = torch.randn(*lead, n, f, generator=gen) * torch.exp2(torch.rand(*lead, n, 1, generator=gen) * 2 - 1)
        c = torch.randn(*lead, a, f, generator=gen) * 0.5
        spread = torch.rand(*lead, a, generator=gen) * f
        size = torch.randint(1, CAP, (*lead, a), generator=gen)
    if scenario == "all_full":
        size = CAP + torch.randint(0, 2, (*lead, a), generator=gen)  # at the cap or past it (marked)
    elif a > 2:
        size[..., 1] = CAP  # one full candidate mixed in
    x, c = x.to(dtype), c.to(dtype)
    _, after = _after64(x, c, spread, size, PAIRS)
    if scenario == "all_full":
        return x, c, spread, size, 1e9
    if scenario == "none_admit":
        return x, c, spread, size, float(after.min()) / 2 if after.numel() else 1.0
    if not after.numel():
        return x, c, spread, size, 1.0
    # target: the median token's nearest admissible spread, so about half the tokens find a candidate
    target = after.masked_fill(~(size < CAP)[..., None, :], float("inf")).amin(-1).median()
    thr, half_gap = _threshold_in_gap(after, float(target))
    scale = float(x.float().square().sum(-1).max()) + (float(c.float().square().sum(-1).max()) if a else 0.0)
    assert half_gap > 20 * D2_TOL * scale / PAIRS, f"threshold too close to a pair: {half_gap=}, {scale=}"
    return x, c, spread, size, thr


def _run(x, c, spread, size, thr, impl):
    """One call into poisoned buffers on DEVICE (Triton) or the CPU (reference); results on the CPU."""
    dev = DEVICE if impl == "triton" else "cpu"
    tokens = tuple(x.shape[:-1])
    out = (torch.full(tokens, -7, dtype=torch.int64, device=dev), torch.full(tokens, float("nan"), device=dev))
    got = assign_tokens(x.to(dev), c.to(dev), spread.to(dev), size.to(dev), num_pairs=PAIRS, join_threshold=thr,
                        max_cluster_size=CAP, out=out, impl=impl)
    assert got.best.data_ptr() == out[0].data_ptr() and got.d2.data_ptr() == out[1].data_ptr()
    assert bool((got.best >= -1).all()) and not bool(got.d2.isnan().any()), "a token was not written"
    return got.best.cpu(), got.d2.cpu()


def _assert_same_choice(got, want, x, c, spread, size, thr, exact=False):
    """The module docstring's rule; returns the number of near ties excused."""
    (best, d2), (want_best, want_d2) = got, want
    found = want_best >= 0
    assert torch.equal(best >= 0, found) and bool((d2[~found] == float("inf")).all())
    if exact or not bool(found.any()):
        assert torch.equal(best, want_best) and torch.equal(d2, want_d2)
        return 0
    d2_64, after = _after64(x, c, spread, size, PAIRS)
    xs, cs = x.float().square().sum(-1), c.float().square().sum(-1)
    pick = want_best.clamp(min=0)
    scale = xs + cs.gather(-1, pick)  # [.., n]
    assert bool(((d2 - want_d2).abs() <= D2_TOL * scale)[found].all()), "d2 beyond fp32 rounding"
    differ = best != want_best
    if bool(differ.any()):  # near ties only: both admit, fp64 distances within rounding
        got_pick = best.clamp(min=0)
        admits = (after <= thr) & (size < CAP)[..., None, :]
        assert bool(admits.gather(-1, got_pick[..., None])[..., 0][differ].all())
        gap = (d2_64.gather(-1, got_pick[..., None]) - d2_64.gather(-1, pick[..., None]))[..., 0].abs()
        assert bool((gap <= 2 * D2_TOL * scale)[differ].all()), "best differs beyond a near tie"
    return int(differ.sum())


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"N{n}-A{a}-F{f}" for n, a, f in SHAPES])
def test_triton_equals_reference(shape, scenario, dtype_name):
    x, c, spread, size, thr = _inputs(shape, scenario, DTYPES[dtype_name])
    want = _run(x, c, spread, size, thr, "reference")
    got = _run(x, c, spread, size, thr, "triton")
    _assert_same_choice(got, want, x, c, spread, size, thr, exact=scenario == "ties")
    found = want[0] >= 0
    if scenario in ("all_full", "none_admit") or shape[1] == 0:
        assert not bool(found.any())
    elif scenario == "mixed" and shape[0] > 1:
        assert 0 < int(found.sum()) < shape[0], "mixed: some tokens should find a candidate, some not"


def test_ties_go_to_the_lowest_index():
    """A plain loop over candidates with a strict ``<`` (lowest index wins) against the reference, on
    integer features where the 130 centroids are copies of 5 (exact ties, within and across blocks)."""
    x, c, spread, size, thr = _inputs((63, 130, 60), "ties", torch.float32)
    want_best, want_d2 = _run(x, c, spread, size, thr, "reference")
    d2_64, after = _after64(x, c, spread, size, PAIRS)
    tied = 0
    for i in range(x.shape[0]):
        best, best_d2 = -1, float("inf")
        for a in range(c.shape[0]):
            if size[a] < CAP and after[i, a] <= thr and d2_64[i, a] < best_d2:
                best, best_d2 = a, float(d2_64[i, a])
        assert int(want_best[i]) == best and float(want_d2[i]) == best_d2
        admitted = (after[i] <= thr) & (size < CAP)
        tied += int(((d2_64[i] == best_d2) & admitted).sum()) > 1
    assert tied > 0, "the case should contain exact ties"
    assert _run(x, c, spread, size, thr, "triton")[0].equal(want_best)


def test_groups_and_strided_views():
    """``[G, n, F]`` groups equal G separate calls; the launcher reads every stride (no copies)."""
    x, c, spread, size, thr = _inputs((21, 70, 40), "mixed", torch.float32, groups=3, seed=1)
    want = _run(x, c, spread, size, thr, "reference")
    for g in range(3):
        one = _run(x[g], c[g], spread[g], size[g], thr, "reference")
        assert torch.equal(one[0], want[0][g]) and torch.equal(one[1], want[1][g])
    wide = torch.randn(3, 70, 50)
    wide[..., 5:45] = c
    x_t = x.transpose(1, 2).contiguous().transpose(1, 2)  # F-major strides
    got = _run(x_t, wide[..., 5:45], spread, size.int(), thr, "triton")
    _assert_same_choice(got, want, x, c, spread, size, thr)


def _capacity_loop(best, d2, size, pending):
    """Plain loop: per cluster, its joiners sorted by (d², token), the first ``CAP - size`` kept."""
    keep = torch.zeros_like(pending)
    for a in range(size.numel()):
        joiners = [i for i in range(best.numel()) if pending[i] and best[i] == a]
        joiners.sort(key=lambda i: (float(d2[i]), i))
        for i in joiners[: max(CAP - int(size[a]), 0)]:
            keep[i] = True
    return keep


def test_admit_by_capacity_matches_a_plain_loop():
    gen = torch.Generator().manual_seed(3)
    for n, a in [(1, 1), (40, 3), (63, 7)]:
        best = torch.randint(-1, a, (n,), generator=gen)
        d2 = torch.randint(0, 4, (n,), generator=gen).float()  # many ties in d²
        d2[best < 0] = float("inf")
        size = torch.randint(0, CAP + 2, (a,), generator=gen)  # some past the cap: room < 0
        pending = torch.rand(n, generator=gen) < 0.8
        want = _capacity_loop(best, d2, size, pending)
        assert torch.equal(admit_by_capacity(best, d2, size, CAP, pending=pending), want)
        both = admit_by_capacity(torch.stack([best, best]), torch.stack([d2, d2]), torch.stack([size, size]), CAP,
                                 pending=torch.stack([pending, pending]))
        assert torch.equal(both, torch.stack([want, want]))  # groups do not share capacity
    assert not bool(admit_by_capacity(torch.full((3,), -1), torch.full((3,), float("inf")),
                                      torch.zeros(0, dtype=torch.int64), CAP).any())


@pytest.mark.parametrize("membership", ["shared", "per_layer"])
def test_cluster_index_ingest_through_the_triton_kernel_equals_the_reference(membership, monkeypatch):
    """`ClusterIndex._join` runs K6 (`index.ASSIGN_IMPL`: by device, or forced): a real small trace ingested
    with the Triton kernel builds the same index as with the torch reference — every round's choices
    (checked per round on the index's own inputs, `_cluster_stats` and the active list) and the final
    memberships, cluster counts and integrity."""
    import mosaic_sglang.clusters.index as index_module

    layers, heads, dim = 3, 2, 12
    cfg = MosaicConfig(budget=40, sink_tokens=3, recent_window=7, max_cluster_size=CAP, join_threshold=0.3,
                       split_threshold=0.45, membership=membership)
    keys, frame_ids, _ = video_stream(num_layers=layers, num_kv_heads=heads, head_dim=dim, num_frames=5,
                                      tokens_per_frame=63)
    num_pairs = (layers if membership == "shared" else 1) * heads
    built, seen = {}, {"rounds": 0, "joined": 0, "capped": 0, "triton_calls": 0}
    triton_module = importlib.import_module("mosaic_sglang.kernels.assign_tokens.triton")  # the package exports
    # a function of the same name, so `import ... as` would resolve to it

    real_triton = triton_module.assign_tokens_triton

    def counted_triton(*args, **kwargs):
        seen["triton_calls"] += 1
        return real_triton(*args, **kwargs)

    monkeypatch.setattr(triton_module, "assign_tokens_triton", counted_triton)
    for impl in ("reference", "triton"):
        monkeypatch.setattr(index_module, "ASSIGN_IMPL", impl)
        index = ClusterIndex(cfg, num_layers=layers, num_kv_heads=heads, head_dim=dim)
        if impl == "triton":
            original = index._join

            def checked_join(x, pending, positions, keys_, frame_ord, mean, inv_std, index=index, original=original):
                ids = index._active
                centre, spread, size = index._cluster_stats(ids.clamp(min=0), mean, inv_std)
                size = torch.where(ids >= 0, size.long(), CAP)
                kw = dict(num_pairs=num_pairs, join_threshold=cfg.join_threshold, max_cluster_size=CAP)
                best, d2 = assign_tokens_reference(x, centre, spread, size, **kw)
                got = assign_tokens(x, centre, spread, size, impl="triton", **kw)
                assert torch.equal(got.best, best)  # exact: no choice of this trace sits within rounding
                found = best >= 0
                scale = x.square().sum(-1) + centre.square().sum(-1).gather(-1, best.clamp(min=0))
                assert bool(((got.d2 - d2).abs() <= D2_TOL * scale)[found].all())
                assert torch.equal(got.d2[~found], d2[~found])
                keep = admit_by_capacity(best, d2, size, CAP, pending=pending)
                seen["rounds"] += 1
                seen["joined"] += int(keep.sum())
                seen["capped"] += int((pending & (best >= 0) & ~keep).sum())
                return original(x, pending, positions, keys_, frame_ord, mean, inv_std)

            index._join = checked_join  # instance attribute: shadows the method for this index only
        index.append(keys, frame_ids)
        index.check_integrity()
        built[impl] = index
    reference, triton = built["reference"], built["triton"]
    assert reference.cluster_counts == triton.cluster_counts
    assert torch.equal(reference._assign[:, : reference.num_tokens], triton._assign[:, : triton.num_tokens])
    assert seen["rounds"] >= 5 and seen["joined"] > 100 and seen["capped"] > 0, seen  # the cap step bites
    assert seen["triton_calls"] == 2 * seen["rounds"], seen  # each round: the check's call and the index's own


def test_bad_arguments_raise_value_error():
    x, c, spread, size, thr = _inputs((5, 7, 16), "mixed", torch.float32)
    kw = dict(num_pairs=PAIRS, join_threshold=thr, max_cluster_size=CAP)
    with pytest.raises(ValueError, match="impl"):
        assign_tokens(x, c, spread, size, impl="cuda", **kw)
    for impl in ("triton", "reference"):
        with pytest.raises(ValueError, match="centroids"):
            assign_tokens(x, c[:, :15], spread, size, impl=impl, **kw)
        with pytest.raises(ValueError, match="size"):
            assign_tokens(x, c, spread, size.float(), impl=impl, **kw)
        with pytest.raises(ValueError, match="num_pairs"):
            assign_tokens(x, c, spread, size, impl=impl, **{**kw, "num_pairs": 0})
        with pytest.raises(ValueError, match="out"):
            assign_tokens(x, c, spread, size, impl=impl, out=(torch.empty(5, dtype=torch.int32), torch.empty(5)), **kw)
    empty = assign_tokens(x[:0], c, spread, size, impl="triton", **kw)
    assert empty.best.shape == (0,) and empty.d2.dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 tl.dot is broken in the interpreter: GPU only")
@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"N{n}-A{a}-F{f}" for n, a, f in SHAPES])
def test_triton_equals_reference_bf16(shape, scenario):
    x, c, spread, size, thr = _inputs(shape, scenario, torch.bfloat16)
    want = _run(x, c, spread, size, thr, "reference")
    _assert_same_choice(_run(x, c, spread, size, thr, "triton"), want, x, c, spread, size, thr,
                        exact=scenario == "ties")
