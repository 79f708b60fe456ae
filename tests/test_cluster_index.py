"""`ClusterIndex` maintenance: integrity under random operation sequences, deferred splitting,
determinism, truncation, input checks. Shapes are odd on purpose (L=3, H=2, D=12, T=63)."""

from __future__ import annotations

import random

import pytest
import torch

import mosaic_sglang.clusters.index as cluster_index_module
from mosaic_sglang import ClusterIndex, MosaicConfig

from cluster_trace import video_stream

L, H, D = 3, 2, 12
MEMBERSHIPS = ("shared", "per_layer")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add contention (on a loaded 2-core box a 30-row
    ``index_add_`` took 59 ms with 2 threads, 7 µs with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_index(membership: str = "shared", **overrides) -> ClusterIndex:
    options = dict(budget=40, sink_tokens=3, recent_window=7, max_cluster_size=9, join_threshold=0.3,
                   split_threshold=0.45, membership=membership)
    options.update(overrides)
    return ClusterIndex(MosaicConfig(**options), num_layers=L, num_kv_heads=H, head_dim=D)


def noise_stream(num_frames: int, seed: int = 0, tokens_per_frame: int = 63) -> tuple[torch.Tensor, torch.Tensor]:
    """Structureless keys: with join == split threshold in (0.5, 1), tokens that each pass the
    cohesion test jointly overshoot it, so clusters get marked (0.5: a pair's relative spread)."""
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(L, num_frames * tokens_per_frame, H, D, generator=g)
    return keys, torch.arange(num_frames).repeat_interleave(tokens_per_frame)


def append_frames(index: ClusterIndex, keys: torch.Tensor, frame_ids: torch.Tensor, chunk: int = 0) -> None:
    """Append in chunks of ``chunk`` positions (0: one call per frame, with its leading text)."""
    if chunk:
        for s in range(0, keys.shape[1], chunk):
            index.append(keys[:, s : s + chunk], frame_ids[s : s + chunk])
        return
    bounds = [0] + [i for i in range(1, frame_ids.numel()) if frame_ids[i] < 0 <= frame_ids[i - 1]] + [frame_ids.numel()]
    for s, e in zip(bounds[:-1], bounds[1:]):
        index.append(keys[:, s:e], frame_ids[s:e])


@pytest.mark.parametrize("membership", MEMBERSHIPS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_operation_sequences_keep_integrity(membership: str, seed: int) -> None:
    rng = random.Random(seed)
    keys, frame_ids, _ = video_stream(seed=seed, num_layers=L, num_kv_heads=H, head_dim=D, num_frames=12,
                                      tokens_per_frame=63)
    index = make_index(membership, seed=seed)
    pos, splits = 0, 0
    for _ in range(30):
        op = rng.choice(["append", "append", "append", "maintain", "select", "truncate"])
        if op == "append":
            step = rng.choice([1, 5, 63, 65, 130])  # partial frames, single tokens, several frames
            index.append(keys[:, pos : pos + step], frame_ids[pos : pos + step])
            pos = min(pos + step, keys.shape[1])
        elif op == "maintain":
            before = index.num_clusters
            done = index.maintain(max_splits=rng.choice([1, 3, None]))
            assert index.num_clusters == before + done
            splits += done
        elif op == "select":
            sel = index.select(torch.randn(L, 2, 2 * H, D))
            assert sel.indices.numel() == 0 or int(sel.indices.max()) < index.num_tokens
        elif pos > 0:
            pos = rng.randrange(max(0, pos - 100), pos)
            index.truncate(pos)
            assert index.num_tokens == pos
        index.check_integrity()
    assert index.num_tokens == pos


@pytest.mark.parametrize("membership", MEMBERSHIPS)
def test_every_visual_token_in_exactly_one_cluster(membership: str) -> None:
    keys, frame_ids, _ = video_stream(num_layers=L, num_kv_heads=H, head_dim=D, num_frames=10, tokens_per_frame=63)
    index = make_index(membership)
    append_frames(index, keys, frame_ids)
    index.check_integrity()
    visual = int((frame_ids >= 0).sum())
    groups = L if membership == "per_layer" else 1
    assert len(index.cluster_counts) == groups
    for g in range(groups):
        sizes = index.cluster_sizes(g)
        assert int(sizes.sum()) == visual and int(sizes.min()) >= 1
        assert int(sizes.max()) <= index.config.max_cluster_size  # the cap is exact, not eventual
    assert index.num_tokens == frame_ids.numel() and index.num_visual_tokens == visual


def test_integrity_check_detects_corruption() -> None:
    keys, frame_ids, _ = video_stream(num_layers=L, num_kv_heads=H, head_dim=D, num_frames=4, tokens_per_frame=63)
    index = make_index()
    append_frames(index, keys, frame_ids)
    index.check_integrity()
    index._table.key_sum[1, 0, 1, 5] += 1e-2  # one summary slightly off
    with pytest.raises(AssertionError, match="key sums"):
        index.check_integrity()
    index._table.key_sum[1, 0, 1, 5] -= 1e-2
    visual = int((frame_ids >= 0).nonzero()[0])
    index._assign[0, visual] = (index._assign[0, visual] + 1) % index.num_clusters  # token moved, sums not
    with pytest.raises(AssertionError):
        index.check_integrity()


def test_similar_tokens_share_clusters_and_scenes_do_not_mix() -> None:
    keys, frame_ids, objects = video_stream(num_layers=L, num_kv_heads=H, head_dim=D, num_frames=6,
                                            tokens_per_frame=63, noise=0.1)
    index = make_index(max_cluster_size=64)
    append_frames(index, keys, frame_ids)
    visual = frame_ids >= 0
    assign = index._assign[0, : index.num_tokens][visual]
    obj = objects[visual]
    # Well-separated objects: every cluster is pure, and clusters are far fewer than tokens.
    for c in assign.unique():
        assert obj[assign == c].unique().numel() == 1
    assert index.num_clusters <= visual.sum() // 8


@pytest.mark.parametrize("membership", MEMBERSHIPS)
def test_append_and_select_never_split(membership: str, monkeypatch: pytest.MonkeyPatch) -> None:
    keys, frame_ids = noise_stream(num_frames=4)
    index = make_index(membership, join_threshold=0.6, split_threshold=0.6)

    def forbidden(*args, **kwargs):
        raise AssertionError("split work in append/select")

    monkeypatch.setattr(cluster_index_module, "two_means", forbidden)
    append_frames(index, keys, frame_ids)
    index.select(torch.randn(L, 3, 2 * H, D))
    assert index.num_marked > 0  # precondition: there was split work to defer
    marked, clusters = index.num_marked, index.num_clusters
    monkeypatch.undo()
    done = index.maintain(max_splits=2)
    assert 1 <= done <= 2 and index.num_clusters == clusters + done and index.num_splits == done
    assert index.num_marked <= marked  # children may be re-marked, never more than were taken
    index.check_integrity()
    while index.maintain() > 0:
        pass
    assert index.num_marked == 0
    index.check_integrity()


def test_maintain_work_is_bounded_and_free_when_nothing_is_marked(monkeypatch: pytest.MonkeyPatch) -> None:
    keys, frame_ids = noise_stream(num_frames=4)
    index = make_index(join_threshold=0.6, split_threshold=0.6, split_work_per_step=3)
    append_frames(index, keys, frame_ids)
    assert index.num_marked > 3
    assert index.maintain() == 3  # default bound: config.split_work_per_step
    assert index.maintain(max_splits=0) == 0
    while index.maintain() > 0:
        pass
    monkeypatch.setattr(cluster_index_module, "two_means", lambda *a, **k: pytest.fail("split without marks"))
    assert index.maintain() == 0


@pytest.mark.parametrize("membership", MEMBERSHIPS)
def test_deterministic_given_seed(membership: str) -> None:
    keys, frame_ids = noise_stream(num_frames=4, seed=3)
    queries = torch.randn(L, 2, 2 * H, D, generator=torch.Generator().manual_seed(0))
    runs = []
    for _ in range(2):
        index = make_index(membership, join_threshold=0.6, split_threshold=0.6, seed=7)
        append_frames(index, keys, frame_ids)
        index.maintain(max_splits=50)
        runs.append((index._assign[:, : index.num_tokens].clone(), index.select(queries)))
    assert torch.equal(runs[0][0], runs[1][0])
    assert torch.equal(runs[0][1].indices, runs[1][1].indices)
    assert torch.equal(runs[0][1].indptr, runs[1][1].indptr)


def test_whole_frame_chunking_does_not_change_clusters() -> None:
    keys, frame_ids, _ = video_stream(num_layers=L, num_kv_heads=H, head_dim=D, num_frames=6, tokens_per_frame=63)
    per_frame, at_once = make_index(), make_index()
    append_frames(per_frame, keys, frame_ids)
    at_once.append(keys, frame_ids)
    assert torch.equal(per_frame._assign[:, : keys.shape[1]], at_once._assign[:, : keys.shape[1]])


def test_candidates_stay_local_as_history_grows() -> None:
    """Ingest compares against the clusters of the last `active_frames` frames only."""
    keys, frame_ids, _ = video_stream(num_layers=L, num_kv_heads=H, head_dim=D, num_frames=30,
                                      tokens_per_frame=21, noise=0.6)
    index = make_index(active_frames=2)
    widths = []
    for f in range(30):
        mask = frame_ids == f
        mask[mask.nonzero()[0] - 2 :] |= frame_ids[mask.nonzero()[0] - 2 :] < 0  # the frame's text too
        index.append(keys[:, mask], frame_ids[mask])
        widths.append(index._active.shape[1])
    created_recently = max(widths[:4])
    assert index.num_clusters > 4 * created_recently  # the history is much larger than the candidates
    assert max(widths) <= 3 * created_recently


@pytest.mark.parametrize("membership", MEMBERSHIPS)
def test_truncate_keeps_survivors_and_accepts_new_tokens(membership: str) -> None:
    keys, frame_ids, _ = video_stream(num_layers=L, num_kv_heads=H, head_dim=D, num_frames=8, tokens_per_frame=63)
    index = make_index(membership)
    append_frames(index, keys, frame_ids)
    before = index._assign[:, :200].clone()
    index.truncate(200)  # mid-frame
    index.check_integrity()
    same = before[:, :, None] == before[:, None, :]  # co-membership of survivors is unchanged
    assert torch.equal(same, index._assign[:, :200, None] == index._assign[:, None, :200])
    index.append(keys[:, 200:], frame_ids[200:])
    index.check_integrity()
    index.truncate(0)
    index.check_integrity()
    assert index.num_tokens == 0 and index.num_clusters == 0
    with pytest.raises(ValueError, match="num_tokens"):
        index.truncate(1)


def test_key_reader_instead_of_a_key_copy() -> None:
    keys, frame_ids = noise_stream(num_frames=4)
    reader = make_index(join_threshold=0.6, split_threshold=0.6)
    reader = ClusterIndex(reader.config, num_layers=L, num_kv_heads=H, head_dim=D,
                          key_reader=lambda positions: keys[:, positions])
    copy = make_index(join_threshold=0.6, split_threshold=0.6)
    for index in (reader, copy):
        append_frames(index, keys, frame_ids)
        index.maintain(max_splits=100)
        index.check_integrity()
    assert reader._keys is None
    assert torch.equal(reader._assign[:, : keys.shape[1]], copy._assign[:, : keys.shape[1]])


def test_invalid_inputs_raise_value_errors() -> None:
    index = make_index()
    ok_keys, ok_fids = torch.randn(L, 5, H, D), torch.zeros(5, dtype=torch.int64)
    bad = [
        (torch.randn(L + 1, 5, H, D), ok_fids, "keys"),
        (torch.randn(L, 5, H, D + 1), ok_fids, "keys"),
        (torch.randn(L, 5, H * D), ok_fids, "keys"),
        (torch.ones(L, 5, H, D, dtype=torch.int64), ok_fids, "keys"),
        (ok_keys, torch.zeros(5), "frame_ids"),
        (ok_keys, torch.zeros(4, dtype=torch.int64), "frame_ids"),
        (ok_keys, torch.tensor([0, 1, 0, 2, 2]), "frame_ids"),
        (ok_keys, torch.tensor([0, -2, 1, 1, 1]), "frame_ids"),
    ]
    for keys, fids, field in bad:
        with pytest.raises(ValueError, match=field):
            index.append(keys, fids)
    index.append(ok_keys, ok_fids + 3)
    with pytest.raises(ValueError, match="last one seen"):
        index.append(ok_keys, ok_fids + 2)
    for queries in (torch.randn(L, 1, H + 1, D), torch.randn(L, 1, H, D - 1), torch.randn(L, 0, H, D),
                    torch.ones(L, 1, H, D, dtype=torch.int32), torch.randn(1, H, D)):
        with pytest.raises(ValueError, match="queries"):
            index.select(queries)
    with pytest.raises(ValueError, match="max_splits"):
        index.maintain(-1)
    with pytest.raises(ValueError, match="head_dim"):
        ClusterIndex(MosaicConfig(), num_layers=L, num_kv_heads=H, head_dim=0)
    with pytest.raises(ValueError, match="config"):
        ClusterIndex({"budget": 4}, num_layers=L, num_kv_heads=H, head_dim=D)
    index.check_integrity()  # rejected calls changed nothing
    assert index.num_tokens == 5
