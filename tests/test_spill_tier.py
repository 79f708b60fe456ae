"""The spill (L3) tier under the host tier, through SGLang's HiCache file backend: cold extents leave the
host store as blobs when it is full and come back when read; tree rows never change; blobs are deleted
with their cluster; a corrupt or lost blob is never served."""

from __future__ import annotations

import random

import pytest
import torch

from mosaic_sglang.integration.hicache_spill import HiCacheSpillBackend
from mosaic_sglang.offload import HostKVStore, HostTier, SpillLostError, SpillTier
from mosaic_sglang.offload.checksums import OffloadCorruptionError

L, H, D = 2, 2, 4


def _pool(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(L, n, H, D, generator=g), torch.randn(L, n, H, D, generator=g)


def _tier(tmp_path, capacity=8, spill_tokens=64, backend=None):
    store = HostKVStore(capacity, num_layers=L, num_kv_heads=H, head_dim=D, dtype=torch.float32)
    backend = backend or HiCacheSpillBackend("file", str(tmp_path), model_name="tiny")
    return HostTier(store, spill=SpillTier(backend, store), spill_tokens=spill_tokens), backend


@pytest.fixture
def debug(monkeypatch):
    monkeypatch.setenv("MOSAIC_DEBUG", "1")  # integrity after every change, checksums on every read


def test_full_store_spills_the_least_recently_read_and_loads_it_back(tmp_path, debug):
    k, v = _pool()
    tier, backend = _tier(tmp_path)
    read_kv = lambda s: (k[:, s], v[:, s])
    a, b = tier.put_clusters(read_kv, [torch.arange(0, 4), torch.arange(4, 8)])
    tier.begin_forward([])
    tier.read(0, b, "cpu")  # b is read in a later forward than a: a is the colder one
    (c,) = tier.put_clusters(read_kv, [torch.arange(8, 12)])
    assert tier.used_tokens == 8 and tier.spilled_tokens == 4 and backend.num_files() == 1
    assert tier.spill.stats.spills == 1 and tier._held[int(a[0])].spilled  # a went, b stayed
    # the tree's rows are unchanged: reading a gives its original K/V and loads it back (spilling b now)
    tier.begin_forward([])
    got_k, got_v, counts = tier.read(1, a, "cpu")
    assert torch.equal(got_k, k[1, 0:4]) and torch.equal(got_v, v[1, 0:4])
    assert counts.spill_loads == 1 and counts.spill_load_bytes == 4 * L * H * D * 2 * 4
    assert tier.spilled_tokens == 4 and not tier._held[int(a[0])].spilled
    for rows, first in ((a, 0), (b, 4), (c, 8)):
        assert torch.equal(tier.read_keys(rows), k[:, first : first + 4])
    tier.check_integrity()


def test_a_loaded_extent_keeps_its_blob_and_release_deletes_blobs(tmp_path, debug):
    k, v = _pool()
    tier, backend = _tier(tmp_path)
    read_kv = lambda s: (k[:, s], v[:, s])
    a, b, c = tier.put_clusters(read_kv, [torch.arange(0, 4), torch.arange(4, 8), torch.arange(8, 12)])
    tier.begin_forward([])
    tier.read(0, a, "cpu")  # a back (its blob kept), b spilled
    writes = tier.spill.stats.writes
    tier.begin_forward([])
    tier.read(0, b, "cpu")  # b back: spills c (written now) or a (already has a blob: no write)
    assert tier.spill.stats.writes - writes <= 1
    assert backend.num_files() == tier.spill.stats.writes
    tier.release(torch.cat([a, b, c]))
    assert backend.num_files() == 0 and tier.spill.held_tokens == 0 and tier.rows.num_used == 0
    tier.check_integrity()


def test_a_read_larger_than_the_store_reads_blobs_directly(tmp_path, debug):
    k, v = _pool()
    tier, _ = _tier(tmp_path, capacity=8)
    read_kv = lambda s: (k[:, s], v[:, s])
    groups = [torch.arange(0, 4), torch.arange(10, 14), torch.arange(20, 24)]
    rows = tier.put_clusters(read_kv, groups)
    everything = torch.cat(rows)[torch.tensor([11, 0, 5, 8, 2])]
    expected = torch.cat(groups)[torch.tensor([11, 0, 5, 8, 2])]
    tier.begin_forward([])
    got_k, got_v, counts = tier.read(1, everything, "cpu")
    assert torch.equal(got_k, k[1, expected]) and torch.equal(got_v, v[1, expected])
    assert counts.spill_load_bytes > 0
    assert torch.equal(tier.read_keys(everything), k[:, expected])
    # through a cluster cache: it cannot place every cluster either, so the read goes around the cache
    tier.begin_forward([3])
    got_k, _, counts = tier.read_cached(3, 16, 0, everything, "cpu")
    assert torch.equal(got_k, k[0, expected]) and counts.overflow_reads == 1
    tier.check_integrity()


def test_read_cached_loads_spilled_clusters_before_copying(tmp_path, debug):
    k, v = _pool()
    tier, _ = _tier(tmp_path)
    read_kv = lambda s: (k[:, s], v[:, s])
    a, b, c = tier.put_clusters(read_kv, [torch.tensor([3, 1, 7]), torch.tensor([9, 8]), torch.tensor([30, 31, 32])])
    for layer in range(L):
        tier.begin_forward([5])
        got_k, got_v, counts = tier.read_cached(5, 8, layer, torch.cat([a, b]), "cpu")
        assert torch.equal(got_k, k[layer, torch.tensor([3, 1, 7, 9, 8])])
        assert torch.equal(got_v, v[layer, torch.tensor([3, 1, 7, 9, 8])])
        assert counts.overflow_reads == 0
    tier.check_integrity()


def test_corrupt_blob_is_caught_and_lost_blob_raises(tmp_path, debug):
    k, v = _pool()
    tier, backend = _tier(tmp_path, capacity=4)
    read_kv = lambda s: (k[:, s], v[:, s])
    a, b = tier.put_clusters(read_kv, [torch.arange(0, 4), torch.arange(4, 8)])  # a spilled for b
    (blob,) = [p for p in (tmp_path).rglob("*.bin")]
    data = bytearray(blob.read_bytes())
    data[5] ^= 0xFF
    blob.write_bytes(bytes(data))
    tier.begin_forward([])
    with pytest.raises(OffloadCorruptionError, match="spill tier"):
        tier.read(0, a, "cpu")

    tier2, _ = _tier(tmp_path / "second", capacity=4)
    a, b = tier2.put_clusters(read_kv, [torch.arange(0, 4), torch.arange(4, 8)])
    for path in (tmp_path / "second").rglob("*.bin"):
        path.unlink()
    tier2.begin_forward([])
    with pytest.raises(SpillLostError, match="only copy"):
        tier2.read(0, a, "cpu")
    tier2.check_integrity()  # the failed load gave its host rows back; the extent is still spilled
    assert tier2._held[int(a[0])].spilled and tier2.spilled_tokens + tier2.used_tokens == 8


class _Refusing:
    """A backend that is full: every write refused."""

    name = "refusing"

    def put(self, key, value):
        return False

    def get(self, key, out):
        raise AssertionError("nothing was written")

    def delete(self, key):
        raise AssertionError("nothing was written")

    def clear(self):
        pass


def test_a_refused_write_leaves_the_cluster_on_the_device(tmp_path, debug):
    k, v = _pool()
    tier, _ = _tier(tmp_path, capacity=6, backend=_Refusing())
    read_kv = lambda s: (k[:, s], v[:, s])
    rows = tier.put_clusters(read_kv, [torch.arange(0, 4), torch.arange(4, 8)])
    assert len(rows) == 1 and tier.spill.stats.failed_writes == 1 and tier.spilled_tokens == 0
    assert torch.equal(tier.read_keys(rows[0]), k[:, 0:4])
    tier.check_integrity()


def test_under_tensor_parallelism_a_refused_write_stops_instead_of_diverging(tmp_path, debug):
    from mosaic_sglang.offload import SpillRefusedError

    k, v = _pool()
    store = HostKVStore(6, num_layers=L, num_kv_heads=H, head_dim=D, dtype=torch.float32)
    tier = HostTier(store, spill=SpillTier(_Refusing(), store, refusal_is_fatal=True), spill_tokens=64)
    read_kv = lambda s: (k[:, s], v[:, s])
    (a,) = tier.put_clusters(read_kv, [torch.arange(0, 4)])
    with pytest.raises(SpillRefusedError, match="every rank must spill alike"):
        tier.put_clusters(read_kv, [torch.arange(4, 8)])
    tier.check_integrity()  # the cluster that could not be placed holds nothing
    assert tier.rows.num_used == 4 and torch.equal(tier.read_keys(a), k[:, 0:4])


def test_flush_clears_the_backend(tmp_path, debug):
    k, v = _pool()
    tier, backend = _tier(tmp_path, capacity=4)
    tier.put_clusters(lambda s: (k[:, s], v[:, s]), [torch.arange(0, 4), torch.arange(4, 8), torch.arange(8, 10)])
    assert backend.num_files() == 2
    tier.clear()
    assert backend.num_files() == 0 and tier.rows.num_used == 0 and tier.used_tokens == 0
    tier.check_integrity()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_puts_reads_and_releases_match_a_reference(tmp_path, debug, seed):
    """Against a dict of what each tree row must read: puts, partial releases and reads of random rows
    in random forwards, through the host store, the spill tier and a cluster cache."""
    rng = random.Random(seed)
    k, v = _pool(512, seed)
    tier, backend = _tier(tmp_path, capacity=24, spill_tokens=64)
    truth: dict[int, int] = {}  # tree row -> pool slot whose K/V it holds
    next_slot = 0
    for step in range(120):
        tier.begin_forward([1])
        op = rng.random()
        if op < 0.35:
            groups = []
            for _ in range(rng.randint(1, 3)):
                n = rng.randint(1, 6)
                groups.append(torch.arange(next_slot, next_slot + n) % 512)
                next_slot += n
            for slots, rows in zip(groups, tier.put_clusters(lambda s: (k[:, s], v[:, s]), groups)):
                truth.update(zip(rows.tolist(), slots.tolist()))
        elif op < 0.55 and truth:
            gone = rng.sample(sorted(truth), rng.randint(1, min(8, len(truth))))
            tier.release(torch.tensor(gone))
            for row in gone:
                del truth[row]
        elif truth:
            rows = torch.tensor(rng.sample(sorted(truth), rng.randint(1, min(10, len(truth)))))
            slots = torch.tensor([truth[r] for r in rows.tolist()])
            layer = rng.randrange(L)
            if rng.random() < 0.5:
                got_k, got_v, _ = tier.read_cached(1, 12, layer, rows, "cpu")
            else:
                got_k, got_v, _ = tier.read(layer, rows, "cpu")
            assert torch.equal(got_k, k[layer, slots]) and torch.equal(got_v, v[layer, slots]), step
        assert tier.rows.num_used - tier.used_tokens == tier.spilled_tokens
    assert tier.spill.stats.spills > 0 and tier.spill.stats.loads > 0  # the tier was exercised
    tier.release(torch.tensor(sorted(truth)))
    assert backend.num_files() == 0 and tier.rows.num_used == 0
    tier.check_integrity()


_HOLD_A_SPILL_DIRECTORY = """
import sys, time
from mosaic_sglang.integration.hicache_spill import HiCacheSpillBackend
backend = HiCacheSpillBackend("file", sys.argv[1], model_name="tiny")
print(backend.owned_directory, flush=True)
time.sleep(600)
"""


def test_a_spill_directory_is_removed_only_when_its_owner_is_gone(tmp_path):
    """Owners are read from the directory's lock, not from the pid in its name: a live owner's directory
    (even one whose pid this process cannot see: another container or host) survives a new server's start
    and a flush; a SIGKILLed owner's (SGLang stops its schedulers so) is removed by the next start."""
    import os
    import signal
    import subprocess
    import sys

    from mosaic_sglang.integration.hicache_spill import OWNER_FILE, _make_owned_dir

    child = subprocess.Popen([sys.executable, "-c", _HOLD_A_SPILL_DIRECTORY, str(tmp_path)], stdout=subprocess.PIPE,
                             text=True)
    try:
        child_dir = child.stdout.readline().strip()
        assert os.path.isdir(os.path.join(child_dir, "blobs"))
        elsewhere, owner = _make_owned_dir(str(tmp_path))  # a live owner whose pid does not exist here
        unseen_pid = os.path.join(str(tmp_path), "mosaic-999999999-feedbeef")
        os.rename(elsewhere, unseen_pid)
        foreign = tmp_path / "mosaic-notes"  # not made by Mosaic (no owner file): never touched
        foreign.mkdir()
        backend = HiCacheSpillBackend("file", str(tmp_path), model_name="tiny")
        assert os.path.isdir(child_dir) and os.path.isdir(unseen_pid) and foreign.is_dir()
        backend.clear()  # the backend's clear empties the blobs only: the owner file stays
        assert os.path.isfile(os.path.join(backend.owned_directory, OWNER_FILE))
        child.send_signal(signal.SIGKILL)
        child.wait()
        HiCacheSpillBackend("file", str(tmp_path), model_name="tiny")
        assert not os.path.exists(child_dir)  # its owner died: the next start removes it
        assert os.path.isdir(unseen_pid) and os.path.isdir(backend.owned_directory) and foreign.is_dir()
        os.close(owner)
        HiCacheSpillBackend("file", str(tmp_path), model_name="tiny")
        assert not os.path.exists(unseen_pid)
    finally:
        child.kill()
        child.wait()
