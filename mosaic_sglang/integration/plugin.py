"""SGLang plugin entry point (``[project.entry-points."sglang.srt.plugins"] mosaic``).

SGLang's ``load_plugins()`` calls `register` early in every process it starts (launcher, Engine,
scheduler, detokenizer), so registrations made here reach the spawned scheduler too. Every SGLang
symbol touched is listed in `HOOKED_SYMBOLS`; a test resolves each one so an upgrade fails loudly.
"""

from __future__ import annotations

import logging

__all__ = ["register", "HOOKED_SYMBOLS"]

logger = logging.getLogger(__name__)

HOOKED_SYMBOLS = (
    "sglang.srt.server_args.add_attention_backend_choices",
    "sglang.srt.server_args.ServerArgs.add_cli_args",
    "sglang.srt.server_args.prepare_server_args",
    "sglang.srt.layers.attention.attention_registry.register_attention_backend",
    "sglang.srt.layers.attention.attention_registry.ATTENTION_BACKENDS",
    "sglang.srt.layers.attention.torch_native_backend.TorchNativeAttnBackend",
    "sglang.srt.layers.attention.torch_native_backend.TorchNativeAttnBackend.init_forward_metadata",
    "sglang.srt.layers.attention.torch_native_backend.TorchNativeAttnBackend.forward_extend",
    "sglang.srt.layers.attention.torch_native_backend.TorchNativeAttnBackend.forward_decode",
    "sglang.srt.layers.radix_attention.AttentionType",
    "sglang.srt.mem_cache.memory_pool.KVWriteLoc",
    "sglang.srt.mem_cache.registry.register_radix_cache_backend",
    "sglang.srt.mem_cache.registry.registered_radix_cache_backends",
    "sglang.srt.mem_cache.registry.create_unified_radix_cache",
    "sglang.srt.mem_cache.unified_radix_cache.UnifiedRadixCache",
    "sglang.srt.mem_cache.unified_radix_cache.UnifiedRadixCache.on_release",
    "sglang.srt.mem_cache.unified_radix_cache.UnifiedRadixCache.reset",
    "sglang.srt.mem_cache.unified_radix_cache.UnifiedRadixCache.checkpoint",
    "sglang.srt.mem_cache.unified_radix_cache.UnifiedRadixCache.checkpoint_into_tree",
    "sglang.srt.mem_cache.unified_radix_cache.UnifiedRadixCache.free_kv_row",
    "sglang.srt.mem_cache.unified_radix_cache.UnifiedRadixCache.claim_kv_row",
    "sglang.srt.mem_cache.unified_radix_cache.UnifiedRadixCache.protected_size",
    "sglang.srt.mem_cache.unified_radix_cache.UnifiedRadixCache.full_protected_size",
    "sglang.srt.session.streaming_session.is_virtual_node",
    "sglang.srt.managers.scheduler_components.invariant_checker.SchedulerInvariantChecker._check_req_pool",
    "sglang.srt.managers.scheduler_components.invariant_checker.SchedulerInvariantChecker._report_leak",
    "sglang.srt.mem_cache.unified_radix_cache.UnifiedRadixCache.all_values_flatten",
    "sglang.srt.mem_cache.allocator.base.BaseTokenToKVPoolAllocator.alloc",
    "sglang.srt.mem_cache.allocator.base.BaseTokenToKVPoolAllocator.free",
    "sglang.srt.mem_cache.unified_cache.components.full.FullComponent.apply_component_action",
    "sglang.srt.mem_cache.unified_cache.components.base.ComponentType",
    "sglang.srt.mem_cache.unified_cache.cache_action.FreeComponentDeviceSlot",
    "sglang.srt.mem_cache.unified_cache.cache_action.FreeDeviceKV",
    "sglang.srt.mem_cache.unified_cache.components.full.FullComponent.reclaimable_value_len",
    "sglang.srt.mem_cache.unified_radix_cache.UnifiedRadixCache._apply_cache_action",
    "sglang.srt.mem_cache.unified_radix_cache.UnifiedRadixCache.path_device_indices",
    "sglang.srt.mem_cache.unified_cache.unified_tree_core.UnifiedTreeCore.adjust_component_size",
    "sglang.srt.mem_cache.unified_cache.unified_tree_core.UnifiedTreeCore.node_by_id",
    "sglang.srt.mem_cache.memory_pool.ReqToTokenPool",
    "sglang.srt.managers.scheduler.Scheduler.get_output_streamer_class",
    "sglang.srt.managers.scheduler_components.output_streamer.SchedulerOutputStreamer",
    "sglang.srt.managers.scheduler_components.output_streamer.SchedulerOutputStreamer.build_additional_customized_info",
    "sglang.srt.entrypoints.engine.Engine.server_args_class",
    "sglang.srt.plugins.hook_registry.HookRegistry.register",
    "sglang.srt.server_args.ServerArgs.allowed_media_domains",
    "sglang.srt.managers.tokenizer_manager.TokenizerManager.__init__",
    "sglang.srt.managers.tokenizer_manager.TokenizerManager._validate_mm_limits",
    "sglang.srt.utils.common._assert_media_url_allowed",
    "sglang.srt.utils.video_decoder.VideoDecoderWrapper.__init__",
    "sglang.srt.entrypoints.openai.serving_chat.OpenAIServingChat._build_chat_response",
    "sglang.srt.entrypoints.openai.serving_chat.OpenAIServingChat._generate_chat_stream",
    "sglang.srt.managers.tokenizer_manager.TokenizerManager.generate_request",
    "sglang.srt.model_executor.model_runner.ModelRunner.forward",
    "sglang.srt.layers.attention.vision.VisionSdpaAttention.forward",
    "sglang.srt.multimodal.processors.qwen_vl._get_processor_video_config",
    "sglang.srt.multimodal.processors.base_processor.BaseMultimodalProcessor.process_mm_data",
    "sglang.srt.model_executor.runner.decode_cuda_graph_runner.DecodeCudaGraphRunner.can_run_graph",
    "sglang.srt.model_executor.runner.base_cuda_graph_runner.BaseCudaGraphRunner._pad_to_bucket",
    "sglang.srt.layers.attention.base_attn_backend.SharedReadEnds.POST_REPLAY",
    "sglang.srt.layers.attention.base_attn_backend.AttentionBackend.shared_read_ends",
    "sglang.srt.layers.attention.base_attn_backend.AttentionBackend.init_forward_metadata_out_graph",
)

_STREAMER_TARGET = "sglang.srt.managers.scheduler.Scheduler.get_output_streamer_class"


def register() -> None:
    """Register the ``mosaic`` attention and radix-cache backends, the launch flags and the Engine
    keyword arguments. Idempotent."""
    from sglang.srt.entrypoints.engine import Engine
    from sglang.srt.layers.attention.attention_registry import ATTENTION_BACKENDS, register_attention_backend
    from sglang.srt.mem_cache.registry import register_radix_cache_backend, registered_radix_cache_backends
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType
    from sglang.srt.server_args import ATTENTION_BACKEND_CHOICES, add_attention_backend_choices

    from .launch_flags import MosaicEngineArgs, add_mosaic_cli_args, prepare_server_args_with_mosaic
    from .cpu_compat.vision_attention import register_vision_attention
    from .decode_graph_hook import register_decode_graph_hook
    from .forward_timer import register_forward_timer
    from .host_row_check import register_host_row_check
    from .media_guard import register_media_guard
    from .openai_stats import register_openai_stats
    from .options import MOSAIC_BACKEND
    from .output_streamer import output_streamer_class_hook
    from .radix_cache import create_mosaic_radix_cache
    from .video_timestamps import register_video_timestamps

    if MOSAIC_BACKEND not in ATTENTION_BACKEND_CHOICES:
        add_attention_backend_choices([MOSAIC_BACKEND])
    if MOSAIC_BACKEND not in ATTENTION_BACKENDS:
        register_attention_backend(MOSAIC_BACKEND)(_create_attention_backend)
    if MOSAIC_BACKEND not in registered_radix_cache_backends():
        register_radix_cache_backend(MOSAIC_BACKEND, create_mosaic_radix_cache)
    if getattr(register, "_hooks_registered", False):
        return
    HookRegistry.register("sglang.srt.server_args.ServerArgs.add_cli_args", add_mosaic_cli_args, HookType.AFTER)
    HookRegistry.register(
        "sglang.srt.server_args.prepare_server_args", prepare_server_args_with_mosaic, HookType.AROUND
    )
    HookRegistry.register(_STREAMER_TARGET, output_streamer_class_hook, HookType.AROUND)
    register_media_guard(HookRegistry, HookType)
    register_openai_stats(HookRegistry, HookType)
    register_forward_timer(HookRegistry, HookType)  # only with MOSAIC_FORWARD_LOG_DIR set
    register_decode_graph_hook(HookRegistry, HookType)  # Mosaic's decode steps replay only when they fit
    register_vision_attention(HookRegistry, HookType)  # only without CUDA
    register_video_timestamps(HookRegistry, HookType)  # Qwen2.5-VL: the sampled frames' real time span
    register_host_row_check(HookRegistry, HookType)  # SGLang's idle leak check also covers the host tier
    # A documented class attribute meant for this (not a HookRegistry REPLACE: that would also rebind
    # every module's `ServerArgs` name to the replacement).
    Engine.server_args_class = MosaicEngineArgs
    register._hooks_registered = True
    logger.debug("mosaic-sglang plugin registered")


def _create_attention_backend(model_runner):
    from .attention_backend import MosaicAttnBackend

    return MosaicAttnBackend(model_runner)
