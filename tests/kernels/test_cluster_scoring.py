"""`cluster_scores` Triton kernels vs the plain-loop reference vs the serving path's `score_clusters`, for
every rule × reduce, on seeded odd shapes: one query token and five, D = 60, one cluster, clusters over
several blocks, GQA groups 1 / 4 / 7, costs 0 mixed in, an all-padding row, negative spreads (clamped),
a per-row ``num_clusters``. fp32 and fp16 on the interpreter; bf16 on a GPU only (the interpreter's bf16
`tl.dot` is broken). Outputs are poisoned with NaN first, so an entry the kernel forgot to write fails.

Tolerances are relative to the largest finite score of the case (a mean of logits can cancel to near
zero, where a purely relative bound means nothing); inputs are upcast on load, so fp16 inputs hold the
fp32 bound: both sides compute in fp32 from the same values. A TF32 or fp16 ``tl.dot`` fails it (~1e-3).
"""

from __future__ import annotations

import pytest
import torch

from kernel_support import DEVICE
from mosaic_sglang.clusters.scoring import cluster_log_mass, score_clusters
from mosaic_sglang.kernels.cluster_scoring import cluster_scores, cluster_scores_reference

TOL = {torch.float32: 1e-5, torch.float16: 1e-5, torch.bfloat16: 2e-5}
RULES = ["centroid", "centroid_radius", "size_weighted"]
REDUCES = ["mean", "max"]

# (rows, query tokens, num_qo_heads, num_kv_heads, head dim, clusters)
CASES = [
    (3, 1, 4, 4, 60, 63),  # group 1, a single query token
    (3, 5, 28, 4, 60, 63),  # group 7: 35 query vectors per KV head, more than one 32-vector block
    (2, 5, 8, 2, 32, 1),  # one cluster, group 4
    (2, 1, 8, 2, 64, 130),  # clusters over three 64-cluster blocks
]


def _id(case):
    r, tq, hq, hkv, d, c = case
    return f"R{r}-T{tq}-Hq{hq}-Hkv{hkv}-D{d}-C{c}"


def _inputs(case, dtype, seed=0):
    """Seeded inputs on the CPU: queries / centroids / spreads in ``dtype``, costs int64."""
    rows, tq, hq, hkv, d, c = case
    gen = torch.Generator().manual_seed(seed * 7919 + rows * 1000 + c)
    queries = torch.randn(rows, tq, hq, d, generator=gen).to(dtype)
    centroids = torch.randn(rows, c, hkv, d, generator=gen).to(dtype)
    spreads = ((torch.rand(rows, c, hkv, generator=gen) - 0.1) * 2 * d).to(dtype)  # some negative: clamped to 0
    costs = torch.randint(1, 9, (rows, c), generator=gen)
    costs[torch.rand(rows, c, generator=gen) < 0.2] = 0  # padded / already-attended clusters
    costs[:, 0] = 5  # every row's first cluster is live (the one-cluster case included) ...
    if rows >= 3:
        costs[1] = 0  # ... but for a middle row of padding only
    return queries, centroids, spreads, costs


def _assert_scores_close(got, want, dtype):
    """Same ``-inf`` pattern, finite scores within the dtype's tolerance of the largest finite score."""
    finite = torch.isfinite(want)
    assert torch.equal(torch.isfinite(got), finite) and bool((got[~finite] == float("-inf")).all())
    if bool(finite.any()):
        tol = TOL[dtype]
        torch.testing.assert_close(got[finite], want[finite], rtol=tol, atol=tol * float(want[finite].abs().max()))


def _serving_scores(queries, centroids, spreads, costs, rule, reduce):
    """`score_clusters` wants fp32 summaries (it upcasts the queries itself)."""
    return score_clusters(queries, centroids.float(), spreads.float(), costs, rule=rule, reduce=reduce)


def _run_triton(queries, centroids, spreads, costs, rule, reduce, num_clusters=None):
    """The Triton path on DEVICE into a NaN-poisoned buffer; returns the result on the CPU."""
    out = torch.full(tuple(costs.shape), float("nan"), dtype=torch.float32, device=DEVICE)
    got = cluster_scores(queries.to(DEVICE), centroids.to(DEVICE), spreads.to(DEVICE), costs.to(DEVICE),
                         rule=rule, reduce=reduce, impl="triton", out=out,
                         num_clusters=None if num_clusters is None else num_clusters.to(DEVICE))
    assert got.data_ptr() == out.data_ptr() and not bool(torch.isnan(got).any())
    return got.cpu()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_triton_equals_reference_and_serving(case, rule, reduce, dtype):
    queries, centroids, spreads, costs = _inputs(case, dtype)
    want = cluster_scores_reference(queries, centroids, spreads, costs, rule=rule, reduce=reduce)
    _assert_scores_close(_serving_scores(queries, centroids, spreads, costs, rule, reduce), want, torch.float32)
    _assert_scores_close(_run_triton(queries, centroids, spreads, costs, rule, reduce), want, dtype)


@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("rule", RULES)
def test_num_clusters_is_padding(rule, reduce):
    # 70 cuts the second 64-cluster block mid-way (the third is skipped), 0 pads a whole row, 200 > C
    case = (3, 2, 8, 2, 32, 130)
    queries, centroids, spreads, costs = _inputs(case, torch.float32, seed=1)
    num_clusters = torch.tensor([70, 0, 200])
    centroids[0, 70:] = float("nan")  # padding past num_clusters is never read
    padded_costs = torch.where(torch.arange(case[-1]) < num_clusters[:, None], costs, 0)
    want = cluster_scores_reference(queries, centroids, spreads, costs, rule=rule, reduce=reduce,
                                    num_clusters=num_clusters)
    assert bool((want[0, 70:] == float("-inf")).all()) and bool((want[1] == float("-inf")).all())
    _assert_scores_close(want, cluster_scores_reference(queries, centroids.nan_to_num(), spreads, padded_costs,
                                                        rule=rule, reduce=reduce), torch.float32)
    _assert_scores_close(_run_triton(queries, centroids, spreads, costs, rule, reduce, num_clusters), want,
                         torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_reference_equals_score_clusters(dtype):
    queries, centroids, spreads, costs = _inputs((3, 5, 28, 4, 60, 63), dtype, seed=2)
    for rule in RULES:
        for reduce in REDUCES:
            want = _serving_scores(queries, centroids, spreads, costs, rule, reduce)
            got = cluster_scores(queries, centroids, spreads, costs, rule=rule, reduce=reduce)  # CPU: reference
            _assert_scores_close(got, want, torch.float32)


@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("case", [CASES[1], CASES[3]], ids=[_id(CASES[1]), _id(CASES[3])])
def test_share_of_the_total_mass_with_an_always_part(case, reduce):
    """``always_lse`` (the always-attended part's log-mass per query vector) joins the softmax's
    denominator: the three implementations agree, some queries' always part dominates, one sees none."""
    queries, centroids, spreads, costs = _inputs(case, torch.float32, seed=5)
    rows, tq, hq, hkv = queries.shape[0], queries.shape[1], queries.shape[2], centroids.shape[2]
    gen = torch.Generator().manual_seed(6)
    always = torch.randn(rows, hkv, tq * (hq // hkv), generator=gen) * 4 + 2  # some far above the clusters' mass
    always[0, 0, 0] = float("-inf")  # a query that sees no always-attended key
    want = cluster_scores_reference(queries, centroids, spreads, costs, rule="size_weighted", reduce=reduce,
                                    always_lse=always)
    without = cluster_scores_reference(queries, centroids, spreads, costs, rule="size_weighted", reduce=reduce)
    assert not torch.allclose(want[torch.isfinite(want)], without[torch.isfinite(without)])  # it changes the scores
    serving = score_clusters(queries, centroids, spreads, costs, rule="size_weighted", reduce=reduce, always_lse=always)
    _assert_scores_close(serving, want, torch.float32)
    out = torch.full(tuple(costs.shape), float("nan"), dtype=torch.float32, device=DEVICE)
    got = cluster_scores(queries.to(DEVICE), centroids.to(DEVICE), spreads.to(DEVICE), costs.to(DEVICE),
                         rule="size_weighted", reduce=reduce, impl="triton", out=out, always_lse=always.to(DEVICE))
    _assert_scores_close(got.cpu(), want, torch.float32)
    # one query vector and one KV head: the clusters' shares (x cost) and the always part's share sum to 1
    q1, c1, s1, k1 = _inputs((2, 1, 1, 1, 16, 40), torch.float32, seed=3)
    clusters = torch.logsumexp(cluster_log_mass(q1, c1, s1, k1), dim=-1)  # [2, 1, 1]
    a1 = clusters + torch.tensor([-1.0, 1.0]).view(2, 1, 1)  # the always part holds ~27 % / ~73 %
    shares = cluster_scores_reference(q1, c1, s1, k1, rule="size_weighted", reduce="mean", always_lse=a1)
    always_share = torch.exp(a1 - torch.logaddexp(clusters, a1)).flatten()  # [2]
    cluster_mass = torch.where(torch.isfinite(shares), shares * k1, 0.0).sum(dim=1)  # [2]
    torch.testing.assert_close(cluster_mass + always_share, torch.ones(2), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(always_share, torch.sigmoid(torch.tensor([-1.0, 1.0])))


def test_size_weighted_shares_sum_to_one_per_query():
    # one query vector and one KV head: the mean share over clusters is a softmax, so shares × cost sum to 1
    queries, centroids, spreads, costs = _inputs((2, 1, 1, 1, 16, 40), torch.float32, seed=3)
    got = _run_triton(queries, centroids, spreads, costs, "size_weighted", "mean")
    mass = torch.where(torch.isfinite(got), got * costs, 0.0).sum(dim=1)
    torch.testing.assert_close(mass, torch.ones(2), rtol=1e-5, atol=1e-6)


def test_strided_views_and_no_clusters():
    # the launcher reads every stride: transposed queries and a head-dim slice of wider centroids, no copies
    queries, centroids, spreads, costs = _inputs((2, 3, 8, 2, 32, 20), torch.float32, seed=4)
    queries_t = queries.transpose(1, 2).contiguous().transpose(1, 2)  # [R, Tq, Hq, D] with Hq-major strides
    wide = torch.randn(2, 20, 2, 40)
    wide[..., :32] = centroids
    for rule in RULES:
        want = cluster_scores_reference(queries, centroids, spreads, costs, rule=rule, reduce="max")
        _assert_scores_close(_run_triton(queries_t, wide[..., :32], spreads, costs, rule, "max"), want, torch.float32)
    empty = cluster_scores(queries, centroids[:, :0], spreads[:, :0], costs[:, :0], rule="size_weighted",
                           reduce="mean", impl="triton")
    assert empty.shape == (2, 0) and empty.dtype == torch.float32


def test_bad_arguments_raise_value_error():
    queries, centroids, spreads, costs = _inputs((2, 1, 8, 2, 32, 5), torch.float32)
    with pytest.raises(ValueError, match="impl"):
        cluster_scores(queries, centroids, spreads, costs, rule="centroid", reduce="mean", impl="cuda")
    for impl in ("triton", "reference"):
        with pytest.raises(ValueError, match="score rule"):
            cluster_scores(queries, centroids, spreads, costs, rule="dot", reduce="mean", impl=impl)
        with pytest.raises(ValueError, match="num_qo_heads"):
            cluster_scores(queries[:, :, :7], centroids, spreads, costs, rule="centroid", reduce="max", impl=impl)
        with pytest.raises(ValueError, match="out"):
            cluster_scores(queries, centroids, spreads, costs, rule="centroid", reduce="max", impl=impl,
                           out=torch.empty(2, 5, dtype=torch.float16))
    # an always part of the wrong shape, or for a rule without shares: refused on every path, the CPU one too
    for call in (lambda **kw: cluster_scores(queries, centroids, spreads, costs, reduce="mean", **kw),
                 lambda **kw: score_clusters(queries, centroids, spreads, costs, reduce="mean", **kw)):
        with pytest.raises(ValueError, match=r"always_lse: expected \[2, 2, 4\]"):
            call(rule="size_weighted", always_lse=torch.zeros(1, 2, 4))
        with pytest.raises(ValueError, match="always_lse.*rule='centroid'"):
            call(rule="centroid", always_lse=torch.zeros(2, 2, 4))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 tl.dot is broken in the interpreter: GPU only")
@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_triton_equals_reference_bf16(case, rule, reduce):
    queries, centroids, spreads, costs = _inputs(case, torch.bfloat16)
    want = cluster_scores_reference(queries, centroids, spreads, costs, rule=rule, reduce=reduce)
    _assert_scores_close(_run_triton(queries, centroids, spreads, costs, rule, reduce), want, torch.bfloat16)
