"""`scene_cuts` on synthetic clips with known cut times (`make_synthetic_video` switches the background
colour at frame ``i * num_frames // num_scenes``): every cut found at its frame's timestamp, none inside a
shot or in a one-shot clip, within one analysed frame when sampling at ``fps``; the distance ignores
motion and tracks colour shifts; bad arguments fail by name. No engine."""

from __future__ import annotations

import numpy as np
import pytest

from mosaic_sglang.frontend.scene_cuts import DEFAULT_THRESHOLD, frame_distance, scene_cuts
from mosaic_sglang.frontend.video import VideoError, make_synthetic_video

FPS = 4


def _true_cuts(num_frames: int, num_scenes: int) -> list:
    scene = [min(num_scenes - 1, i * num_scenes // num_frames) for i in range(num_frames)]
    return [i / FPS for i in range(1, num_frames) if scene[i] != scene[i - 1]]


@pytest.mark.parametrize("seed", [0, 5, 11])
def test_three_scene_clip_has_its_two_cuts(tmp_path, seed):
    path = make_synthetic_video(tmp_path / "three.mp4", num_frames=24, fps=FPS, size=64, num_scenes=3, seed=seed)
    found = scene_cuts(path)
    assert _true_cuts(24, 3) == [2.0, 4.0]
    assert list(found.times) == [2.0, 4.0], found
    assert [cut.frame_index for cut in found.cuts] == [8, 16]
    assert found.num_frames == 24 and found.duration_s == pytest.approx(6.0, abs=0.3)
    # the call was not close: in-shot distances far below the threshold, cuts far above
    assert found.max_in_shot_score < DEFAULT_THRESHOLD / 3 < DEFAULT_THRESHOLD < min(c.score for c in found.cuts)


def test_one_scene_clip_has_no_cut(tmp_path):
    path = make_synthetic_video(tmp_path / "one.mp4", num_frames=24, fps=FPS, size=64, num_scenes=1, seed=2)
    found = scene_cuts(path)
    assert found.cuts == () and found.num_frames == 24 and found.max_in_shot_score < DEFAULT_THRESHOLD / 3


def test_sampled_detection_is_within_one_analysed_frame(tmp_path):
    path = make_synthetic_video(tmp_path / "two.mp4", num_frames=30, fps=FPS, size=64, num_scenes=2, seed=7)
    (truth,) = _true_cuts(30, 2)  # frame 15: 3.75 s, between the 1-fps samples at 3 s and 4 s
    found = scene_cuts(path, fps=1.0)
    assert found.num_frames == 8  # 0, 1, ..., 7 s
    assert len(found.cuts) == 1 and truth <= found.cuts[0].time_s <= truth + 1.0, (truth, found)


def test_min_gap_drops_a_cut_right_after_another(tmp_path):
    path = make_synthetic_video(tmp_path / "four.mp4", num_frames=16, fps=FPS, size=64, num_scenes=4, seed=3)
    assert list(scene_cuts(path).times) == [1.0, 2.0, 3.0]
    assert list(scene_cuts(path, min_gap_s=1.5).times) == [1.0, 3.0]


def test_distance_ignores_motion_and_tracks_colour_shift():
    grey = np.full((32, 32, 3), 100, np.uint8)
    moved_a, moved_b = grey.copy(), grey.copy()
    moved_a[0:8, 0:8] = 250
    moved_b[20:28, 10:18] = 250  # the same square elsewhere
    assert frame_distance(moved_a, moved_b) == 0.0
    assert frame_distance(grey, np.full_like(grey, 200)) == pytest.approx(100 / 256, abs=0.01)
    assert frame_distance(grey, np.full_like(grey, 102)) < 0.01  # compression-size noise across a bin edge


def test_bad_arguments_fail_by_name(tmp_path):
    path = make_synthetic_video(tmp_path / "clip.mp4", num_frames=4, fps=FPS, size=32, num_scenes=1)
    for kwargs, name in [({"threshold": 0}, "threshold"), ({"threshold": 1.5}, "threshold"), ({"fps": 0}, "fps"),
                         ({"analysis_side": 4}, "analysis_side"), ({"min_gap_s": -1}, "min_gap_s")]:
        with pytest.raises(ValueError, match=name):
            scene_cuts(path, **kwargs)
    with pytest.raises(VideoError, match="path.*missing.mp4"):
        scene_cuts(tmp_path / "missing.mp4")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x17" * 500)
    with pytest.raises(VideoError, match="corrupt.mp4"):
        scene_cuts(corrupt)
