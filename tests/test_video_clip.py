"""Frontend clip sampling (`frontend/video_clip.py`) and the clip cache: the frames a user asks for,
the right timestamps, and a clip the server reads back as exactly those frames over the real time span
(SGLang's own video decoder reads it here)."""

from __future__ import annotations

import numpy as np
import pytest

from mosaic_sglang.frontend.clip_cache import ClipCache
from mosaic_sglang.frontend.video import VideoError, make_synthetic_video
from mosaic_sglang.frontend.video_clip import ClipOptions, encode_clip, sample_clip


@pytest.fixture(scope="module")
def six_minutes(tmp_path_factory):
    """A 6-minute clip at 1 fps (360 frames), two scenes."""
    return make_synthetic_video(tmp_path_factory.mktemp("clip") / "six.mp4", num_frames=360, fps=1, size=64)


def test_six_minutes_at_one_fps_capped_to_32_frames(six_minutes):
    from sglang.srt.utils.video_decoder import VideoDecoderWrapper

    clip = sample_clip(six_minutes, ClipOptions(fps=1, max_frames=32))
    assert clip.num_frames == 32 and clip.frames.shape == (32, 64, 64, 3)
    assert clip.timestamps[0] == 0 and clip.timestamps[-1] >= 355  # spans the 6 minutes
    assert np.all(np.diff(clip.timestamps) > 10)  # evenly spread, not the first 32 seconds
    assert abs(clip.source_duration_s - 360) < 1.5
    decoded = VideoDecoderWrapper(encode_clip(clip), device="cpu")  # what the server does with it
    assert len(decoded) == 32
    assert 355 <= len(decoded) / decoded.avg_fps <= 380  # the server sees ~6 minutes of video


def test_time_range_fps_and_resolution_cap(six_minutes):
    clip = sample_clip(six_minutes, ClipOptions(fps=0.5, max_frames=None, start=100, end=120, max_side=32))
    assert clip.num_frames == 10  # 100, 102, ..., 118 (+120 rounded off to an even count)
    assert np.allclose(clip.timestamps, np.arange(100, 120, 2))
    assert clip.frames.shape[1:] == (32, 32, 3)
    # asking for more than the file's rate gives the file's frames, not duplicates
    dense = sample_clip(six_minutes, ClipOptions(fps=8, max_frames=None, start=10, end=20))
    assert len(set(dense.timestamps.tolist())) == dense.num_frames == 10


def test_single_frame_range_is_one_temporal_pair(six_minutes):
    clip = sample_clip(six_minutes, ClipOptions(fps=1, max_frames=2, start=30, end=30.5))
    assert clip.num_frames == 2 and np.array_equal(clip.frames[0], clip.frames[1])


@pytest.mark.parametrize("options, name", [
    (dict(max_frames=0), "max_frames"), (dict(fps=0), "fps"), (dict(fps=float("nan")), "fps"),
    (dict(start=-1), "start"), (dict(start=5, end=2), "start/end"), (dict(max_side=10), "max_side"),
    (dict(max_frames=1), "max_frames"),  # below one temporal pair
])
def test_bad_options_name_the_argument(options, name):
    with pytest.raises(ValueError, match=name):
        ClipOptions(**options).check()


def test_bad_files_raise_video_error(six_minutes, tmp_path):
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(six_minutes.read_bytes()[:600])
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 40)
    for path in (tmp_path / "missing.mp4", truncated, garbage):
        with pytest.raises(VideoError, match=path.name):
            sample_clip(path)
    with pytest.raises(VideoError, match="past the end"):
        sample_clip(six_minutes, ClipOptions(start=400))


def test_clip_cache_decodes_once_per_content_and_options(six_minutes, tmp_path):
    cache = ClipCache()
    url, clip = cache.get(six_minutes, ClipOptions(max_frames=8))
    again, _ = cache.get(six_minutes, ClipOptions(max_frames=8))
    copy = tmp_path / "copy.mp4"  # same bytes under another name: same entry
    copy.write_bytes(six_minutes.read_bytes())
    cache.get(copy, ClipOptions(max_frames=8))
    assert (cache.decodes, cache.hits, again) == (1, 2, url)
    cache.get(six_minutes, ClipOptions(max_frames=4))
    assert cache.decodes == 2 and len(cache) == 2
    small = ClipCache(max_bytes=cache.nbytes // 2 + 1)  # room for one of the two
    small.get(six_minutes, ClipOptions(max_frames=8))
    small.get(six_minutes, ClipOptions(max_frames=4))
    assert len(small) == 1 and small.nbytes <= small.max_bytes
    assert url.startswith("data:video/mp4;base64,") and clip.num_frames == 8
    with pytest.raises(ValueError, match="max_bytes"):
        ClipCache(max_bytes=-1)


def test_clip_cache_decodes_once_when_threads_miss_together(six_minutes):
    from concurrent.futures import ThreadPoolExecutor

    cache = ClipCache()
    with ThreadPoolExecutor(4) as pool:  # run_batch runs programs on threads like these
        urls = list(pool.map(lambda _: cache.get(six_minutes, ClipOptions(max_frames=6))[0], range(8)))
    assert cache.decodes == 1 and cache.hits == 7 and len(set(urls)) == 1
    assert not cache._decoding  # no per-clip lock left behind


@pytest.mark.parametrize("name", ["zero_length.mp4", "truncated.mp4", "corrupt_header.mp4", "text.mp4", "text.txt",
                                  "png_renamed.mp4", "jpeg_renamed.mp4", "playlist.m3u8", "concat.txt",
                                  "audio_only.mp4", "empty_track.mp4"])
def test_bad_media_corpus_files_raise_video_error(name, tmp_path_factory):
    """The server's bad-media corpus, client side: each file is refused by name, none read as video
    (the playlist and concat files would make FFmpeg open other files or URLs if probed)."""
    from mosaic_sglang.testing.bad_media import write_corpus

    root = tmp_path_factory.getbasetemp() / "bad-media-corpus"
    if not (root / "ok.mp4").exists():
        write_corpus(root)
    with pytest.raises(VideoError, match=name.replace(".", r"\.")):
        sample_clip(root / name, ClipOptions(max_frames=4))
    assert sample_clip(root / "ok.mp4", ClipOptions(max_frames=2)).num_frames == 2
