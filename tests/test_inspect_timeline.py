"""`mosaic_sglang.inspect` on a hand-made dump: frames, questions' attended shares, host residency, errors."""

from __future__ import annotations

import pytest
import torch

from mosaic_sglang import MosaicConfig
from mosaic_sglang.inspect import load_records, read_timeline, render
from mosaic_sglang.inspect.figure import attended_fraction
from mosaic_sglang.serving.selection_dump import SelectionDump

L, H, D = 2, 2, 8


def _dump(tmp_path):
    dump = SelectionDump(str(tmp_path))
    dump.config(MosaicConfig(max_cluster_size=8).to_json())
    g = torch.Generator().manual_seed(0)
    frames = torch.cat([torch.full((4,), -1), torch.arange(4).repeat_interleave(8)])  # 4 text, 4 frames x 8
    dump.append(7, 0, torch.randn(L, 20, H, D, generator=g), frames[:20], video=1)
    dump.append(7, 20, torch.randn(L, 16, H, D, generator=g), frames[20:], video=1)
    q = torch.zeros(3, H, D)
    dump.select(3, "q1", 7, 0, q, torch.tensor([0, 1, 2, 3, 4, 5, 6, 7]), 36, 40, video=1)  # frame 0 whole
    dump.select(3, "q1", 7, 1, q, torch.tensor([0, 28, 29]), 36, 40, video=1)  # 2 of frame 3's 8
    dump.offload(4, 1, torch.arange(12, 28))  # frames 1 and 2 went to host
    return tmp_path


def test_timeline_replays_frames_questions_and_residency(tmp_path):
    timeline = read_timeline(load_records(_dump(tmp_path)))
    assert timeline.video == 1 and timeline.frame_ids.numel() == 36 and timeline.num_layers == L
    assert [s.frames for s in timeline.steps] == [2, 4] and all(s.clusters >= 1 for s in timeline.steps)
    assert sum(int(s) for s in timeline.steps[-1].sizes) == 32  # every video token is in one cluster
    (question,) = timeline.questions
    share = attended_fraction(timeline, question.attended)
    assert share.shape == (L, 4)
    assert share[0].tolist() == [0.5, 0.0, 0.0, 0.0]  # positions 4..7 are frame 0's first half
    assert share[1].tolist() == [0.0, 0.0, 0.0, 0.25]
    host_frames = timeline.frame_ids[timeline.on_host]
    assert host_frames.unique().tolist() == [1, 2] and int(timeline.on_host.sum()) == 16
    png = render(timeline, tmp_path / "t.png")
    assert png.stat().st_size > 10_000


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="MOSAIC_DUMP_DIR"):
        load_records(tmp_path)
    records = load_records(_dump(tmp_path / "d"))
    with pytest.raises(ValueError, match=r"video 9: expected one of \[1\]"):
        read_timeline(records, 9)


def test_a_record_interrupted_mid_write_leaves_no_readable_file(tmp_path, monkeypatch):
    """An engine shut down while a rank writes its last record must not leave a truncated ``*.pt``."""
    dump = SelectionDump(str(tmp_path))
    dump.config(MosaicConfig().to_json())
    real_save = torch.save

    def save_then_die(obj, path):
        with open(path, "wb") as f:
            f.write(b"PK\x03")  # the first bytes of a record, then the process stops
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        dump.offload(0, 1, torch.arange(3))
    monkeypatch.setattr(torch, "save", real_save)
    written = sorted(p.name for p in tmp_path.glob("*.pt"))
    assert len(written) == 1 and torch.load(tmp_path / written[0], weights_only=False)["event"] == "config"
