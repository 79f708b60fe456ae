"""Shared fixtures. Engine/server tests share one engine per module (each start costs ~30-60 s on CPU)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("SGLANG_USE_CPU_ENGINE", "1")


@pytest.fixture(scope="session")
def tiny_vl_model() -> str:
    from mosaic_sglang.testing.tiny_models import build_tiny_model

    return str(build_tiny_model("qwen2_5_vl"))


@pytest.fixture(scope="session")
def tiny_text_model() -> str:
    from mosaic_sglang.testing.tiny_models import build_tiny_model

    return str(build_tiny_model("qwen2"))


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory):
    """Two different synthetic clips of the same length (same number of video tokens)."""
    from mosaic_sglang.frontend.video import make_synthetic_video

    d = tmp_path_factory.mktemp("videos")
    make_synthetic_video(d / "a.mp4", num_frames=16, size=112, num_scenes=2, seed=1)
    make_synthetic_video(d / "b.mp4", num_frames=16, size=112, num_scenes=2, seed=2)
    return d
