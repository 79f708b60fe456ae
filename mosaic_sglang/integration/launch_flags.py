"""``--enable-mosaic``, ``--mosaic-budget``, ``--mosaic-config``: SGLang-style launch flags from a plugin.

Three hooks, installed by `mosaic_sglang.integration.plugin.register`:

* `add_mosaic_cli_args` (AFTER ``ServerArgs.add_cli_args``): the flags appear in ``--help``.
* `prepare_server_args_with_mosaic` (AROUND ``prepare_server_args``): strips the mosaic flags from
  argv, validates them (a bad value exits with status 2 and a message naming the key, what was expected
  and what was given, before any process starts), exports the config to the children and, with
  ``--enable-mosaic``, selects the mosaic attention and radix-cache backends (and turns on
  ``--enable-cache-report``, so OpenAI-API usage reports the cached prefix).
* `MosaicEngineArgs` (``Engine.server_args_class``): the same options as keyword arguments of
  ``sgl.Engine(enable_mosaic=True, mosaic_budget=..., mosaic_config=...)``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, List, Optional

from ..config import MosaicConfigError
from .options import MOSAIC_BACKEND, export_config, resolve_config, with_media_default

__all__ = [
    "add_mosaic_cli_args",
    "prepare_server_args_with_mosaic",
    "MosaicEngineArgs",
    "apply_mosaic_kwargs",
    "MOSAIC_KWARGS",
    "check_parallelism",
    "check_offload",
    "check_unsupported",
    "check_graph_options",
]

MOSAIC_KWARGS = ("enable_mosaic", "mosaic_budget", "mosaic_config")
_BACKEND_FLAGS = ("--attention-backend", "--radix-cache-backend")
_GRAPH_FLAGS = ("--disable-decode-cuda-graph", "--disable-prefill-cuda-graph")
_CACHE_REPORT_FLAG = "--enable-cache-report"
"""On with Mosaic: OpenAI-API responses then carry ``usage.prompt_tokens_details.cached_tokens`` (without
it a follow-up question on a cached video reports 0 cached tokens)."""


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Mosaic cluster KV cache (mosaic-sglang plugin)")
    group.add_argument(
        "--enable-mosaic",
        action="store_true",
        help="Serve with Mosaic: selects --attention-backend mosaic and --radix-cache-backend mosaic.",
    )
    group.add_argument(
        "--mosaic-budget",
        type=str,
        default=None,
        metavar="N",
        help="Attended cluster tokens per sequence per layer (per KV head with the default per-head lists), "
             "beyond sinks, recent window and text.",
    )
    group.add_argument(
        "--mosaic-config",
        type=str,
        default=None,
        metavar="JSON",
        help="Other Mosaic options as a JSON object, e.g. '{\"recent_window\": 64}'. Unknown keys are rejected.",
    )


def add_mosaic_cli_args(result: Any, parser: argparse.ArgumentParser) -> None:
    """AFTER hook on ``ServerArgs.add_cli_args(parser)``."""
    if not any(getattr(a, "dest", None) == "enable_mosaic" for a in parser._actions):
        _add_arguments(parser)


def _split_argv(argv: List[str]) -> tuple[argparse.Namespace, List[str]]:
    parser = argparse.ArgumentParser(add_help=False)
    _add_arguments(parser)
    return parser.parse_known_args(argv)


def _has_flag(argv: List[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def _flag_value(argv: List[str], flag: str) -> Optional[str]:
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def prepare_server_args_with_mosaic(original, argv: List[str]):
    """AROUND hook on ``prepare_server_args(argv)``."""
    if any(a in ("-h", "--help") for a in argv):
        return original(argv)
    mosaic, rest = _split_argv(list(argv))
    try:
        config = with_media_default(resolve_config(mosaic.mosaic_budget, mosaic.mosaic_config), server=True)
        _check_enabled(mosaic.enable_mosaic or _flag_value(rest, "--attention-backend") == MOSAIC_BACKEND,
                       budget=mosaic.mosaic_budget, config=mosaic.mosaic_config, style="flag")
    except MosaicConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if mosaic.enable_mosaic:
        for flag in _BACKEND_FLAGS:
            chosen = _flag_value(rest, flag)
            if chosen is None:
                rest += [flag, MOSAIC_BACKEND]
            elif chosen != MOSAIC_BACKEND:
                print(f"error: --enable-mosaic: expected {flag} {MOSAIC_BACKEND} or none, got {chosen!r}", file=sys.stderr)
                raise SystemExit(2)
    if _flag_value(rest, "--attention-backend") == MOSAIC_BACKEND:
        rest += [f for f in _graph_flags(config) if not _has_flag(rest, f)]
        if not _has_flag(rest, _CACHE_REPORT_FLAG):
            rest.append(_CACHE_REPORT_FLAG)  # follow-up turns show what the prefix cache served
    export_config(config)
    server_args = original(rest)
    try:
        check_parallelism(config, server_args)
        check_offload(config, server_args)
        check_unsupported(server_args)
        check_graph_options(config, server_args)
    except MosaicConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return server_args


def _graph_flags(config) -> tuple:
    """SGLang's CUDA graphs Mosaic turns off: prefill always; decode unless ``graph_text_tokens > 0``."""
    return _GRAPH_FLAGS if not config.graph_text_tokens else ("--disable-prefill-cuda-graph",)


def _check_enabled(enabled: bool, *, budget, config, style: str) -> None:
    """Mosaic options without Mosaic would be ignored silently: refuse them."""
    if enabled:
        return
    given = [name for name, value in (("budget", budget), ("config", config)) if value is not None]
    if given:
        names = [f"--mosaic-{n}" if style == "flag" else f"mosaic_{n}" for n in given]
        enable = "--enable-mosaic" if style == "flag" else "enable_mosaic=True"
        raise MosaicConfigError(f"{', '.join(names)} given without {enable}: expected {enable} with them, got "
                                "Mosaic options for a server that does not run Mosaic")


def check_unsupported(server_args) -> None:
    """Configurations Mosaic cannot serve correctly are refused at launch, not served wrong.

    Raises:
        MosaicConfigError: encode/language disaggregation (the encoder loads media in a process without
            Mosaic's media guard, before the tokenizer checks run); speculative decoding (a decode step of
            Mosaic attends one new token per request: draft and verify batches are not planned); DP attention
            (its gathered, padded batches and idle ranks are not planned; data parallelism by replicas,
            ``--dp-size`` without it, is served); prefill/decode disaggregation (the decode server would
            hold KV without its cluster index); a quantized KV cache.
    """
    if getattr(server_args, "attention_backend", None) != MOSAIC_BACKEND:
        return
    for name in ("language_only", "encoder_only"):
        if getattr(server_args, name, False):
            raise MosaicConfigError(f"--enable-mosaic with --{name.replace('_', '-')}: expected no encoder/language "
                                    "disaggregation (its encoder would load media outside Mosaic's media guard), "
                                    f"got {name}=True")
    algorithm = getattr(server_args, "speculative_algorithm", None)
    if algorithm:
        raise MosaicConfigError("--enable-mosaic with --speculative-algorithm: expected no speculative decoding "
                                "(Mosaic plans one new token per request per decode step), got "
                                f"speculative_algorithm={algorithm!r}")
    mode = getattr(server_args, "disaggregation_mode", "null") or "null"
    if mode != "null":
        raise MosaicConfigError(f"--enable-mosaic with --disaggregation-mode {mode}: expected no prefill/decode "
                                "disaggregation (a decode server would receive KV without the cluster index the "
                                f"prefill server built), got disaggregation_mode={mode!r}")
    if getattr(server_args, "enable_dp_attention", False):
        raise MosaicConfigError("--enable-mosaic with --enable-dp-attention: expected DP attention off (its "
                                "gathered, padded batches are not planned; --dp-size replicas are served), got "
                                "enable_dp_attention=True")
    kv_dtype = str(getattr(server_args, "kv_cache_dtype", "auto") or "auto")
    if kv_dtype.startswith(("fp8", "fp4", "mxfp8", "nvfp4")):
        raise MosaicConfigError(f"--enable-mosaic with --kv-cache-dtype {kv_dtype}: expected K/V in the model's "
                                f"dtype ('auto'; Mosaic's attention and cluster summaries read it as is), got {kv_dtype!r}")


def check_graph_options(config, server_args) -> None:
    """Captured decode steps (``graph_text_tokens > 0``) assume SGLang's plain decode graph runner: one
    attention backend, one replay metadata call per step after ``can_run_graph`` (`decode_graph_hook`).

    Raises:
        MosaicConfigError: with ``graph_text_tokens > 0``: two-batch overlap or PD multiplexing (the runner
            replays through other backend objects), SGLang's metadata glue graph (it captures the host-side
            metadata call). (Per-KV-head selection with it is refused by `MosaicConfig`.)
    """
    if not config.graph_text_tokens or getattr(server_args, "attention_backend", None) != MOSAIC_BACKEND:
        return
    for name in ("enable_two_batch_overlap", "enable_pdmux"):
        if getattr(server_args, name, False):
            raise MosaicConfigError(f"mosaic config field 'graph_text_tokens': expected 0 with --"
                                    f"{name.replace('_', '-')} (its graphs replay through other attention backends), "
                                    f"got {config.graph_text_tokens}")
    from sglang.srt.environ import envs

    if envs.SGLANG_ENABLE_METADATA_GLUE_GRAPH.get():  # SGLang's own parsing of the variable
        raise MosaicConfigError("mosaic config field 'graph_text_tokens': expected 0 with "
                                "SGLANG_ENABLE_METADATA_GLUE_GRAPH on (it captures the host-side planning of a step), "
                                f"got {config.graph_text_tokens}")


def check_parallelism(config, server_args) -> None:
    """Offload is per scheduler process. Under tensor parallelism the ranks take identical cluster
    decisions (every rank's cluster logic sees all heads, `tensor_parallel.py`), so their radix trees stay
    in lock-step and offload is allowed. Pipeline parallelism splits the *layers*: a rank could not
    score the layers it does not hold, so offload stays refused there.

    Per-KV-head selection is served under tensor parallelism the same way: every rank chooses the lists of
    all KV heads and attends its own heads' block of them (`attention_backend.MosaicAttnBackend._own_heads`).

    Raises:
        MosaicConfigError: ``host_store_tokens > 0`` with ``pp_size > 1``.
    """
    if not config.host_store_tokens:
        return
    value = getattr(server_args, "pp_size", 1) or 1
    if value > 1:
        raise MosaicConfigError(
            f"mosaic config field 'host_store_tokens': offload needs pp_size == 1 (each pipeline stage holds "
            f"other layers), expected 0 with pp_size={value}, got {config.host_store_tokens}"
        )


def check_offload(config, server_args) -> None:
    """Offload (``host_store_tokens > 0``) frees single KV slots of cached prefixes and rewrites their tree
    values to host encodings in place. Refused with what that breaks:

    Raises:
        MosaicConfigError: ``--page-size`` above 1 (SGLang's paged allocator frees whole pages: the
            neighbours of an offloaded token would be freed while live); ``--enable-hierarchical-cache`` or
            ``--disaggregation-decode-retraction-backup host_pool`` (SGLang's write-through copies a node's
            slots to its own host pool later, from the node's value: it would read freed slots).
    """
    if not config.host_store_tokens or getattr(server_args, "attention_backend", None) != MOSAIC_BACKEND:
        return
    got = config.host_store_tokens
    page_size = getattr(server_args, "page_size", None)
    if page_size not in (None, 1):
        raise MosaicConfigError(f"mosaic config field 'host_store_tokens': offload frees single KV slots, expected 0 "
                                f"with --page-size {page_size} (or --page-size 1), got {got}")
    if getattr(server_args, "enable_hierarchical_cache", False):
        raise MosaicConfigError("mosaic config field 'host_store_tokens': expected 0 with --enable-hierarchical-cache "
                                f"(SGLang's write-through would copy slots Mosaic offloaded and freed), got {got}")
    if getattr(server_args, "disaggregation_decode_retraction_backup", None) == "host_pool":
        raise MosaicConfigError("mosaic config field 'host_store_tokens': expected 0 with "
                                "--disaggregation-decode-retraction-backup host_pool (a HiCache host pool copies "
                                f"slots Mosaic offloaded and freed), got {got}")


def apply_mosaic_kwargs(kwargs: dict) -> dict:
    """Engine keyword arguments with the mosaic ones consumed (validated, exported, translated).

    Raises:
        MosaicConfigError: a bad ``mosaic_budget`` / ``mosaic_config``.
        ValueError: ``enable_mosaic`` together with another attention or radix-cache backend.
    """
    return _consume_mosaic_kwargs(kwargs)[0]


def _consume_mosaic_kwargs(kwargs: dict):
    """`apply_mosaic_kwargs`, also returning the resolved `MosaicConfig`."""
    kwargs = dict(kwargs)
    enable = bool(kwargs.pop("enable_mosaic", False))
    budget, options = kwargs.pop("mosaic_budget", None), kwargs.pop("mosaic_config", None)
    config = with_media_default(resolve_config(budget, options), server=False)
    _check_enabled(enable or kwargs.get("attention_backend") == MOSAIC_BACKEND, budget=budget, config=options,
                   style="kwarg")
    if enable:
        for key in ("attention_backend", "radix_cache_backend"):
            chosen = kwargs.get(key)
            if chosen not in (None, MOSAIC_BACKEND):
                raise ValueError(f"enable_mosaic=True: expected {key}={MOSAIC_BACKEND!r} or unset, got {chosen!r}")
            kwargs[key] = MOSAIC_BACKEND
    if kwargs.get("attention_backend") == MOSAIC_BACKEND:
        if not config.graph_text_tokens:  # decode graphs only for Mosaic steps that fit (decode_graphs.py)
            kwargs.setdefault("disable_decode_cuda_graph", True)
        kwargs.setdefault("disable_prefill_cuda_graph", True)
        kwargs.setdefault("enable_cache_report", True)
    export_config(config)
    return kwargs, config


class MosaicEngineArgs:
    """Stands in for ``Engine.server_args_class``: ``MosaicEngineArgs(**kwargs)`` returns a plain
    ``ServerArgs`` built from ``kwargs`` after the mosaic keyword arguments were consumed."""

    def __new__(cls, **kwargs):
        from sglang.srt.server_args import ServerArgs

        kwargs, config = _consume_mosaic_kwargs(kwargs)
        server_args = ServerArgs(**kwargs)
        check_parallelism(config, server_args)
        check_offload(config, server_args)
        check_unsupported(server_args)
        check_graph_options(config, server_args)
        return server_args
