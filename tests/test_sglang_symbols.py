"""Every SGLang symbol the plugin hooks or subclasses still exists (an SGLang upgrade fails here)."""

import pkgutil

import pytest

from mosaic_sglang.integration.plugin import HOOKED_SYMBOLS


def test_sglang_version_is_pinned():
    import sglang

    assert sglang.__version__ == "0.5.23"


@pytest.mark.parametrize("symbol", HOOKED_SYMBOLS)
def test_hooked_symbol_resolves(symbol):
    assert pkgutil.resolve_name(symbol) is not None


def test_hook_signatures_match_what_we_override():
    import inspect

    from sglang.srt.managers.scheduler_components.output_streamer import SchedulerOutputStreamer
    from sglang.srt.mem_cache.unified_radix_cache import UnifiedRadixCache

    assert list(inspect.signature(UnifiedRadixCache.on_release).parameters) == ["self", "req", "checkpointed"]
    assert "has_additional_customized_info" in vars(SchedulerOutputStreamer)
    from sglang.srt.entrypoints.engine import Engine

    assert "server_args_class" in vars(Engine)
    from sglang.srt.mem_cache.memory_pool import ReqToTokenPool

    pool = ReqToTokenPool(size=2, max_context_len=4, device="cpu", enable_memory_saver=False)
    assert pool.free_slots == [1, 2]  # live rows = all rows but these (prefix_offload patches them)


def test_openai_fields_we_fill_exist():
    import inspect

    from sglang.srt.entrypoints.openai.protocol import ChatCompletionResponse
    from sglang.srt.entrypoints.openai.serving_chat import OpenAIServingChat

    assert "metadata" in ChatCompletionResponse.model_fields  # openai_stats puts metadata["mosaic"] there
    assert list(inspect.signature(OpenAIServingChat._build_chat_response).parameters) == ["self", "request", "ret", "created"]
    assert inspect.isasyncgenfunction(inspect.unwrap(OpenAIServingChat._generate_chat_stream))  # hooks wrap it


def test_frontend_language_symbols_we_extend():
    """`frontend/program_video.py` wraps the interpreter's video step and overrides the HTTP backend's
    media step: both must keep their names and signatures, and the executor its media list."""
    import inspect

    from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint
    from sglang.lang.interpreter import StreamExecutor
    from sglang.lang.ir import SglVideo

    from mosaic_sglang.frontend.program_video import VIDEO_EXECUTOR_TARGET, uninstall_video_executor

    uninstall_video_executor()
    assert pkgutil.resolve_name(VIDEO_EXECUTOR_TARGET) is StreamExecutor._execute_video
    assert list(inspect.signature(StreamExecutor._execute_video).parameters) == ["self", "expr"]
    assert list(inspect.signature(RuntimeEndpoint._add_images).parameters) == ["self", "s", "data"]
    assert list(inspect.signature(SglVideo.__init__).parameters) == ["self", "path", "num_frames"]
    assert "self.images_ = []" in inspect.getsource(StreamExecutor.__init__)
    assert "exes[i].images_ = list(self.images_)" in inspect.getsource(StreamExecutor.fork)  # forks keep videos
    # the finalizers call end(), which program_video replaces with a version without Thread.is_alive
    from sglang.lang.interpreter import ProgramState

    assert "self.end()" in inspect.getsource(StreamExecutor.__del__)
    assert "self.stream_executor.end()" in inspect.getsource(ProgramState.__del__)
    assert StreamExecutor.end.__name__ == "_end_executor"
    assert {"queue", "backend", "use_thread"} <= set(inspect.signature(StreamExecutor.__init__).parameters) | {"queue", "backend"}


def test_sglang_triton_kernels_we_call():
    """`kernels/sparse_extend` calls SGLang's `extend_attention_fwd` with 15 positional arguments, then
    keywords: the positional order and every keyword must still hold."""
    import inspect

    from sglang.kernels.ops.attention.extend_attention import extend_attention_fwd

    params = list(inspect.signature(extend_attention_fwd).parameters)
    assert params[:15] == ["q_extend", "k_extend", "v_extend", "o_extend", "k_buffer", "v_buffer", "qo_indptr",
                           "kv_indptr", "kv_indices", "custom_mask", "is_causal", "mask_indptr", "max_len_extend",
                           "k_scale", "v_scale"]
    assert {"sm_scale", "logit_cap", "sliding_window_size", "sinks", "page_size"} <= set(params)


def test_hicache_storage_api_the_spill_tier_uses(tmp_path):
    """`integration/hicache_spill.py`: the factory builds the file backend from a `HiCacheStorageConfig`
    without a host pool; ``set``/``get``/``clear`` keep their signatures; the private parts the adapter
    reads (its directory, key suffix, evictor switch, metadata cache) still exist."""
    import inspect

    from sglang.srt.mem_cache.hicache_storage import HiCacheFile, HiCacheStorageConfig
    from sglang.srt.mem_cache.storage.backend_factory import StorageBackendFactory

    assert list(inspect.signature(StorageBackendFactory.create_backend).parameters)[:3] == [
        "backend_name", "storage_config", "mem_pool_host"]
    assert list(inspect.signature(HiCacheFile.set).parameters)[:3] == ["self", "key", "value"]
    assert list(inspect.signature(HiCacheFile.get).parameters)[:3] == ["self", "key", "target_location"]
    config = HiCacheStorageConfig(tp_rank=0, tp_size=1, pp_rank=0, pp_size=1, attn_cp_rank=0, attn_cp_size=1,
                                  is_mla_model=False, enable_storage_metrics=False, is_page_first_layout=True,
                                  model_name="m", extra_config={"file_storage_path": str(tmp_path)})
    backend = StorageBackendFactory.create_backend("file", config, None)
    assert isinstance(backend, HiCacheFile) and backend.file_path == str(tmp_path)
    assert backend._get_suffixed_key("k").startswith("k") and backend._evictor.enabled is False
    assert hasattr(backend, "metadata_cache")


def test_tensor_parallel_symbols_mosaic_relies_on():
    """`integration/tensor_parallel.py`: the attention-TP group's concat-style ``all_gather(x, dim)`` and
    the rank-consensus checker's entry points; `frontend/router.py`: the router's launcher module."""
    import importlib.util
    import inspect

    from sglang.srt.distributed.parallel_state import GroupCoordinator, get_attn_tp_group
    from sglang.srt.environ import envs
    from sglang.srt.utils import rank_consensus_checker

    assert callable(get_attn_tp_group)
    assert list(inspect.signature(GroupCoordinator.all_gather).parameters)[:3] == ["self", "input_", "dim"]
    assert {"world_size", "rank_in_group"} <= set(inspect.getsource(GroupCoordinator.__init__).replace("self.", " ").split())
    assert callable(rank_consensus_checker.enabled) and callable(rank_consensus_checker.assert_same)
    assert hasattr(rank_consensus_checker, "_scheduler_thread")
    assert envs.SGLANG_ENABLE_RANK_CONSENSUS_CHECKER.get() in (False, True)
    assert importlib.util.find_spec("sglang_router.launch_router") is not None


def test_generate_request_takes_a_routed_dp_rank():
    """`VideoStream(routed_dp_rank=)` pins a streaming session's turns to one DP rank through this field."""
    import dataclasses

    from sglang.srt.managers.io_struct import GenerateReqInput

    assert "routed_dp_rank" in {f.name for f in dataclasses.fields(GenerateReqInput)}


def test_flashinfer_wrapper_api_the_mosaic_route_relies_on(monkeypatch):
    """The installed ``flashinfer`` (the version SGLang pins) still has what `FlashInferRunner` relies on: the
    two fa2 paged wrappers, the private page-list attribute their ``run`` reads at run time (named once in
    `attention/flashinfer_api.py`), and the parameters the runner passes; the fake FlashInfer the CPU tests
    drive the route with takes the same parameters in the same order."""
    import inspect
    import sys
    from pathlib import Path

    api_dir = Path(sys.prefix) / "flashinfer-api"  # scripts/setup_cpu_env.sh: outside SGLang's path
    if api_dir.is_dir():
        monkeypatch.syspath_prepend(str(api_dir))
    import flashinfer  # fails here if neither that folder nor an installed flashinfer exists

    from mosaic_sglang.attention import flashinfer_api as api
    from mosaic_sglang.testing import fake_flashinfer

    assert flashinfer.__version__ == "0.7.2"
    attr = f"self.{api.INDICES_BUFFER_ATTR}"
    for name in (api.DECODE_WRAPPER, api.PREFILL_WRAPPER):
        real, fake = getattr(flashinfer, name), getattr(fake_flashinfer, name)
        source = inspect.getsource(real)  # plan and run delegate to helpers of the class
        assert f"{attr} = " in source, f"{name} no longer keeps its page list in {attr}"
        assert f"{attr}," in source, f"{name} no longer hands {attr} to its kernels at run time"
        if name == api.DECODE_WRAPPER:  # its tensor-core and CUDA-core run paths each hand it to a kernel
            assert source.count(f"{attr},") >= 2, f"{name}: a run path no longer reads {attr}"
        assert '"fa2"' in source
        for method in ("__init__", "plan", "forward"):
            real_params = list(inspect.signature(getattr(real, method)).parameters)
            fake_sig = inspect.signature(getattr(fake, method)).parameters.items()
            fake_params = [p for p, v in fake_sig if v.kind == v.POSITIONAL_OR_KEYWORD]
            assert real_params[:len(fake_params)] == fake_params, (name, method, real_params, fake_params)
            keyword_only = {p: v.default for p, v in fake_sig if v.kind == v.KEYWORD_ONLY}
            real_defaults = {p: v.default for p, v in inspect.signature(getattr(real, method)).parameters.items()}
            for key, default in keyword_only.items():  # real names (and defaults where the real method shows them)
                assert key in real_defaults or f"{key}:" in source, (name, method, key)
                assert key not in real_defaults or real_defaults[key] == default, (name, method, key, default)
    decode, prefill = getattr(flashinfer, api.DECODE_WRAPPER), getattr(flashinfer, api.PREFILL_WRAPPER)
    assert {"kv_layout", "backend", "use_tensor_cores"} <= set(inspect.signature(decode.__init__).parameters)
    assert {"causal", "q_data_type", "kv_data_type", "non_blocking"} <= set(inspect.signature(prefill.plan).parameters)
    decode_source = inspect.getsource(decode)  # its plan takes **kwargs: the names its helpers read
    assert all(f"{key}:" in decode_source for key in ("q_data_type", "kv_data_type", "non_blocking"))
    assert "sm_scale" in inspect.signature(decode.forward).parameters
    assert {"causal", "sm_scale"} <= set(inspect.signature(prefill.forward).parameters)


def test_decode_graph_runner_pads_and_asks_as_the_hook_assumes():
    """`decode_graph_hook` pads a batch as the runner's ``load_batch`` does (``_pad_to_bucket(raw_bs,
    self.capture_bs)``), reads the runner's ``attn_backend``, and the runner builds the replay's metadata
    through the backend's ``init_forward_metadata_out_graph`` after ``can_run_graph`` (a padded view without
    request ids: the hook is where the real batch is planned)."""
    import inspect

    from sglang.srt.model_executor.runner import decode_cuda_graph_runner as dcr
    from sglang.srt.model_executor.runner.base_cuda_graph_runner import BaseCudaGraphRunner

    source = inspect.getsource(dcr.DecodeCudaGraphRunner)
    assert "self._pad_to_bucket(raw_bs, self.capture_bs)" in source
    assert "self.attn_backend.init_cuda_graph_state(self.max_bs, self.max_num_token)" in source
    assert "init_forward_metadata_out_graph(fb_view)" in source
    assert BaseCudaGraphRunner._pad_to_bucket(3, [1, 2, 4, 8]) == 4
    view = inspect.getsource(dcr.build_replay_fb_view)
    assert "rids" not in view and "batch_size=bs" in view


def test_resolved_graph_config_the_backend_checks():
    """`graph_phases` reads SGLang's resolved CUDA-graph configuration where SGLang's graph setup decides
    which runners to start (``check_cuda_graph_backend``), not the ``--disable-*-cuda-graph`` switches."""
    import inspect

    from sglang.srt.model_executor import cuda_graph_config
    from sglang.srt.model_executor.cuda_graph_config import Backend
    from sglang.srt.model_executor.model_runner_components import cuda_graph_setup

    from mosaic_sglang.integration.graph_phases import resolved_graph_config

    assert "get_exec().graph.cuda_graph_config" in inspect.getsource(cuda_graph_config.check_cuda_graph_backend)
    setup = inspect.getsource(cuda_graph_setup)
    assert "check_cuda_graph_backend(Phase.PREFILL, Backend.DISABLED)" in setup
    assert "Phase.DECODE, Backend.DISABLED" in setup
    config = resolved_graph_config()  # None until SGLang publishes it in this process (other tests may have)
    assert config is None or {config.prefill.backend, config.decode.backend} <= set(Backend.ALL)


def test_idle_leak_check_the_host_row_check_extends():
    """`host_row_check` runs after SGLang's idle request-pool check and reports through its ``_report_leak``
    (which raises under the strict idle check): both keep their signatures, and the idle path still calls
    the request-pool check."""
    import inspect

    from sglang.srt.managers import scheduler
    from sglang.srt.managers.scheduler_components.invariant_checker import SchedulerInvariantChecker
    from sglang.srt.mem_cache.unified_radix_cache import UnifiedRadixCache

    assert list(inspect.signature(SchedulerInvariantChecker._check_req_pool).parameters) == ["self"]
    assert list(inspect.signature(SchedulerInvariantChecker._report_leak).parameters) == ["self", "pool_name",
                                                                                           "token_msg"]
    assert list(inspect.signature(UnifiedRadixCache.all_values_flatten).parameters) == ["self"]
    assert "self.invariant_checker._check_req_pool()" in inspect.getsource(scheduler)


def test_forward_batch_fields_the_backend_plans_from():
    """`_plan_forward` reads these per forward; ``orig_seq_lens`` (a request's unchunked length: its prompt
    ends in the forward whose seq_len reaches it) is what `regroup_tail` waits for."""
    import dataclasses
    import inspect

    from sglang.srt.managers.schedule_batch import ScheduleBatch
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch

    fields = {f.name for f in dataclasses.fields(ForwardBatch)}
    assert {"orig_seq_lens", "seq_lens", "seq_lens_cpu", "extend_prefix_lens", "extend_prefix_lens_cpu",
            "req_pool_indices", "out_cache_loc", "mm_inputs", "rids", "forward_mode", "is_prefill_only"} <= fields
    # the scheduler sets it to max(extend end, prompt length) per request of an extend batch
    assert "max(r.extend_end, len(r.origin_input_ids))" in inspect.getsource(ScheduleBatch)
    # a batch is prefill-only when every request is (max_new_tokens == 0): no prompt in it ends in a question
    assert "is_prefill_only=all(req.is_prefill_only for req in reqs)" in inspect.getsource(ScheduleBatch)
    assert "is_prefill_only=batch.is_prefill_only" in inspect.getsource(ForwardBatch)
