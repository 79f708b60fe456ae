"""A dump replayed per video: frames by position, cluster index over time, questions, residency."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple, Optional

import torch

from ..clusters import ClusterIndex
from ..config import MosaicConfig

__all__ = ["Question", "ClusterStep", "VideoTimeline", "load_records", "read_timeline"]


class Question(NamedTuple):
    """One request's latest selection at each layer: ``attended[layer]`` = ``[n] int64`` sorted positions."""

    rid: str
    attended: dict[int, torch.Tensor]
    seq_len: int


class ClusterStep(NamedTuple):
    """The index after one append (and its deferred splits)."""

    frames: int
    clusters: int
    sizes: torch.Tensor  # [clusters] int64


class VideoTimeline(NamedTuple):
    video: int
    frame_ids: torch.Tensor  # [N] int64: frame of each indexed position, -1 for text
    steps: list[ClusterStep]
    questions: list[Question]
    on_host: torch.Tensor  # [N] bool: offloaded to the host tier at some point of the dump
    num_layers: int


def load_records(dump_dir) -> list[dict]:
    """Every record of ``dump_dir`` in write order (files are ``<pid>-<n>.pt``)."""
    paths = sorted(Path(dump_dir).glob("*.pt"), key=lambda p: (p.stem.split("-")[0], int(p.stem.split("-")[1])))
    if not paths:
        raise FileNotFoundError(f"{os.fspath(dump_dir)}: no dump records (*.pt); run the server with MOSAIC_DUMP_DIR")
    return [torch.load(p, weights_only=False) for p in paths]


def _replay(appends: list[dict], config: MosaicConfig) -> tuple[torch.Tensor, list[ClusterStep]]:
    keys0 = appends[0]["keys"]
    index = ClusterIndex(config, num_layers=keys0.shape[0], num_kv_heads=keys0.shape[2], head_dim=keys0.shape[3])
    frame_ids, steps = [], []
    for rec in appends:
        if rec["start"] != index.num_tokens:  # the video was cut (a prefix left the tree) and re-grown
            index.truncate(rec["start"])
            frame_ids = [torch.cat(frame_ids)[: rec["start"]]] if frame_ids else []
        index.append(rec["keys"], rec["frame_ids"])
        index.maintain()
        frame_ids.append(rec["frame_ids"])
        ids = torch.cat(frame_ids)
        steps.append(ClusterStep(int(ids.max()) + 1 if (ids >= 0).any() else 0, index.num_clusters,
                                 index.cluster_sizes().to(torch.int64)))
    return torch.cat(frame_ids), steps


def read_timeline(records: list[dict], video: Optional[int] = None) -> VideoTimeline:
    """The timeline of ``video`` (a uid), default: the video with the most indexed tokens."""
    config = next((MosaicConfig.from_json(r["config"]) for r in records if r["event"] == "config"), MosaicConfig())
    appends: dict[int, list[dict]] = {}
    for r in records:
        if r["event"] == "append":
            appends.setdefault(r["video"], []).append(r)
    if not appends:
        raise ValueError("the dump holds no indexed video (no 'append' record)")
    if video is None:
        video = max(appends, key=lambda v: sum(r["frame_ids"].numel() for r in appends[v]))
    if video not in appends:
        raise ValueError(f"video {video}: expected one of {sorted(appends)}")
    frame_ids, steps = _replay(appends[video], config)
    latest: dict[str, Question] = {}
    for r in records:
        if r["event"] == "select" and r["video"] == video and r["index_tokens"] > 0:
            q = latest.setdefault(r["rid"], Question(r["rid"], {}, r["seq_len"]))
            q.attended[r["layer"]] = r["selected"]
            latest[r["rid"]] = q._replace(seq_len=r["seq_len"])
    on_host = torch.zeros(frame_ids.numel(), dtype=torch.bool)
    for r in records:
        if r["event"] == "offload" and r["video"] == video:
            positions = r["positions"][r["positions"] < on_host.numel()]
            on_host[positions] = True
    num_layers = appends[video][0]["keys"].shape[0]
    return VideoTimeline(video, frame_ids, steps, list(latest.values()), on_host, num_layers)
