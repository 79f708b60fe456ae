"""Qwen2.5-VL video timestamps from the frames SGLang actually sampled.

Qwen2.5-VL places a video's temporal groups on the time axis of its M-RoPE with ``second_per_grid_ts``
(seconds per temporal group), which the Hugging Face processor derives from the sampling metadata of each
video (``VideoMetadata.sampled_fps``). SGLang 0.5.23 samples the frames itself (``preprocess_video``,
metadata: source fps, frame count, sampled indices) but hands that metadata to the processor only for the
Qwen3-VL family; for Qwen2.5-VL the processor sees bare frames, assumes 24 fps, and a 6-minute clip
sampled to 32 frames is placed on 1.3 s of model time (measured: ``second_per_grid_ts`` 0.083 instead
of 22.5). Every video question about "when" is then answered against the wrong clock.

Two AROUND hooks, registered in every process by `plugin.register` (dense and Mosaic engines alike, so
both see the same positions):

* on ``qwen_vl._get_processor_video_config`` (what SGLang forwards to the processor as video kwargs,
  called with the sampling metadata): also forward the metadata with ``do_sample_frames=False``, the
  pair SGLang already passes for Qwen3-VL;
* on ``BaseMultimodalProcessor.process_mm_data``: where SGLang passes ``video_metadata`` itself (the
  Qwen3-VL family), drop the copy, so the processor never receives the keyword twice.
"""

from __future__ import annotations

__all__ = ["VIDEO_CONFIG_TARGET", "PROCESS_MM_TARGET", "with_sampling_metadata", "register_video_timestamps"]

VIDEO_CONFIG_TARGET = "sglang.srt.multimodal.processors.qwen_vl._get_processor_video_config"
PROCESS_MM_TARGET = "sglang.srt.multimodal.processors.base_processor.BaseMultimodalProcessor.process_mm_data"

_ADDED = ("video_metadata", "do_sample_frames")


def with_sampling_metadata(original, video_config, video_metadata):
    """SGLang's processor video config plus the sampling metadata (None stays None: SGLang did not
    sample, e.g. pre-decoded frames, and the processor keeps its own behaviour)."""
    config = original(video_config, video_metadata)
    if config is None:
        return None
    return {**config, "video_metadata": list(video_metadata), "do_sample_frames": False}


def _process_without_duplicates(original, self, *args, processor_video_config=None, **kwargs):
    if processor_video_config and "video_metadata" in kwargs:  # SGLang passed it already (Qwen3-VL family)
        processor_video_config = {k: v for k, v in processor_video_config.items() if k not in _ADDED}
    return original(self, *args, processor_video_config=processor_video_config, **kwargs)


def register_video_timestamps(registry, hook_type) -> None:
    registry.register(VIDEO_CONFIG_TARGET, with_sampling_metadata, hook_type.AROUND)
    registry.register(PROCESS_MM_TARGET, _process_without_duplicates, hook_type.AROUND)
