"""Debug/test channel: with ``MOSAIC_DUMP_DIR`` set, every served selection (queries, result) and every
index append (keys, frame ids) is saved there with ``torch.save``, so a test can replay them against an
offline `ClusterIndex` and check that the server selected what the index would."""

from __future__ import annotations

import os
from typing import Optional

import torch

from ..config import MOSAIC_DUMP_DIR

__all__ = ["SelectionDump"]


class SelectionDump:
    """Writes one ``<pid>-<n>.pt`` record per event into ``directory`` (default: ``MOSAIC_DUMP_DIR``); off
    when neither is set.

    Records: ``{"event": "config", "config"}`` (the policy's `MosaicConfig` as JSON, first),
    ``{"event": "forward", "forward", "rids", "is_decode"}`` (which requests ran together),
    ``{"event": "append", "anchor", "video", "start", "keys", "frame_ids"}``, ``{"event": "select",
    "forward", "rid", "anchor", "video", "layer", "queries", "selected", "index_tokens", "seq_len"}`` and
    ``{"event": "offload", "forward", "video", "positions"}`` (positions whose KV went to the host tier) and
    ``{"event": "regroup_tail", "forward", "anchor", "video", "clusters"}`` (`ClusterIndex.regroup_tail` replaced
    that many online clusters when a prompt ended).
    ``anchor`` is the video's key at that moment (it changes when its first token is offloaded);
    ``video`` is its stable uid. `mosaic_sglang.inspect` plots a dump.
    """

    def __init__(self, directory: Optional[str] = None) -> None:
        self.directory = directory if directory is not None else MOSAIC_DUMP_DIR.read()
        self._count = 0

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def config(self, config_json: str) -> None:
        if self.enabled:
            self._save({"event": "config", "config": config_json})

    def offload(self, forward: int, video: int, positions: torch.Tensor) -> None:
        if self.enabled:
            self._save({"event": "offload", "forward": forward, "video": video, "positions": positions.cpu()})

    def forward(self, forward: int, rids: list, is_decode: bool) -> None:
        if self.enabled:
            self._save({"event": "forward", "forward": forward, "rids": list(rids), "is_decode": is_decode})

    def append(self, anchor: int, start: int, keys: torch.Tensor, frame_ids: torch.Tensor, *, video: int) -> None:
        if self.enabled:
            self._save({"event": "append", "anchor": anchor, "video": video, "start": start, "keys": keys.cpu(),
                        "frame_ids": frame_ids.cpu()})

    def regroup_tail(self, forward: int, anchor: int, clusters: int, *, video: int) -> None:
        if self.enabled:
            self._save({"event": "regroup_tail", "forward": forward, "anchor": anchor, "video": video,
                        "clusters": clusters})

    def select(self, forward: int, rid: str, anchor: int, layer: int, queries: torch.Tensor, selected: torch.Tensor,
               index_tokens: int, seq_len: int, *, video: int, always_lse=None) -> None:
        if self.enabled:
            self._save({"event": "select", "forward": forward, "rid": rid, "anchor": anchor, "video": video,
                        "layer": layer,
                        "queries": queries.detach().cpu(), "selected": selected.cpu(), "index_tokens": index_tokens,
                        "seq_len": seq_len, "always_lse": None if always_lse is None else always_lse.cpu()})

    def _save(self, record: dict) -> None:
        """Write the record under a name readers skip, then rename it into place: a process stopped mid-write
        (an engine shut down while its last offload is being recorded) leaves no truncated ``*.pt``."""
        os.makedirs(self.directory, exist_ok=True)
        name = os.path.join(self.directory, f"{os.getpid()}-{self._count:06d}.pt")
        partial = name + ".partial"
        torch.save(record, partial)
        os.replace(partial, name)
        self._count += 1
