"""Qwen2.5-VL video timestamps (`integration/video_timestamps.py`): SGLang's own processor, in an
`sgl.Engine`'s tokenizer process, places a 6-minute clip sampled to 32 frames on 6 minutes of M-RoPE
time (without the hook: 1.3 s, ``second_per_grid_ts`` 0.083), and the Qwen3-VL path never gets the
metadata keyword twice."""

from __future__ import annotations

import asyncio

import pytest

from engine_support import VIDEO_PROMPT, cpu_engine_kwargs
from mosaic_sglang.integration.video_timestamps import _process_without_duplicates, with_sampling_metadata


def test_metadata_is_forwarded_only_when_sglang_sampled():
    config = lambda video_config, metadata: None if metadata is None else dict(video_config)  # noqa: E731
    assert with_sampling_metadata(config, {"x": 1}, None) is None
    meta = [{"fps": 1.0, "total_num_frames": 4, "frames_indices": [0, 3]}]
    assert with_sampling_metadata(config, {"x": 1}, meta) == {"x": 1, "video_metadata": meta, "do_sample_frames": False}


def test_qwen3_path_does_not_pass_metadata_twice():
    seen = {}

    def original(self, text, processor_video_config=None, **kwargs):
        seen.update(config=processor_video_config, kwargs=kwargs)

    ours = {"max_pixels": 9, "video_metadata": ["m"], "do_sample_frames": False}
    _process_without_duplicates(original, None, "t", processor_video_config=ours, video_metadata=["m"], do_sample_frames=False)
    assert seen["config"] == {"max_pixels": 9} and seen["kwargs"]["video_metadata"] == ["m"]
    _process_without_duplicates(original, None, "t", processor_video_config=ours)  # Qwen2.5-VL: kept
    assert seen["config"] == ours


@pytest.mark.engine
@pytest.mark.timeout(300)
def test_six_minute_clip_spans_six_minutes_of_model_time(tiny_vl_model, tmp_path):
    import sglang as sgl
    from sglang.srt.managers.io_struct import GenerateReqInput

    from mosaic_sglang.frontend.video import make_synthetic_video
    from mosaic_sglang.frontend.video_clip import ClipOptions, clip_data_url, sample_clip

    path = make_synthetic_video(tmp_path / "six.mp4", num_frames=360, fps=1, size=64)
    clip = sample_clip(path, ClipOptions(fps=1, max_frames=32))
    request = GenerateReqInput(text=VIDEO_PROMPT.format(question="when?"), video_data=[clip_data_url(clip)])
    engine = sgl.Engine(**cpu_engine_kwargs(tiny_vl_model, attention_backend="torch_native"))
    try:
        processor = engine.tokenizer_manager.mm_processor  # the tokenizer manager runs in this process
        out = asyncio.run(processor.process_mm_data_async(image_data=[], input_text=request.text, request_obj=request))
        tokens_per_second = engine.tokenizer_manager.model_config.hf_config.vision_config.tokens_per_second
    finally:
        engine.shutdown()
    (video,) = [item for item in out.mm_items if item.is_video()]
    seconds_per_group = float(video.model_specific_data["second_per_grid_ts"][0])
    groups = clip.num_frames // 2  # Qwen-VL merges frames in pairs
    assert seconds_per_group == pytest.approx(2 / clip.sampled_fps, rel=1e-3)  # 2 frames at 31/359 fps
    assert 355 <= groups * seconds_per_group <= 380  # the model is told about 6 minutes of video
    # the video's own tokens: their temporal M-RoPE index spans (groups - 1) groups of that many seconds
    (start, end), = video.offsets
    temporal = out.mrope_positions[0, start : end + 1]
    want = (groups - 1) * seconds_per_group * tokens_per_second
    assert abs(int(temporal.max() - temporal.min()) - want) <= 1, (int(temporal.max() - temporal.min()), want)
