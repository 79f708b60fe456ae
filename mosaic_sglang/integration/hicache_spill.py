"""The spill tier's backend: an SGLang HiCache storage backend (`HiCacheStorage`) used as a blob store.

`StorageBackendFactory.create_backend(name, HiCacheStorageConfig(...), mem_pool_host=None)` builds the
backend SGLang's own hierarchical cache would use; Mosaic writes one blob per cluster extent through its
``set(key, value)`` / ``get(key, target_location)`` interface (`offload.spill_tier`). Only ``'file'``
(`HiCacheFile`) is wired: the zero-copy backends (Mooncake, 3FS, NIXL, ...) move pages of a registered
SGLang host pool, which Mosaic's cluster-contiguous store is not; they plug in here by adapting their
page interface to `SpillBackend`.

Each process writes into its own fresh subdirectory of ``spill_path`` (``mosaic-<pid>-<random>/blobs``):
`HiCacheFile.clear` deletes every file of its directory, and a flush must never touch another
server's (or SGLang HiCache's) files. The process holds an exclusive ``flock`` on the subdirectory's
``.owner`` file (beside ``blobs``, out of the backend's reach) for its whole life (the directory is made and locked under a hidden name, then renamed into
place, so no other process ever sees it unlocked). The subdirectory is removed at a clean exit
(``atexit``); SGLang stops its scheduler processes with SIGKILL, which skips that but releases the lock,
so a new process removes every subdirectory whose lock it can take (its blobs back a radix tree that died
with its process). Whether the owner lives is read from the lock, never from the pid in the name: a server
in another container or on another host that shares ``spill_path`` has a pid this process cannot see.

`HiCacheFile` has no ``delete``: a freed cluster's file is removed by its path (the backend's key
suffix, `_get_suffixed_key`, resolved in the symbol test). Its own LRU eviction (``max_size`` /
``min_free_space``) is refused at start: it would delete blobs that hold the only copy of a cluster.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import uuid
from typing import Optional

import torch

from sglang.srt.mem_cache.hicache_storage import HiCacheStorageConfig
from sglang.srt.mem_cache.storage.backend_factory import StorageBackendFactory

__all__ = ["HiCacheSpillBackend", "SUPPORTED_SPILL_BACKENDS"]

SUPPORTED_SPILL_BACKENDS = ("file",)


class HiCacheSpillBackend:
    """`offload.SpillBackend` over a HiCache storage backend.

    Args:
        backend: a name of `SUPPORTED_SPILL_BACKENDS`.
        spill_path: the directory under which this process's subdirectory is made.
        model_name: part of the backend's key suffix (SGLang's ``served_model_name``).
        tp_rank, tp_size: this rank, for the key suffix (each process has its own directory anyway).
    """

    def __init__(self, backend: str, spill_path: str, *, model_name: Optional[str] = None, tp_rank: int = 0,
                 tp_size: int = 1) -> None:
        if backend not in SUPPORTED_SPILL_BACKENDS:
            raise ValueError(f"mosaic spill tier: backend: expected one of {list(SUPPORTED_SPILL_BACKENDS)}, got {backend!r}")
        self.name = f"hicache:{backend}"
        root = os.path.abspath(spill_path)
        _remove_dead_process_dirs(root)
        self.owned_directory, self._owner = _make_owned_dir(root)
        self.directory = os.path.join(self.owned_directory, "blobs")
        """Where the file backend writes the blobs (its ``clear`` empties it; the owner file stays)."""
        atexit.register(shutil.rmtree, self.owned_directory, True)
        config = HiCacheStorageConfig(
            tp_rank=tp_rank, tp_size=tp_size, pp_rank=0, pp_size=1, attn_cp_rank=0, attn_cp_size=1,
            is_mla_model=False, enable_storage_metrics=False, is_page_first_layout=True, model_name=model_name,
            extra_config={"file_storage_path": self.directory},
        )
        self.storage = StorageBackendFactory.create_backend(backend, config, None)
        files = getattr(self.storage, "_backend", self.storage)  # SGLang may wrap it in a failure injector
        if os.path.abspath(files.file_path) != self.directory:
            raise ValueError(
                f"mosaic spill tier: the file backend writes to {files.file_path!r}, not to {self.directory!r} "
                "(SGLANG_HICACHE_FILE_BACKEND_STORAGE_DIR overrides the path; unset it and use spill_path)"
            )
        if files._evictor.enabled:
            raise ValueError(
                "mosaic spill tier: the file backend's own eviction is on (SGLANG_HICACHE_FILE_BACKEND_MAX_SIZE or "
                "_MIN_FREE_SPACE); it would delete spilled clusters' only copy: unset it and bound the tier with "
                "spill_tokens"
            )
        self._files = files

    def put(self, key: str, value: torch.Tensor) -> bool:
        return bool(self.storage.set(key, value.contiguous()))

    def get(self, key: str, out: torch.Tensor) -> bool:
        try:
            return self.storage.get(key, out) is not None
        except OSError:  # a short file: what is left of the blob is not the cluster
            return False

    def delete(self, key: str) -> None:
        suffixed = self._files._get_suffixed_key(key)
        try:
            os.remove(os.path.join(self._files.file_path, f"{suffixed}.bin"))
        except FileNotFoundError:
            pass
        if self._files.metadata_cache is not None:
            self._files.metadata_cache.remove(suffixed)

    def clear(self) -> None:
        self.storage.clear()

    def num_files(self) -> int:
        """Blob files on disk now (tests, inspection)."""
        return sum(1 for name in os.listdir(self.directory) if name.endswith(".bin"))


OWNER_FILE = ".owner"
"""The file in each process's spill subdirectory its process holds an exclusive ``flock`` on."""


def _make_owned_dir(root: str):
    """``(path, owner fd)``: a new ``root/mosaic-<pid>-<random>`` directory, locked before it is visible under
    that name (made and locked as ``root/.mosaic-...``, which `_remove_dead_process_dirs` never reads)."""
    name = f"mosaic-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    hidden, path = os.path.join(root, f".{name}"), os.path.join(root, name)
    os.makedirs(os.path.join(hidden, "blobs"))  # spill_path itself is created if missing
    owner = os.open(os.path.join(hidden, OWNER_FILE), os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh file: nobody else holds it
    os.rename(hidden, path)  # the lock stays with the file
    return path, owner


def _remove_dead_process_dirs(root: str) -> None:
    """Delete the ``root/mosaic-*`` directories whose owner lock is free (their process is gone); a
    directory without an owner file (not made by this code) is left alone."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return
    for name in names:
        if not name.startswith("mosaic-"):
            continue
        directory = os.path.join(root, name)
        try:
            fd = os.open(os.path.join(directory, OWNER_FILE), os.O_RDWR)
        except OSError:  # no owner file, or not ours to open
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its process lives (here, in another container or on another host)
            os.close(fd)
            continue
        try:
            shutil.rmtree(directory, ignore_errors=True)
        finally:
            os.close(fd)
