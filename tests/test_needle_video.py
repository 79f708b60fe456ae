"""The synthetic needle set: its videos show the planted event at the time the manifest says, and its
questions' answers name that event."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from mosaic_sglang.frontend.evaluation.needle_video import (COLORS, MANIFEST, QUESTIONS_FILE, SHAPES, digit_mask,
                                                            make_needle_set, shape_mask)
from mosaic_sglang.frontend.evaluation.qa_items import load_jsonl
from mosaic_sglang.frontend.video import probe_video, sample_frames

SIZE, FPS = 96, 4.0


@pytest.fixture(scope="module")
def needle_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("needle")
    items = make_needle_set(out, num_videos=4, duration_s=12.0, fps=FPS, size=SIZE, event_s=1.5, seed=3)
    return out, items, json.loads((out / MANIFEST).read_text())


def _frame_at(video, t):
    frames = sample_frames(video, fps=FPS, max_frames=None)
    return frames[int(t * FPS)].astype(np.float32)


def _centre(frame):
    big = SIZE * 5 // 8
    top = (SIZE - big) // 2
    return frame[top:top + big, top:top + big].mean(axis=2) > 128, big


def test_questions_letters_and_times(needle_set):
    out, items, manifest = needle_set
    assert len(items) == 16 and len({it.qid for it in items}) == 16
    assert Counter(it.category for it in items) == {"digit": 4, "shape": 4, "color": 4, "when": 4}
    for category in ("digit", "shape", "color", "when"):  # each letter right exactly once per category
        assert sorted(it.answer for it in items if it.category == category) == ["A", "B", "C", "D"]
    for video, plan in zip(sorted({it.video for it in items}), manifest):
        info = probe_video(video)
        assert (info.width, info.num_frames) == (SIZE, 48)
        events = {e["kind"]: e for e in plan["events"]}
        assert len({e["quarter"] for e in plan["events"]}) == 3  # one needle per quarter, one quarter empty
        mine = {it.category: it for it in items if it.video == video}
        assert mine["digit"].options[mine["digit"].answer_index] == str(events["digit"]["value"])
        assert mine["shape"].options[mine["shape"].answer_index] == events["shape"]["value"]
        assert mine["color"].options[mine["color"].answer_index] == events["color"]["value"]
        assert mine["when"].answer_index == events["digit"]["quarter"]
        for kind in ("digit", "shape", "color"):
            assert mine[kind].timestamp >= events[kind]["end_s"]  # asked after the needle was shown
            assert len(set(mine[kind].options)) == 4
        for d in plan["distractors"]:
            assert all(d["end_s"] <= e["start_s"] or d["start_s"] >= e["end_s"] for e in plan["events"])


def test_the_video_shows_the_answer_at_its_time(needle_set):
    _, items, manifest = needle_set
    videos = sorted({it.video for it in items})
    for video, plan in zip(videos, manifest):
        mine = {it.category: it for it in items if it.video == video}
        events = {e["kind"]: e for e in plan["events"]}
        middle = {k: (e["start_s"] + e["end_s"]) / 2 for k, e in events.items()}

        colour = _frame_at(video, middle["color"]).reshape(-1, 3).mean(axis=0)
        distance = {name: np.abs(colour - np.asarray(COLORS[name])).max() for name in mine["color"].options}
        assert min(distance, key=distance.get) == events["color"]["value"] and min(distance.values()) < 25

        seen, big = _centre(_frame_at(video, middle["shape"]))
        overlap = {name: (seen & shape_mask(name, big)).sum() / (seen | shape_mask(name, big)).sum()
                   for name in mine["shape"].options}
        assert min(overlap, key=lambda n: -overlap[n]) == events["shape"]["value"] and max(overlap.values()) > 0.8

        seen, big = _centre(_frame_at(video, middle["digit"]))
        glyph_h, glyph_w = big * 4 // 5, big // 2
        gy, gx = (big - glyph_h) // 2, (big - glyph_w) // 2
        seen = seen[gy:gy + glyph_h, gx:gx + glyph_w]
        agree = {d: (seen == digit_mask(int(d), glyph_h, glyph_w)).mean() for d in mine["digit"].options}
        assert max(agree, key=agree.get) == str(events["digit"]["value"]) and max(agree.values()) > 0.9

        empty = _frame_at(video, plan["duration_s"] * (0.5 + [0, 1, 2, 3].index(
            ({0, 1, 2, 3} - {e["quarter"] for e in plan["events"]}).pop())) / 4)
        assert _centre(empty)[0].mean() < 0.05  # the empty quarter's centre shows no needle


def test_jsonl_is_relocatable_and_round_trips(needle_set):
    out, items, _ = needle_set
    loaded = load_jsonl(out / QUESTIONS_FILE)
    assert [(it.qid, it.video, it.options, it.answer, it.timestamp) for it in loaded] == [
        (it.qid, it.video, it.options, it.answer, it.timestamp) for it in items]
    assert all(not line.split('"video": "')[1].startswith("/")
               for line in (out / QUESTIONS_FILE).read_text().splitlines())


def test_masks_are_distinct_and_arguments_are_checked(tmp_path):
    masks = [digit_mask(d, 20, 12) for d in range(10)]
    assert all((masks[a] != masks[b]).any() for a in range(10) for b in range(a + 1, 10))
    shapes = [shape_mask(s, 32) for s in SHAPES]
    assert all((shapes[a] ^ shapes[b]).mean() > 0.05 for a in range(5) for b in range(a + 1, 5))
    with pytest.raises(ValueError, match=r"shape: expected one of"):
        shape_mask("star", 8)
    with pytest.raises(ValueError, match=r"duration_s: expected >= 4, got 2.0"):
        make_needle_set(tmp_path, duration_s=2.0)
    with pytest.raises(ValueError, match=r"size: expected even, >= 32, got 33"):
        make_needle_set(tmp_path, size=33)
