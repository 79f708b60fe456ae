"""Launch flags: listed in --help, validated before anything starts, honoured by Engine kwargs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mosaic_sglang import MosaicConfigError
from mosaic_sglang.integration.launch_flags import apply_mosaic_kwargs
from mosaic_sglang.config import MOSAIC_CONFIG

ENV_CONFIG = MOSAIC_CONFIG.name


BAD_OPTIONS = [
    (["--mosaic-config", '{"bugdet": 3}'], "unknown key(s) ['bugdet']"),
    (["--mosaic-config", '{"recent_window": -2}'], "'recent_window': expected an integer >= 0, got -2"),
    (["--mosaic-budget", "lots"], "--mosaic-budget: expected an integer >= 0, got 'lots'"),
    (["--mosaic-config", '{"score": "cosine"}'], "'score': expected one of"),
    (["--mosaic-config", '{"host_store_tokens": 100}', "--pp-size", "2"], "offload needs pp_size == 1"),
    (["--mosaic-budget", "5", "--mosaic-config", '{"budget": 6}'], "budget given twice"),
    (["--mosaic-config", '{"allowed_media_dirs": "/data"}'], "'allowed_media_dirs': expected a list"),
]
LAUNCHES_AT_ONCE = 3
"""Each launch spends ~15 s importing SGLang on one core: a few at a time share the two cores (measured
sequentially: 9 launches took ~150 s of the suite)."""


@pytest.fixture(scope="module")
def launches(tiny_text_model) -> dict:
    """Every `sglang.launch_server` command line this file checks, run a few at a time: argv tuple -> result."""
    from concurrent.futures import ThreadPoolExecutor

    commands = [("--help",), ("--model-path", tiny_text_model, "--mosaic-budget", "64", "--port", "1")]
    commands += [("--model-path", tiny_text_model, "--enable-mosaic", *bad, "--port", "1") for bad, _ in BAD_OPTIONS]

    def launch(args):
        return subprocess.run([sys.executable, "-m", "sglang.launch_server", *args], capture_output=True, text=True,
                              timeout=240)

    with ThreadPoolExecutor(LAUNCHES_AT_ONCE) as pool:
        return dict(zip(commands, pool.map(launch, commands)))


@pytest.mark.engine  # starts `sglang.launch_server` (imports all of SGLang)
def test_help_lists_mosaic_flags(launches):
    out = launches[("--help",)]
    assert out.returncode == 0, out.stderr[-2000:]
    for flag in ("--enable-mosaic", "--mosaic-budget", "--mosaic-config"):
        assert flag in out.stdout
    assert "mosaic" in out.stdout.split("--attention-backend", 1)[1][:2000]


@pytest.mark.engine  # each case starts `sglang.launch_server`, which must stop before any scheduler starts
@pytest.mark.parametrize("bad, message", BAD_OPTIONS)
def test_bad_options_fail_fast_before_any_process_starts(launches, tiny_text_model, bad, message):
    out = launches[("--model-path", tiny_text_model, "--enable-mosaic", *bad, "--port", "1")]
    assert out.returncode == 2, out.stderr[-2000:]
    assert message in out.stderr
    assert "scheduler" not in out.stderr.lower() and "uvicorn" not in out.stderr.lower()


@pytest.mark.engine
def test_mosaic_options_without_enable_mosaic_stop_the_launch(launches, tiny_text_model):
    out = launches[("--model-path", tiny_text_model, "--mosaic-budget", "64", "--port", "1")]
    assert out.returncode == 2, out.stderr[-2000:]
    assert "--mosaic-budget given without --enable-mosaic" in out.stderr


def test_prepare_server_args_selects_mosaic_backends(tiny_text_model, monkeypatch):
    from sglang.srt.plugins import load_plugins

    load_plugins()  # before importing the hooked function (a local name would keep the unhooked one)
    from sglang.srt.server_args import prepare_server_args

    monkeypatch.delenv(ENV_CONFIG, raising=False)
    args = prepare_server_args(
        ["--model-path", tiny_text_model, "--enable-mosaic", "--mosaic-budget", "7", "--mosaic-config", '{"recent_window": 9}']
    )
    assert args.attention_backend == "mosaic"
    assert args.radix_cache_backend == "mosaic"
    assert args.disable_decode_cuda_graph and args.disable_prefill_cuda_graph
    assert args.enable_cache_report  # OpenAI usage reports the cached video prefix
    exported = json.loads(os.environ[ENV_CONFIG])
    assert exported["budget"] == 7 and exported["recent_window"] == 9
    assert exported["allowed_media_dirs"] == []  # the HTTP server's default: no local media path


def test_engine_kwargs_are_consumed_and_validated(monkeypatch):
    monkeypatch.delenv(ENV_CONFIG, raising=False)
    kwargs = apply_mosaic_kwargs({"model_path": "m", "enable_mosaic": True, "mosaic_budget": 5})
    assert kwargs == {
        "model_path": "m",
        "attention_backend": "mosaic",
        "radix_cache_backend": "mosaic",
        "disable_decode_cuda_graph": True,
        "disable_prefill_cuda_graph": True,
        "enable_cache_report": True,
    }
    assert json.loads(os.environ[ENV_CONFIG])["budget"] == 5
    with pytest.raises(MosaicConfigError, match="'sink_tokens'"):
        apply_mosaic_kwargs({"enable_mosaic": True, "mosaic_config": {"sink_tokens": -1}})
    with pytest.raises(ValueError, match="attention_backend='mosaic' or unset, got 'triton'"):
        apply_mosaic_kwargs({"enable_mosaic": True, "attention_backend": "triton"})
    assert json.loads(os.environ[ENV_CONFIG])["allowed_media_dirs"] is None  # Engine: the caller's own paths
    with pytest.raises(MosaicConfigError, match="mosaic_budget given without enable_mosaic=True"):
        apply_mosaic_kwargs({"model_path": "m", "mosaic_budget": 5})
    with pytest.raises(MosaicConfigError, match="budget given twice"):
        apply_mosaic_kwargs({"enable_mosaic": True, "mosaic_budget": 5, "mosaic_config": {"budget": 4}})
    graphs = apply_mosaic_kwargs({"enable_mosaic": True, "mosaic_config": {"graph_text_tokens": 256,
                                                                         "selection_heads": "shared"}})
    assert "disable_decode_cuda_graph" not in graphs and graphs["disable_prefill_cuda_graph"]  # decode graphs stay on
    assert "attention_backend" not in apply_mosaic_kwargs({"model_path": "m"})  # plain SGLang untouched
    apply_mosaic_kwargs({"attention_backend": "mosaic", "mosaic_budget": 5})  # the backend flag enables it too


def test_engine_server_args_class_builds_plain_server_args(tiny_text_model):
    from sglang.srt.entrypoints.engine import Engine
    from sglang.srt.plugins import load_plugins
    from sglang.srt.server_args import ServerArgs

    load_plugins()
    args = Engine.server_args_class(model_path=tiny_text_model, enable_mosaic=True)
    assert type(args) is ServerArgs
    assert args.attention_backend == "mosaic"


def test_offload_is_allowed_with_tensor_and_refused_with_pipeline_parallelism():
    from types import SimpleNamespace

    from mosaic_sglang import MosaicConfig
    from mosaic_sglang.integration.launch_flags import check_parallelism

    offload = MosaicConfig(host_store_tokens=64)
    check_parallelism(offload, SimpleNamespace(tp_size=1, pp_size=1))
    check_parallelism(offload, SimpleNamespace(tp_size=2, pp_size=1))  # rank-consistent decisions (tensor_parallel.py)
    check_parallelism(MosaicConfig(), SimpleNamespace(tp_size=4, pp_size=2))  # no offload: fine
    for ranks in ({"tp_size": 1, "pp_size": 2}, {"tp_size": 2, "pp_size": 2}):
        with pytest.raises(MosaicConfigError, match="'host_store_tokens'.*expected 0 with pp_size"):
            check_parallelism(offload, SimpleNamespace(**ranks))


def test_per_kv_head_selection_is_accepted_at_launch_with_tensor_parallelism():
    """Served under TP (each rank attends its own heads' block of every head's lists): no refusal, with the
    host tier too; pipeline parallelism still refuses offload."""
    from types import SimpleNamespace

    from mosaic_sglang import MosaicConfig
    from mosaic_sglang.integration.launch_flags import check_parallelism

    per_head = MosaicConfig(selection_heads="per_kv_head", host_store_tokens=64)
    for ranks in ({"tp_size": 1, "pp_size": 1}, {"tp_size": 2}, {"tp_size": 4, "dp_size": 2, "enable_dp_attention": True}):
        check_parallelism(per_head, SimpleNamespace(**ranks))
    with pytest.raises(MosaicConfigError, match="'host_store_tokens'.*pp_size"):
        check_parallelism(per_head, SimpleNamespace(tp_size=2, pp_size=2))


def test_what_the_attention_backend_cannot_plan_is_refused_at_launch():
    """Speculative decoding and DP attention would reach batches Mosaic does not plan: refused, naming the
    option; data parallelism by replicas (``dp_size`` without DP attention) is not."""
    from types import SimpleNamespace

    from mosaic_sglang.config import MosaicConfigError
    from mosaic_sglang.integration.launch_flags import check_unsupported

    for options, name in (({"speculative_algorithm": "EAGLE"}, "speculative-algorithm"),
                          ({"enable_dp_attention": True, "dp_size": 2}, "enable-dp-attention")):
        with pytest.raises(MosaicConfigError, match=f"--{name}: expected"):
            check_unsupported(SimpleNamespace(attention_backend="mosaic", **options))
        check_unsupported(SimpleNamespace(attention_backend="flashinfer", **options))  # not ours to refuse
    check_unsupported(SimpleNamespace(attention_backend="mosaic", dp_size=2, enable_dp_attention=False,
                                      speculative_algorithm=None))


def test_quantized_kv_and_graph_incompatible_options_are_refused():
    from types import SimpleNamespace

    from mosaic_sglang import MosaicConfig
    from mosaic_sglang.config import MosaicConfigError
    from mosaic_sglang.integration.launch_flags import check_graph_options, check_unsupported

    with pytest.raises(MosaicConfigError, match="--kv-cache-dtype fp8_e4m3: expected"):
        check_unsupported(SimpleNamespace(attention_backend="mosaic", kv_cache_dtype="fp8_e4m3"))
    check_unsupported(SimpleNamespace(attention_backend="mosaic", kv_cache_dtype="auto"))
    graphs, eager = MosaicConfig(graph_text_tokens=256, selection_heads="shared"), MosaicConfig()
    for name in ("enable_two_batch_overlap", "enable_pdmux"):
        args = SimpleNamespace(attention_backend="mosaic", **{name: True})
        with pytest.raises(MosaicConfigError, match=f"'graph_text_tokens': expected 0 with --{name.replace('_', '-')}"):
            check_graph_options(graphs, args)
        check_graph_options(eager, args)  # eager decode: nothing replays
    with pytest.raises(MosaicConfigError, match="'graph_text_tokens'.*per_kv_head"):
        MosaicConfig(graph_text_tokens=8, selection_heads="per_kv_head")
    for kv_dtype in ("mxfp8", "nvfp4", "fp4_e2m1"):  # every quantized KV dtype SGLang offers, not only fp8*
        with pytest.raises(MosaicConfigError, match=f"--kv-cache-dtype {kv_dtype}: expected"):
            check_unsupported(SimpleNamespace(attention_backend="mosaic", kv_cache_dtype=kv_dtype))


@pytest.mark.parametrize("value", ["1", "true", "y"])
def test_sglangs_metadata_glue_graph_is_refused_as_sglang_reads_the_variable(monkeypatch, value):
    from types import SimpleNamespace

    from mosaic_sglang import MosaicConfig
    from mosaic_sglang.config import MosaicConfigError
    from mosaic_sglang.integration.launch_flags import check_graph_options

    args = SimpleNamespace(attention_backend="mosaic")
    monkeypatch.setenv("SGLANG_ENABLE_METADATA_GLUE_GRAPH", value)
    with pytest.raises(MosaicConfigError, match="SGLANG_ENABLE_METADATA_GLUE_GRAPH on"):
        check_graph_options(MosaicConfig(graph_text_tokens=256, selection_heads="shared"), args)
    check_graph_options(MosaicConfig(), args)  # eager decode: nothing is captured
    monkeypatch.setenv("SGLANG_ENABLE_METADATA_GLUE_GRAPH", "0")
    check_graph_options(MosaicConfig(graph_text_tokens=256, selection_heads="shared"), args)


def test_the_decode_graph_hook_keeps_sglangs_answer_for_other_backends_and_idle_batches():
    from types import SimpleNamespace

    from mosaic_sglang.integration.decode_graph_hook import can_run_graph_hook

    batch = SimpleNamespace(forward_mode=SimpleNamespace(is_decode=lambda: True), batch_size=3)
    other = SimpleNamespace(attn_backend=object(), capture_bs=[1, 2, 4])
    assert can_run_graph_hook(lambda runner, fb: True, other, batch) is True
    assert can_run_graph_hook(lambda runner, fb: False, other, batch) is False


def test_offload_is_refused_with_what_frees_or_copies_its_slots_behind_it():
    """Offload frees single slots and rewrites tree values in place: refused with paged KV, SGLang's
    hierarchical cache and its host-pool retraction backup (each names the field, expected and got)."""
    from types import SimpleNamespace

    from mosaic_sglang import MosaicConfig
    from mosaic_sglang.config import MosaicConfigError
    from mosaic_sglang.integration.launch_flags import check_offload, check_unsupported

    offload = MosaicConfig(host_store_tokens=1 << 14)
    plain = dict(attention_backend="mosaic", page_size=None)
    check_offload(offload, SimpleNamespace(**plain))
    check_offload(offload, SimpleNamespace(**{**plain, "page_size": 1}))
    for options, named in [({"page_size": 16}, "--page-size 16"),
                           ({"enable_hierarchical_cache": True}, "--enable-hierarchical-cache"),
                           ({"disaggregation_decode_retraction_backup": "host_pool"},
                            "--disaggregation-decode-retraction-backup host_pool")]:
        args = SimpleNamespace(**{**plain, **options})
        with pytest.raises(MosaicConfigError, match=f"'host_store_tokens': .*expected 0 with {named}.*got 16384"):
            check_offload(offload, args)
        check_offload(MosaicConfig(), args)  # no offload: nothing frees slots behind SGLang
    with pytest.raises(MosaicConfigError, match="--disaggregation-mode decode: expected no prefill/decode"):
        check_unsupported(SimpleNamespace(attention_backend="mosaic", disaggregation_mode="decode"))
    check_unsupported(SimpleNamespace(attention_backend="mosaic", disaggregation_mode="null"))
