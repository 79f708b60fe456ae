"""A streamed prefill with regrouped per-layer memberships (the defaults) moves sealed frames to the host
before their span is regrouped (provisional extents), then lays them out again once regrouped.

ClusterAttendedSet without SGLang: a fake KV pool and a fake tree (`TreeOffloader`) whose values are what a
request row holds (device slots ``> 0``, host encodings ``< 0``). Checks the device bound at every chunk,
that every host row still holds its token's K/V, that each settled (layer, cluster) is one copy, and that no
host row leaks."""

from __future__ import annotations

import pytest
import torch

from mosaic_sglang import MosaicConfig
from mosaic_sglang.offload import HostKVStore, HostTier, SpillTier
from mosaic_sglang.offload.host_tier import decode_host
from mosaic_sglang.serving import ClusterAttendedSet, RequestLayout

L, H, D, HQ = 2, 2, 8, 4
FRAMES, PER_FRAME, TEXT_BEFORE, TEXT_AFTER = 24, 8, 3, 5
ACTIVE, SPAN = 2, 5  # a span of 5 frames, chunks of 2: a regroup and an early move can share a checkpoint
CHUNK_FRAMES = 3  # frames per prefill chunk


class TreeOffloader:
    """The tree side of an offload (`PrefixOffloader`'s two moves) on one path of values."""

    def __init__(self, values: torch.Tensor) -> None:
        self.values = values

    def offload(self, node_id, positions, host_rows):
        assert bool((self.values[positions] > 0).all())
        self.values[positions] = -(host_rows + 1)

    def rehost(self, node_id, positions, host_rows):
        old = self.values[positions].clone()
        assert bool((old < 0).all())
        self.values[positions] = -(host_rows + 1)
        return decode_host(old)


def _prompt() -> torch.Tensor:
    frames = [f for f in range(FRAMES) for _ in range(PER_FRAME)]
    return torch.tensor([-1] * TEXT_BEFORE + frames + [-1] * TEXT_AFTER)


@pytest.fixture
def pool():
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(L, 408, H, D, generator=g) * 0.3  # scenes of 3 frames (24 slots) share a direction
    keys += torch.randn(L, 17, 1, H, D, generator=g).repeat_interleave(24, 1).reshape(L, 408, H, D)
    return keys


def _stream(pool, *, regroup_tokens: int, spill_dir=None, store_rows: int = 1024):
    """Prefill the prompt `CHUNK_FRAMES` frames per chunk with an offload checkpoint after each, then end the request.
    Returns the policy, its host tier, the tree's values, the slot each position started in and, per chunk,
    the frames held on the device and the frames ingested. ``spill_dir``: a host store of 48 rows with a spill
    tier there, so that relayouts read spilled extents and spill others to make room; ``store_rows``: the host
    store's rows without one."""
    if spill_dir is None:
        host = HostTier(HostKVStore(store_rows, num_layers=L, num_kv_heads=H, head_dim=D, dtype=torch.float32), layer_orders=True)
    else:
        from mosaic_sglang.integration.hicache_spill import HiCacheSpillBackend

        store = HostKVStore(48, num_layers=L, num_kv_heads=H, head_dim=D, dtype=torch.float32)
        host = HostTier(store, spill=SpillTier(HiCacheSpillBackend("file", str(spill_dir), model_name="tiny"), store),
                        spill_tokens=1024, layer_orders=True)

    def read_slot_keys(values):
        keys = torch.empty(L, values.numel(), H, D)
        on_device = values > 0
        keys[:, on_device] = pool[:, values[on_device]]
        if bool((~on_device).any()):
            keys[:, ~on_device] = host.read_keys(decode_host(values[~on_device]))
        return keys

    cfg = MosaicConfig.from_dict({"sink_tokens": 2, "recent_window": 4, "max_cluster_size": 16, "budget": 32,
                                  "membership": "per_layer", "regroup_tokens": regroup_tokens,
                                  "regroup_frames": SPAN, "active_frames": ACTIVE, "host_store_tokens": 1024})
    policy = ClusterAttendedSet(cfg, num_layers=L, num_kv_heads=H, head_dim=D, read_slot_keys=read_slot_keys, host=host)
    frames = _prompt()
    slots = torch.arange(10, 10 + frames.numel())
    tree = TreeOffloader(slots.clone())
    read_kv = lambda s: (pool[:, s], -pool[:, s])  # V = -K: a mix-up of the two shows
    held, start = [], 0
    g = torch.Generator().manual_seed(1)
    while start < frames.numel():
        end = min(frames.numel(), start + (TEXT_BEFORE if start == 0 else 0) + CHUNK_FRAMES * PER_FRAME)
        if frames.numel() - end <= TEXT_AFTER:
            end = frames.numel()  # the question text ends the prompt with the last frame
        layout = RequestLayout("a", 1, start, end - start, frames[:end], tree.values[:end].clone(),
                               prompt_done=end == frames.numel())  # the tail is regrouped at the prompt's end
        plan = policy.plan([layout], False)
        for layer in range(L):
            policy.layer_kv(plan, layer, torch.randn(end - start, HQ, D, generator=g))
        policy.end_forward()
        policy.offload_prefix(tree.values[:end].clone(), "node", tree, read_kv, sealed_only=True)
        on_device = (tree.values[:end] > 0) & (frames[:end] >= 0)
        held.append((frames[:end][on_device].unique().numel(), int(frames[:end].max()) + 1))
        start = end
    policy.offload_prefix(tree.values.clone(), "node", tree, read_kv)  # the request ends: the rest moves
    return policy, host, tree.values, slots, held


@pytest.mark.parametrize("spill", [False, True])
def test_sealed_frames_leave_the_device_before_their_span_is_regrouped(pool, spill, tmp_path, monkeypatch):
    monkeypatch.setenv("MOSAIC_DEBUG", "1")  # host-tier integrity after every change, checksums on every read
    policy, host, values, slots, held = _stream(pool, regroup_tokens=8, spill_dir=tmp_path / "a" if spill else None)
    online = _stream(pool, regroup_tokens=0, spill_dir=tmp_path / "b" if spill else None)[-1]
    if spill:  # writes made room by spilling extents (never a relayout's own sources), read back below
        assert host.spill.stats.spills > 0 and host.spilled_tokens > 0
    # at every checkpoint before the prompt's end the device holds what online clusters would keep there:
    # frames of clusters still open in the active frames (a scene's cluster spans 3 frames), not a span of
    # frames waiting for k-means (without the early moves: up to ACTIVE + SPAN + 1 = 9 frames here); at the
    # end the tail's k-means may join the last sealed frames to the active ones until the request ends
    assert all(device <= device_online for (device, _), (device_online, _) in zip(held[:-1], online)), (held, online)
    assert max(device for device, _ in held) <= ACTIVE + 3 < ACTIVE + SPAN + 1, held
    assert held[-1][1] == FRAMES and policy.counters.rehosted_tokens > 0
    # the request ended: every clustered position is on the host, in a settled layout
    visual = (_prompt() >= 0).nonzero().flatten()
    assert bool((values[visual] < 0).all())
    rows = decode_host(values[visual])
    assert not bool(host.provisional_rows(rows).any())
    k, v = host.read_rows(rows)  # every row still holds its own token's K/V
    assert torch.equal(k, pool[:, slots[visual]]) and torch.equal(v, -pool[:, slots[visual]])
    assert host.live_rows == visual.numel()  # the rows left behind by the relayouts were released
    host.check_integrity()
    (video,) = policy.videos.values()
    assert torch.equal(video.slots[visual], values[visual])
    view = video.index.view()
    for layer in range(L):  # each layer's cluster is one contiguous copy (a sub-range) of the host store, but
        # where a checkpoint cut it (part of it movable in every layer earlier than the rest: 2 of ~25 here, as
        # without the early moves); left in the online layout the clusters would be ~2.1 copies each here
        assign = view.assign[view.group_of_layer[layer], visual]
        pieces = [host.orders.sub_ranges(layer, rows[assign == c], host._extent_of[rows[assign == c]])[0].numel()
                  for c in assign.unique().tolist()]
        assert sum(pieces) <= 1.2 * len(pieces), pieces


def test_a_full_host_store_leaves_every_token_where_its_value_says(pool, monkeypatch):
    # 64 rows for a 192-token video: relayouts (old and new rows at once) and early moves run out of room
    monkeypatch.setenv("MOSAIC_DEBUG", "1")
    policy, host, values, slots, _ = _stream(pool, regroup_tokens=8, store_rows=64)
    assert policy.counters.host_store_full_events > 0 and policy.counters.rehosted_tokens > 0
    visual = (_prompt() >= 0).nonzero().flatten()
    on_host = visual[values[visual] < 0]
    assert 0 < on_host.numel() < visual.numel()
    assert torch.equal(values[visual[values[visual] > 0]], slots[visual[values[visual] > 0]])  # untouched slots
    k, v = host.read_rows(decode_host(values[on_host]))
    assert torch.equal(k, pool[:, slots[on_host]]) and torch.equal(v, -pool[:, slots[on_host]])
    assert host.live_rows == on_host.numel()  # no row held for a token that stayed, none leaked by a relayout
    host.check_integrity()
